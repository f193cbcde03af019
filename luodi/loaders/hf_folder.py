"""A Hugging Face checkpoint folder: checked for safety and completeness, then loaded as the reference."""

import json
import math
import os
import shutil
import stat
from pathlib import Path

from ..contract.manifest import Generation
from ..errors import CorruptModelError, UnknownModelError, UnsupportedArchitectureError, one_line
from ..families import family_of
from ..tokenizer import Tokenizer
from .safetensors_header import check_safetensors


INDEX = "model.safetensors.index.json"


def _regular_file(path: Path) -> Path:
    """path if it is a regular file itself: a link or anything else (folder, pipe, device) is refused unopened."""
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise CorruptModelError(f"{path}: a link; luodi reads weights only from regular files in the model folder")
    if not stat.S_ISREG(mode):
        raise CorruptModelError(f"{path}: not a regular file")
    return path


def _check_name(index: Path, name) -> str:
    """A weight file name from an index: a plain .safetensors file name in the folder (no path, no other format)."""
    if not (isinstance(name, str) and name.endswith(".safetensors") and name == Path(name).name and "\\" not in name):
        raise CorruptModelError(f"{index}: refers to {name!r}; luodi reads only .safetensors files directly in the "
                                "model folder (never pickled .bin/.pt files, never paths)")
    return name


def _index_names(index: Path) -> list[str]:
    """The weight file names a sharded checkpoint's index lists, each name checked before any file is opened."""
    try:
        weight_map = json.loads(_regular_file(index).read_text(encoding="utf-8")).get("weight_map")
    except (ValueError, AttributeError) as e:
        raise CorruptModelError(f"{index}: not a valid safetensors index ({e})") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptModelError(f"{index}: not a valid safetensors index (no weight_map object)")
    return sorted({_check_name(index, name) for name in weight_map.values()})


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (from its index if sharded), every header checked.

    Only regular .safetensors files directly in the folder are ever opened: pickled weights, paths, links and
    anything that is not a regular file are refused first."""
    folder = Path(folder)
    index = folder / INDEX
    names = _index_names(index) if os.path.lexists(index) else ["model.safetensors"]
    missing = [name for name in names if not os.path.lexists(folder / name)]
    if missing:
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
            raise CorruptModelError(f"{folder}: only pickled weights (.bin/.pt) found; luodi never unpickles "
                                    "files; convert them to safetensors first")
        raise CorruptModelError(f"{folder}: missing weight file(s) {', '.join(missing)}")
    files = [_regular_file(folder / name) for name in names]
    for path in files:
        check_safetensors(path)
    return files


def read_config(folder: Path) -> dict:
    """config.json of a checkpoint folder, with its architecture checked against the supported families."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise UnknownModelError(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CorruptModelError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CorruptModelError(f"{path}: not a JSON object")
    family_of(str(config.get("model_type", "<missing model_type>")))
    if "quantization_config" in config:
        raise UnsupportedArchitectureError(f"{path}: a pre-quantized checkpoint (quantization_config); luodi exports "
                                           "full-precision weights and quantizes them itself")
    if not (folder / "tokenizer.json").is_file():
        raise CorruptModelError(f"{folder}: no tokenizer.json (luodi needs a fast tokenizer file)")
    Tokenizer(folder)  # readable, before any work starts
    return config


def quiet_transformers() -> None:
    """Turn off transformers' per-call progress bars (loading a small checkpoint takes well under a second)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _reference_config(folder: Path):
    """transformers' config of a checkpoint folder; its own validation errors become one CorruptModelError."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError, ArithmeticError, StrictDataclassError) as e:
        raise CorruptModelError(f"{folder / 'config.json'}: transformers refuses it ({one_line(e, 300)})") from None


def _check_weights_fit(folder: Path, model_class, config, files: list[Path]) -> None:
    """Refuse, before any weight is loaded, a config.json describing more parameters than the weight files hold:
    the model built from it would be partly random, and of any size. The layer count is checked first, so an
    absurd one never gets built (on the meta device: no memory)."""
    import torch

    shapes = [entry["shape"] for path in files for entry in check_safetensors(path).values()]
    held = sum(math.prod(shape) for shape in shapes)
    if config.num_hidden_layers <= len(shapes):
        with torch.device("meta"):
            if sum(p.numel() for p in model_class(config).parameters()) <= held:
                return
    raise CorruptModelError(f"{folder}: config.json describes a larger model than its weight files hold "
                            f"({len(shapes)} tensors, {held} values)")


def load_reference(folder: Path):
    """The transformers model of a checkpoint folder in fp32, eval mode.

    transformers gets the config and the tensors of the files weight_files() checked, never the folder, so it
    opens no file of its choosing (a pickled .bin, a file a config's transformers_weights names, ...); every
    weight the model has must come from those files."""
    import torch
    from safetensors.torch import load_file
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    quiet_transformers()
    read_config(folder)
    files = weight_files(folder)
    config = _reference_config(folder)
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    _check_weights_fit(folder, model_class, config, files)
    try:
        state = {name: tensor for path in files for name, tensor in load_file(path).items()}
        model, info = model_class.from_pretrained(None, config=config, state_dict=state, dtype=torch.float32,
                                                  output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CorruptModelError(f"{folder}: cannot load the checkpoint ({one_line(e, 300)})") from None
    unfit = sorted(info["missing_keys"]) + sorted(info["unexpected_keys"])
    if unfit:
        raise CorruptModelError(f"{folder}: the weights do not fit config.json ({len(unfit)} missing or unused, "
                                f"e.g. {', '.join(unfit[:3])})")
    return model.eval()


def load_reference_tokenizer(folder: Path):
    """The transformers tokenizer of a checkpoint folder (the reference luodi's own tokenizer must match)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise CorruptModelError(f"{folder}: transformers cannot read its tokenizer ({one_line(e, 300)})") from None


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


def generation_defaults(hf_dir: Path, tokenizer_eos: int | None) -> Generation:
    """The ids that end and pad a generation, from generation_config.json (else the tokenizer's EOS)."""
    gen_path = Path(hf_dir) / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    eos = gen.get("eos_token_id", tokenizer_eos)
    eos_ids = sorted({e for e in (eos if isinstance(eos, list) else [eos]) if e is not None})
    pad = gen.get("pad_token_id")
    return Generation(eos_ids, pad if pad is not None else (eos_ids or [0])[0], gen.get("bos_token_id"))
