"""Is an export's parity check reproducible? Run it several times, each in a fresh process as each `luodi
export` is, while other processes spin on the CPUs, on all the CPUs this process may use and on one of them by
turns (a process's CPUs decide its thread counts, which decide the order of its sums), and report each run's max
|logit diff| and the digest of both sides' logits.

    python -m luodi.targets.parity_runs EXPORT_DIR [--runs 5] [--load 2] [--model MODEL]

exits 1 when the runs differ in a single bit.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from ..contract import Manifest
from ..errors import LuodiError

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def competing_load(processes: int, seconds: float = 900.0):
    """`processes` Python processes spinning on the CPUs inside the block (each stops by itself after `seconds`,
    and is ended when the block ends); yields them."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)]) for _ in range(processes)]
    try:
        yield spinners
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def model_argument(manifest: Manifest) -> str:
    """The model an export was made from, as `luodi export` takes it: its folder or GGUF path, or registry name."""
    source = manifest.source
    return source.origin if source.kind in ("hf", "gguf") else source.name


def run_once(folder: Path, model: str | None = None) -> dict:
    """The export's parity check, in this process, against the transformers model `model` (default: the one the
    manifest names) resolves to, which must be the checkpoint the export was made from."""
    from ..loaders import resolve
    from ..loaders.hf_folder import load_reference
    from ..manifest import read_manifest
    from . import get_target
    from .parity import check_parity, parity_reference

    manifest = read_manifest(folder)
    source = resolve(model or model_argument(manifest))
    if source.sha256 != manifest.source.sha256:
        raise LuodiError(f"{model or source.name} is not the checkpoint {folder} was exported from")
    target = get_target(manifest.target)
    settings = target.settings(manifest.precision, None, None)
    return check_parity(Path(folder), manifest, parity_reference(load_reference(source.hf_dir), manifest.spec), target,
                        settings)


def cpu_sets(runs: int) -> list[set[int] | None]:
    """The CPUs each run may use: all this process may use and the first of them by turns (all only, where there
    is one CPU or no way to restrict a process to some)."""
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        return [None] * runs
    every = os.sched_getaffinity(0)
    return [every if i % 2 == 0 else {min(every)} for i in range(runs)]


def run_in_process(folder: Path, model: str | None, cpus: set[int] | None) -> dict:
    """run_once in a fresh Python process (running this same luodi) on `cpus` (None: on this process's CPUs)."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    module = __spec__.name  # not __name__, which is __main__ under python -m
    command = [sys.executable, "-m", module, str(folder), "--once", *(["--model", model] if model else []),
               *(["--cpus", ",".join(map(str, sorted(cpus)))] if cpus else [])]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise LuodiError(f"the parity run failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parity_runs(folder: Path, runs: int = 5, load: int = 2, model: str | None = None) -> list[dict]:
    """`runs` parity checks of the export in `folder`, each in a fresh process, under `load` spinning processes,
    on the CPU sets of cpu_sets(); each run's parity result and the CPUs it had."""
    results = []
    with competing_load(load):
        for cpus in cpu_sets(runs):
            results.append({**run_in_process(folder, model, cpus), "cpus": sorted(cpus) if cpus else "all"})
    return results


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module's docstring); `--once` is one run, printed as JSON (run_in_process)."""
    parser = argparse.ArgumentParser(prog="python -m luodi.targets.parity_runs", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="an export folder")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--load", type=int, default=2, help="spinning processes competing for the CPUs")
    parser.add_argument("--model", help="the model it was exported from (default: the manifest's source)")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpus", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.once:
        if args.cpus:  # before torch or OpenVINO count the CPUs
            os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        print(json.dumps(run_once(args.folder, args.model)))
        return 0
    try:
        results = parity_runs(args.folder, args.runs, args.load, args.model)
    except LuodiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i, r in enumerate(results, 1):
        print(f"run {i}: max |logit diff| {r['max_abs_diff']:.6e}  logits {r['logits_sha256']}  cpus {r['cpus']}")
    identical = len({(r["max_abs_diff"], r["logits_sha256"]) for r in results}) == 1
    print("bit-identical across runs" if identical else "the runs differ")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
