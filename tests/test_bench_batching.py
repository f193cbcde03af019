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
