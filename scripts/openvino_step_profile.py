"""Time an OpenVINO IR's decode steps and prefill in a plain loop, with the CPU plugin's per-op split.

Runs a stateful IR (a luodi export's or optimum-intel's) without any pipeline around it: a prompt of
--prompt-tokens ids, then --steps one-token steps, three times; prints the median step and prefill times and,
from the last pass, milliseconds per step by (op type, kernel) from PERF_COUNT. Compile properties are the
plugin's defaults plus --threads and any --property KEY=VALUE (e.g. INFERENCE_PRECISION_HINT=f32).
usage: python scripts/openvino_step_profile.py MODEL.xml [--property KEY=VALUE ...] [--steps 64]
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

    prefills, steps, split = [], [], collections.Counter()
    for _ in range(3):
        request.reset_state()
        started = time.perf_counter()
        request.infer(feeds(list(range(100, 100 + args.prompt_tokens)), 0))
        prefills.append(time.perf_counter() - started)
        split.clear()
        for i in range(args.steps):
            started = time.perf_counter()
            request.infer(feeds([200 + i], args.prompt_tokens + i))
            steps.append(time.perf_counter() - started)
            for info in request.profiling_info:
                split[(info.node_type, info.exec_type)] += info.real_time.total_seconds()
    print(f"prefill of {args.prompt_tokens}: {1e3 * statistics.median(prefills):.1f} ms; "
          f"decode step: {1e3 * statistics.median(steps):.2f} ms (medians)")
    total = sum(split.values())
    for (node, kernel), seconds in split.most_common(8):
        print(f"  {node:40s} {kernel:28s} {1e3 * seconds / args.steps:7.3f} ms/step {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
    main()
