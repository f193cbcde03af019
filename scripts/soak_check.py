"""One loaded model under server-like use: generate from 4 threads at once (compared with serial calls), then
RSS over 1,000 short generations after a warm-up.

usage: python scripts/soak_check.py BUNDLE_OR_EXPORT [--threads 2]
"""

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import luodi

PROMPTS = ["Name three rivers in Europe.", "What is 12 times 7?", "Write a haiku about snow.",
           "Give one tip for sleeping well."]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    lm = luodi.load(args.model, threads=args.threads)
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    start = time.perf_counter()
    serial = [lm.generate(c, max_new_tokens=32).token_ids for c in chats]
    serial_s = time.perf_counter() - start
    with ThreadPoolExecutor(4) as pool:
        start = time.perf_counter()
        threaded = list(pool.map(lambda c: lm.generate(c, max_new_tokens=32).token_ids, chats))
        threaded_s = time.perf_counter() - start
    print(f"4 threads identical to serial: {threaded == serial} (serial {serial_s:.2f} s, threads {threaded_s:.2f} s)")
    for i in range(100):
        lm.generate(PROMPTS[i % 4], max_new_tokens=4)
    base, growth = _rss_mib(), []
    for i in range(1000):
        lm.generate(PROMPTS[i % 4], max_new_tokens=4)
        if i % 200 == 199:
            growth.append(round(_rss_mib() - base, 1))
    print(f"RSS after warm-up {base:.1f} MiB; growth after 200, 400, ... 1000 generations (MiB): {growth}")


if __name__ == "__main__":
    main()
