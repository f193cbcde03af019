"""`luodi bench --concurrency C` and `--n N` on tiny-llama: the JSON keys the lead's measurements read, and the
numbers' consistency (not their size: timings on a shared machine mean nothing)."""

import json

import pytest

from luodi.cli import main


def test_bench_concurrency_json(export_dir, capsys):
    folder = str(export_dir("tiny-llama"))
    assert main(["bench", folder, "--prompt", "hello there", "--new-tokens", "6", "--ignore-eos", "--repeat", "1",
                 "--concurrency", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["concurrency"] == 3 and report["ids_identical_to_single"] is True
    assert report["aggregate_decode_tokens_per_s"] > 0 and len(report["per_request_decode_tokens_per_s"]) == 3
    assert set(report["ttft_s"]) == {"p50", "p90", "p99"} and report["ttft_s"]["p50"] <= report["ttft_s"]["p99"]
    assert report["speedup_vs_one"] == report["aggregate_decode_tokens_per_s"] / report["single_decode_tokens_per_s"]
    pool = report["kv_pool"]
    assert pool["peak_rows"] == 3 and pool["peak_positions_in_use"] == 3 * (report["prompt_tokens"] + 6 - 1)
    assert report["single_kv_pool"]["peak_rows"] == 1


def test_bench_kv_pool_positions_queues_what_does_not_fit(export_dir, capsys):
    """A pool of room for two of three requests runs two at once, then the third; ids stay those of one alone."""
    folder = str(export_dir("tiny-llama"))
    args = ["bench", folder, "--prompt", "hello there", "--new-tokens", "6", "--ignore-eos", "--repeat", "1",
            "--concurrency", "3", "--json"]
    assert main(args) == 0
    need = json.loads(capsys.readouterr().out)["prompt_tokens"] + 6
    assert main(args + ["--kv-pool-positions", str(2 * need)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kv_pool"]["peak_rows"] == 2 and report["kv_pool"]["kv_positions_budget"] == 2 * need
    assert report["ids_identical_to_single"] is True and len(report["per_request_decode_tokens_per_s"]) == 3
    assert main(["bench", folder, "--prompt", "hi", "--kv-pool-positions", "64"]) == 1
    assert "--kv-pool-positions sizes the pool of --concurrency" in capsys.readouterr().err


def test_bench_shared_prompt_json(export_dir, capsys):
    folder = str(export_dir("tiny-llama"))
    assert main(["bench", folder, "--prompt-tokens", "40", "--new-tokens", "4", "--ignore-eos", "--repeat", "1",
                 "--n", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3 and report["prompt_tokens"] == 40
    assert report["total_ratio"] == report["shared_total_s"] / report["separate_total_s"]
    assert report["ttft_ratio"] == report["shared_ttft_s"] / report["single_ttft_s"]
    with pytest.raises(SystemExit):
        main(["bench", folder, "--n", "2", "--concurrency", "2"])
    assert "not allowed with" in capsys.readouterr().err


def test_answers_reports_each_kind_of_accuracy(export_dir, tmp_path, capsys):
    """Accuracies are the shares of questions each kind answered right (by the default extractor)."""
    questions = tmp_path / "q.yaml"
    questions.write_text('instruction: "Reply with a number."\nquestions:\n  - {question: "1 + 1?", answer: 2}\n'
                         '  - {question: "2 + 3?", answer: 5}\n')
    folder = str(export_dir("tiny-llama"))
    assert main(["answers", folder, "--questions", str(questions), "--samples", "3", "--max-new-tokens", "6",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["questions"]
    assert [r["expected"] for r in rows] == ["2", "5"] and all(sum(r["votes"].values()) <= 3 for r in rows)
    for kind in ("greedy", "vote", "best_of"):
        assert report[f"{kind}_accuracy"] == sum(r[kind] == r["expected"] for r in rows) / 2
    questions.write_text("questions: [1, 2]\n")
    assert main(["answers", folder, "--questions", str(questions)]) == 1
    assert "needs a 'questions' list" in capsys.readouterr().err
