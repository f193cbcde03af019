"""The loaded wrapper as a server uses it: one model, generate calls from several threads at once (results
identical to serial calls, greedy and seeded sampling), and flat memory over 1,000 short generations."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

import luodi

PROMPTS = ["The river rose overnight and", "Once upon a time", "In the morning the market",
           "She opened the letter and", "A list of fruits: apples,", "The engine started with"]
REQUESTS = [(p, {"max_new_tokens": 10, "ignore_eos": True}) for p in PROMPTS] + [
    (p, {"max_new_tokens": 10, "ignore_eos": True, "do_sample": True, "temperature": 0.8, "top_p": 0.9, "seed": i})
    for i, p in enumerate(PROMPTS)]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("target", ["ort", "openvino"])
def test_threads_get_the_serial_results(export_dir, target):
    lm = luodi.load(export_dir("tiny-llama", target), threads=1)
    serial = [lm.generate(p, **kw).token_ids for p, kw in REQUESTS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            parallel = list(pool.map(lambda r: lm.generate(r[0], **r[1]).token_ids, REQUESTS))
            assert parallel == serial


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_memory_stays_flat_over_1000_generations(export_dir):
    lm = luodi.load(export_dir("tiny-llama"), threads=1)
    for i in range(200):  # warm-up: allocator pools and ORT's arenas reach their working size
        lm.generate(PROMPTS[i % len(PROMPTS)], max_new_tokens=4)
    before = _rss_bytes()
    for i in range(1000):
        lm.generate(PROMPTS[i % len(PROMPTS)], max_new_tokens=4)
    growth = _rss_bytes() - before
    assert growth < 8 << 20, f"RSS grew {growth / 2**20:.1f} MiB over 1,000 generations"
