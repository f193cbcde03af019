"""GGUF files: validated, then dequantized once through transformers' GGUF loader into a cached fp32 folder."""

import logging
from pathlib import Path

from ..errors import CorruptModelError, UnsupportedArchitectureError
from ..fileio import atomic_folder, sha256_file
from ..paths import cache_dir

log = logging.getLogger(__name__)
# GGUF architecture names that transformers' GGUF loader maps onto a supported model_type
# (gemma3: the text model; the loader undoes llama.cpp's +1 on every Gemma norm weight, and fills the settings the
# file lacks, rope_local_base_freq, query_pre_attn_scalar and the 5:1 sliding/global layer pattern, with
# Gemma3TextConfig's defaults, which are Gemma 3's)
_GGUF_ARCHS = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "phi3": "phi3", "gpt2": "gpt2",
               "gemma3": "gemma3_text"}
# the ids a GGUF declares as ending a generation (llama.cpp stops on each); transformers' loader reads only the first
_END_OF_GENERATION = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")


def check_gguf(path: Path) -> str:
    """The GGUF's architecture; a clear error if the file is not a readable GGUF or not a supported family."""
    path = Path(path)
    if not path.is_file():
        raise CorruptModelError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise CorruptModelError(f"{path}: not a GGUF file (bad magic)")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
        expected = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    except Exception as e:  # gguf raises ValueError, IndexError, struct errors... on damaged files
        raise CorruptModelError(f"{path}: corrupt or truncated GGUF ({type(e).__name__}: {e})") from None
    if path.stat().st_size < expected:
        raise CorruptModelError(f"{path}: truncated GGUF ({path.stat().st_size} bytes, tensors need {expected})")
    if arch not in _GGUF_ARCHS:
        raise UnsupportedArchitectureError(
            f"{path}: unsupported GGUF architecture {arch!r}: luodi reads {', '.join(sorted(_GGUF_ARCHS))}")
    return arch


def end_of_generation_ids(path: Path) -> list[int]:
    """Every token id the GGUF declares as ending a generation: its EOS, end-of-turn and end-of-message ids."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    return sorted({int(fields[key].parts[-1][0]) for key in _END_OF_GENERATION if key in fields})


def convert_gguf(path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF into an fp32 Hugging Face folder (config, safetensors, tokenizer) at out_dir.

    transformers refuses save_pretrained() on a model loaded with gguf_file=, so the dequantized weights
    are copied into a plain model built from the same config and saved from there.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = Path(path)
    kw = {"gguf_file": path.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(path.parent, **kw)
    quantized = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True), **kw)
    cfg = quantized.config.to_dict()
    for key in ("quantization_config", "_name_or_path"):
        cfg.pop(key, None)
    config = AutoConfig.for_model(**cfg)
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    state = {k: v.float().contiguous() for k, v in quantized.state_dict().items()}
    _, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise CorruptModelError(f"{path}: GGUF tensors that do not fit the model: {unexpected[:5]}")
    model.tie_weights()
    model.generation_config = quantized.generation_config
    if len(eos := end_of_generation_ids(path)) > 1:
        model.generation_config.eos_token_id = eos
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def gguf_to_hf(path: Path) -> tuple[Path, str]:
    """The cached fp32 folder for a GGUF (converted on first use, keyed by the file's sha256) and that hash.

    A file converted before is not parsed again (it was checked then): gguf-py reads a 262K-token vocabulary's
    metadata in about 25 s, hashing the file takes one."""
    path = Path(path)
    digest = sha256_file(path) if path.is_file() else ""
    out = cache_dir() / "gguf" / digest[:16]
    if digest and (out / "config.json").is_file():
        return out, digest
    check_gguf(path)
    log.warning("dequantizing %s to fp32 (once; a minute or two for a 135M-270M model)", path.name)
    with atomic_folder(out) as tmp:
        convert_gguf(path, tmp)
    return out, digest
