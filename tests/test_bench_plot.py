"""`luodi bench --plot FILE.png` on tiny-llama: every kind of benchmark writes a PNG (and still prints its report);
bad paths are one-line errors that leave nothing behind."""

import json

import pytest

from luodi.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
SHORT = ["--new-tokens", "4", "--ignore-eos", "--repeat", "2", "--threads", "1"]


def _prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("Say hello.\nTell me about the history of computing machines in a few words, please.\n")
    return str(path)


@pytest.mark.parametrize("kind", ["one prompt", "prompts", "speculate", "concurrency", "n"])
def test_bench_plot_writes_a_png(export_dir, tmp_path, capsys, kind):
    folder = str(export_dir("tiny-llama"))
    args = {"one prompt": ["--prompt-tokens", "24"], "prompts": ["--prompts", _prompts(tmp_path)],
            "speculate": ["--prompts", _prompts(tmp_path), "--speculate", "lookup"],
            "concurrency": ["--prompt", "hello there", "--concurrency", "2"],
            "n": ["--prompt", "hello there", "--n", "2"]}[kind]
    plot = tmp_path / "chart.png"
    assert main(["bench", folder, *args, *SHORT, "--json", "--plot", str(plot)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed and all(report["backend"] == "ort" for report in printed)
    data = plot.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_bench_plot_bad_paths_are_one_line_errors(export_dir, tmp_path, capsys):
    folder = str(export_dir("tiny-llama"))
    (tmp_path / "file.txt").write_text("x")
    for bad in (str(tmp_path / "chart.jpg"), str(tmp_path / "file.txt" / "chart.png"), str(tmp_path)):
        with pytest.raises(SystemExit) as e:
            main(["bench", folder, "--prompt", "hi", *SHORT, "--plot", bad])
        assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    missing = tmp_path / "no" / "such" / "chart.png"  # its folders do not exist: the write fails, in one line
    assert main(["bench", folder, "--prompt", "hi", *SHORT, "--plot", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "luodi: error:" in err and not missing.exists()
