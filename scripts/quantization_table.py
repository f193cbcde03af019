"""The table in docs/QUANTIZATION.md: size, decode tokens/s, TTFT and perplexity of SmolLM2-135M at each
precision/method on ONNX Runtime and OpenVINO (2 threads, the anchor kit's W1 workload, medians of 5).

Usage: python scripts/quantization_table.py [--text FILE] [--calib FILE] [--only NAME,...] [--threads 2]
Exports go to build/<model>-<name> and are reused when their manifest exists (delete a folder to redo it).
Each bench and eval runs in its own process (peak RSS is per process). Prints a Markdown table.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

MODEL = "smollm2-135m"
# name: (target, export flags)
CONFIGS = {
    "ort": ("ort", []),
    "ort-int8": ("ort", ["--precision", "int8"]),
    "ort-int4": ("ort", ["--precision", "int4"]),
    "ort-int4-g64": ("ort", ["--precision", "int4", "--group-size", "64"]),  # 128 does not divide 576
    "ort-int8-minmax": ("ort", ["--precision", "int8", "--method", "minmax"]),
    "ort-int4-minmax": ("ort", ["--precision", "int4", "--method", "minmax"]),
    "ort-int4-minmax-g64": ("ort", ["--precision", "int4", "--method", "minmax", "--group-size", "64"]),
    "ort-int4-minmax-keephead": ("ort", ["--precision", "int4", "--method", "minmax", "--keep", "lm_head"]),
    "ort-int4-minmax-mixed118": ("ort", ["--precision", "int4", "--method", "minmax", "--size-budget", "118",
                                         "--calib", "{calib}"]),
    "ort-int4-hqq": ("ort", ["--precision", "int4", "--method", "hqq"]),
    "ort-int4-gptq": ("ort", ["--precision", "int4", "--method", "gptq", "--calib", "{calib}"]),
    "ort-int4-keephead": ("ort", ["--precision", "int4", "--keep", "lm_head"]),
    "ort-int4-awq": ("ort", ["--precision", "int4", "--method", "awq", "--calib", "{calib}"]),
    "ort-int4-mixed135": ("ort", ["--precision", "int4", "--size-budget", "135", "--calib", "{calib}"]),
    "openvino": ("openvino", []),
    "openvino-int8": ("openvino", ["--precision", "int8"]),
    "openvino-int4": ("openvino", ["--precision", "int4"]),
    "openvino-int4-awq": ("openvino", ["--precision", "int4", "--method", "awq", "--calib", "{calib}"]),
    "openvino-int4-gptq": ("openvino", ["--precision", "int4", "--method", "gptq", "--calib", "{calib}"]),
}


def _luodi(*args) -> dict:
    out = subprocess.run([sys.executable, "-m", "luodi", *args, "--json"], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"luodi {' '.join(args)} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", default="/usr/share/common-licenses/Apache-2.0", help="perplexity text")
    ap.add_argument("--calib", default="/usr/share/common-licenses/LGPL-2.1", help="calibration (gptq, awq, mixed)")
    ap.add_argument("--only", help="comma-separated config names (default all)")
    ap.add_argument("--threads", default="2")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(CONFIGS)
    reference = Path("build") / f"{MODEL}-ort"
    rows = []
    for name in names:
        target, flags = CONFIGS[name]
        folder = Path("build") / f"{MODEL}-{name}"
        if not (folder / "manifest.json").is_file():
            flags = [f.format(calib=args.calib) for f in flags]
            _luodi("export", MODEL, "--target", target, "--out", str(folder), *flags)
        manifest = json.loads((folder / "manifest.json").read_text())
        size = sum(f["bytes"] for n, f in manifest["files"].items() if n.startswith(("model.onnx", "openvino_model")))
        bench = _luodi("bench", str(folder), "--workload", "W1", "--repeat", "5", "--threads", args.threads)
        quality = _luodi("eval", str(folder), "--text", args.text, "--max-tokens", "1024", "--threads", args.threads,
                         "--reference", str(reference))
        rows.append((name, size / 1e6, bench["decode_tokens_per_s"], bench["ttft_s"] * 1e3, bench["peak_rss_mb"],
                     quality["perplexity"], quality["top1_agreement"]))
        print(f"done {name}", file=sys.stderr)
    base = next((r[5] for r in rows if r[0] == "ort"), None)
    print("| export | model files MB | decode tok/s | TTFT ms | peak RSS MB | perplexity | vs fp32 | top-1 agreement |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mb, tps, ttft, rss, ppl, agree in rows:
        delta = f"{(ppl / base - 1) * 100:+.1f}%" if base else "n/a"
        print(f"| {name} | {mb:.1f} | {tps:.1f} | {ttft:.0f} | {rss:.0f} | {ppl:.3f} | {delta} | {agree:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
