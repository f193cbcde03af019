"""Compare `luodi generate --json` greedy token ids with transformers' fp32 generate on prompts you give.

Usage: python scripts/greedy_vs_transformers.py EXPORT_DIR PROMPTS_FILE [--max-new-tokens N] [--chat] [--backend B]
PROMPTS_FILE holds one prompt per line. Prints one line per prompt and exits 1 if any differs.
"""

import argparse
import json
import subprocess
import sys

import torch

from luodi.loaders import resolve
from luodi.loaders.hf_folder import load_reference, load_reference_tokenizer
from luodi.manifest import read_manifest


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("prompts_file")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--chat", action="store_true")
    ap.add_argument("--backend", help="luodi generate --backend (e.g. ort for a trt export on a CPU-only machine)")
    args = ap.parse_args()
    source = resolve(read_manifest(args.export_dir)["source"]["name"])
    model, tok = load_reference(source.hf_dir), load_reference_tokenizer(source.hf_dir)
    prompts = [line.rstrip("\n") for line in open(args.prompts_file, encoding="utf-8") if line.strip()]
    failures = 0
    for prompt in prompts:
        cmd = [sys.executable, "-m", "luodi", "generate", args.export_dir, "--prompt", prompt,
               "--max-new-tokens", str(args.max_new_tokens), "--json"]
        cmd += (["--chat"] if args.chat else []) + (["--backend", args.backend] if args.backend else [])
        got = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)["token_ids"]
        if args.chat:
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                          tokenize=True, return_dict=True)["input_ids"]
        else:
            ids = tok(prompt)["input_ids"]
        ids = torch.tensor([list(ids)])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=args.max_new_tokens, pad_token_id=tok.pad_token_id)
        want = out[0, ids.shape[1]:].tolist()
        same = got == want
        failures += not same
        print(f"{'identical' if same else 'DIFFERENT'}  {len(got):3d} vs {len(want):3d} tokens  {prompt[:60]!r}")
    print(f"{len(prompts) - failures}/{len(prompts)} prompts give identical greedy token ids")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
