"""A Hugging Face checkpoint folder: checked for safety and completeness, then loaded as the reference."""

import json
import shutil
from pathlib import Path

from ..errors import CorruptModelError, UnknownModelError
from ..families import family_of



def _inside(folder: Path, name: str) -> Path:
    """folder/name, refusing names that escape the folder (absolute paths, '..', links out)."""
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise CorruptModelError(f"{folder}: file reference {name!r} escapes the model folder")
    return path


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (from its index if sharded). Pickled weights are refused."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as e:
            raise CorruptModelError(f"{index}: not a valid safetensors index ({e})") from None
        files = [_inside(folder, n) for n in names]
    else:
        files = [_inside(folder, "model.safetensors")]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
            raise CorruptModelError(f"{folder}: only pickled weights (.bin/.pt) found; luodi never unpickles "
                                    "files; convert them to safetensors first")
        raise CorruptModelError(f"{folder}: missing weight file(s) {', '.join(missing)}")
    return files


def read_config(folder: Path) -> dict:
    """config.json of a checkpoint folder, with its architecture checked against the supported families."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise UnknownModelError(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        raise CorruptModelError(f"{path}: not valid JSON ({e})") from None
    family_of(config.get("model_type", "<missing model_type>"))
    if not (folder / "tokenizer.json").is_file():
        raise CorruptModelError(f"{folder}: no tokenizer.json (luodi needs a fast tokenizer file)")
    return config


def quiet_transformers() -> None:
    """Turn off transformers' per-call progress bars (loading a small checkpoint takes well under a second)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_reference(folder: Path):
    """The transformers model of a checkpoint folder in fp32, eval mode, from local safetensors only."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    read_config(folder)
    weight_files(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True,
                                                     local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CorruptModelError(f"{folder}: cannot load the checkpoint ({str(e).splitlines()[0]})") from None
    return model.eval()


def load_reference_tokenizer(folder: Path):
    """The transformers tokenizer of a checkpoint folder (the reference luodi's own tokenizer must match)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def save_tokenizer_files(folder: Path, out_dir: Path) -> list[str]:
    """Write the tokenizer exactly as transformers builds it for this model, plus generation_config.json.

    transformers may rebuild parts of a tokenizer from its model-specific class (Qwen2's pre-tokenizer,
    for one) rather than take tokenizer.json as it is; saving its tokenizer back captures what it really
    does, so luodi's transformers-free tokenizer encodes identically. Returns the file names written.
    """
    before = {p.name for p in Path(out_dir).iterdir()}
    load_reference_tokenizer(folder).save_pretrained(out_dir)
    generation = Path(folder) / "generation_config.json"
    if generation.is_file():
        shutil.copyfile(generation, Path(out_dir) / generation.name)
    return sorted({p.name for p in Path(out_dir).iterdir()} - before)


def generation_defaults(hf_dir: Path, tokenizer_eos: int | None) -> dict:
    """The ids that end and pad a generation, from generation_config.json (else the tokenizer's EOS)."""
    gen_path = Path(hf_dir) / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    eos = gen.get("eos_token_id", tokenizer_eos)
    eos_ids = sorted({e for e in (eos if isinstance(eos, list) else [eos]) if e is not None})
    pad = gen.get("pad_token_id")
    return {"eos_token_ids": eos_ids, "pad_token_id": pad if pad is not None else (eos_ids or [0])[0],
            "bos_token_id": gen.get("bos_token_id")}
