"""Write a model equal in function to MODEL whose weights lie on no quantization grid.

    python scripts/off_grid_model.py smollm2-135m --out build/smollm2-rotated [--seed 0]

The residual stream is turned by a random orthogonal matrix (luodi/compress/rotation.py); the output is an
ordinary Hugging Face folder (fp32 safetensors, the tokenizer) that `luodi export`, `eval` and `bench` take.
It prints the largest logit difference from the original on a short text, and how far each model's weights
lie from the nearest 4-bit minmax grid in groups of 32 (0 for weights that came from a Q4_1 GGUF).
"""

import argparse
import sys
from pathlib import Path

import torch

from luodi.cli_checks import os_error_line
from luodi.compress.rotation import check_rotatable, rotate_residual
from luodi.compress.student import build_student
from luodi.errors import LuodiError
from luodi.fileio import atomic_folder
from luodi.loaders import resolve
from luodi.loaders.hf_folder import load_reference, read_config, save_tokenizer_files
from luodi.contract.quantization import DEFAULT_GROUP_SIZE
from luodi.tokenizer import Tokenizer

TOLERANCE = 1e-4  # largest logit difference allowed, relative to the largest logit (fp32 rounding is ~1e-6)
SAMPLE = "The quick brown fox jumps over the lazy dog, and then it runs into the forest to find its den."


def grid_error(weight: torch.Tensor, group: int = DEFAULT_GROUP_SIZE) -> float:
    """RMS distance of `weight` [out, in] from its 4-bit minmax grid (16 levels from each group's minimum to
    its maximum along the input), relative to the weight's RMS."""
    w = weight.double().reshape(weight.shape[0], -1, group)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    step = ((high - low) / 15).clamp_min(1e-30)
    snapped = low + torch.round((w - low) / step) * step
    return float((w - snapped).pow(2).mean().sqrt() / w.pow(2).mean().sqrt())


def _median_grid_error(state: dict) -> float:
    errors = [grid_error(t) for name, t in state.items() if t.ndim == 2 and "layers." in name
              and t.shape[1] % DEFAULT_GROUP_SIZE == 0]
    return float(torch.tensor(errors).median())


def _refuse_existing(path: Path) -> None:
    raise LuodiError(f"--out {path} appeared while this ran; give a new folder")


def main(argv=None) -> int:
    """Write the rotated model (exit 0), or print one line saying why not (exit 2)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model folder, .gguf or registry name (Llama family)")
    parser.add_argument("--out", type=Path, required=True, help="new folder to write (must not exist)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random rotation")
    args = parser.parse_args(argv)
    try:
        if args.out.exists() or args.out.is_symlink():
            raise LuodiError(f"--out {args.out} exists; give a new folder")
        source = resolve(args.model)
        check_rotatable(read_config(source.hf_dir))  # before the weights are loaded
        model = load_reference(source.hf_dir)
        state = {name: t.detach() for name, t in model.state_dict().items()}
        config, rotated_state = rotate_residual(model.config.to_dict(), state, args.seed)
        rotated = build_student(config, rotated_state)
        ids = torch.tensor([Tokenizer(source.hf_dir).encode(SAMPLE)])
        with torch.no_grad():
            expected = model(ids).logits
            diff = (expected - rotated(ids).logits).abs().max().item()
        if diff > TOLERANCE * expected.abs().max().item():
            raise LuodiError(f"the rotated model's logits differ from the original's by {diff:.3g}; nothing written")
        with atomic_folder(args.out, check=_refuse_existing) as tmp:
            rotated.save_pretrained(tmp)
            save_tokenizer_files(source.hf_dir, tmp)
    except LuodiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: max |logit difference| {diff:.2e} on a {ids.shape[1]}-token text; median distance "
          f"from the 4-bit grid (g{DEFAULT_GROUP_SIZE}): original {_median_grid_error(state):.4f}, rotated "
          f"{_median_grid_error(rotated_state):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
