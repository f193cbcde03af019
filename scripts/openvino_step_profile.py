"""Time an OpenVINO IR's decode steps and prefill in a plain loop, with the CPU plugin's per-op split.

Runs a stateful IR (a luodi export's or optimum-intel's) without any pipeline around it: a prompt of
--prompt-tokens ids four times (the first a warm-up), then on another infer request the prompt and --steps
one-token steps, three times; prints the median prefill and step times and, from the last of each,
milliseconds by (op type, kernel) from PERF_COUNT. Two IRs whose splits match run the same kernels (luodi's
and optimum-intel's): what is left to a runtime around them. Compile properties are the plugin's defaults
plus --threads and any --property KEY=VALUE (e.g. INFERENCE_PRECISION_HINT=f32).
usage: python scripts/openvino_step_profile.py MODEL.xml [--property KEY=VALUE ...] [--steps 64]
[--prompt-tokens 37]
"""

import argparse
import collections
import statistics
import time

import numpy as np
import openvino as ov


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("xml")
    parser.add_argument("--property", action="append", default=[], help="KEY=VALUE compile property")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=37)
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    options = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads, "PERF_COUNT": True}
    options |= dict(item.split("=", 1) for item in args.property)
    compiled = ov.Core().compile_model(args.xml, "CPU", options)
    names = {name for port in compiled.inputs for name in port.get_names()}
    request = compiled.create_infer_request()

    def feeds(ids: list[int], past: int) -> dict:
        full = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, past + len(ids)), np.int64),
                "position_ids": np.arange(past, past + len(ids), dtype=np.int64)[None],
                "beam_idx": np.zeros(1, np.int32)}
        return {k: v for k, v in full.items() if k in names}

    # the plugin's counters are only trustworthy for a run of one shape (after a step of another shape they
    # report a fraction of the time), so the prefill is split from prefills alone, on a request of its own
    prefills, prefill_split = [], collections.Counter()
    for _ in range(4):
        request.reset_state()
        started = time.perf_counter()
        request.infer(feeds(list(range(100, 100 + args.prompt_tokens)), 0))
        prefills.append(time.perf_counter() - started)
        prefill_split = _split(request.profiling_info)
    steps, split = [], collections.Counter()
    request = compiled.create_infer_request()
    for _ in range(3):
        request.reset_state()
        request.infer(feeds(list(range(100, 100 + args.prompt_tokens)), 0))
        split.clear()
        for i in range(args.steps):
            started = time.perf_counter()
            request.infer(feeds([200 + i], args.prompt_tokens + i))
            steps.append(time.perf_counter() - started)
            split.update(_split(request.profiling_info))
    prefill_ms, step_ms = 1e3 * statistics.median(prefills[1:]), 1e3 * statistics.median(steps)
    print(f"prefill of {args.prompt_tokens}: {prefill_ms:.1f} ms; decode step: {step_ms:.2f} ms (medians)")
    _print_split(f"prefill ({prefill_ms:.1f} ms)", prefill_split, 1, "ms")
    _print_split(f"decode step ({step_ms:.2f} ms)", split, args.steps, "ms/step")


def _split(profiling_info) -> collections.Counter:
    """Seconds by (op type, kernel) in one inference's PERF_COUNT records."""
    seconds = collections.Counter()
    for info in profiling_info:
        seconds[(info.node_type, info.exec_type)] += info.real_time.total_seconds()
    return seconds


def _print_split(title: str, split: collections.Counter, runs: int, unit: str) -> None:
    """The eight costliest (op type, kernel) pairs of a split, per run and as a share of its total."""
    total = sum(split.values())
    print(f"{title}, counters total {1e3 * total / runs:.2f} {unit}:")
    for (node, kernel), seconds in split.most_common(8):
        print(f"  {node:40s} {kernel:28s} {1e3 * seconds / runs:7.3f} {unit:7s} {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
    main()
