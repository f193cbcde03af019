"""Tiny random-initialised models of each supported family, built offline in seconds with a fixed seed.

Each gets a small byte-level BPE tokenizer trained on a fixed text, so tokenization, chat templates and
streaming are exercised exactly as with a real model, without any download.
"""

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A model that runs on the device is a model that ships.
Paris is the capital of France; Berlin is the capital of Germany; Rome is the capital of Italy.
Once upon a time there was a small robot who wanted to learn how to read and write stories.
Numbers like 0 1 2 3 4 5 6 7 8 9 10 42 100 and 2048 appear in text, as do dates such as 2026-11-26.
Graph compilers fuse operators, reuse memory and lower a network to the fastest kernels a device has.
Unicode matters too: café, naïve, 落地, 你好, こんにちは, emoji 🙂 and 🚀 must stream without breaking.
"""

# bump when what build_tiny writes changes: it is part of the tiny models' cache key
TINY_FORMAT = 2
# every family carries <|endoftext|>: transformers' Qwen2 tokenizer adds it as its pad token otherwise
_SPECIALS = {"gpt2": ["<|endoftext|>"], "default": ["<unk>", "<s>", "</s>", "<|endoftext|>"]}
_CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]


def train_tokenizer(family: str, vocab_size: int):
    """A byte-level BPE tokenizer (tokenizers' own trainer) wrapped for transformers.

    Llama-style families add a BOS token to plain prompts, as their real tokenizers do; GPT-2 does not.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIALS["gpt2" if family == "gpt2" else "default"] + _CHAT_TOKENS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    if family == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        names = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    else:
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bos)])
        names = {"bos_token": "<s>", "eos_token": "<|im_end|>", "unk_token": "<unk>"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _config(family: str, arch: dict, tokenizer):
    import transformers

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.eos_token_id, "vocab_size": len(tokenizer)}
    if family == "gpt2":
        return transformers.GPT2Config(n_embd=arch["hidden_size"], n_layer=arch["num_hidden_layers"],
                                       n_head=arch["num_attention_heads"], n_positions=arch["max_position_embeddings"],
                                       **ids)
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config,
           "phi3": transformers.Phi3Config, "gemma2": transformers.Gemma2Config,
           "gemma3": transformers.Gemma3TextConfig}
    return cls[family](**arch, **ids)


def build_tiny(family: str, arch: dict, seed: int, out_dir: Path) -> None:
    """Write a tiny random model of `family` (a Hugging Face folder: config, safetensors, tokenizer) to out_dir."""
    import torch
    from transformers import AutoModelForCausalLM

    from .hf_folder import quiet_transformers

    quiet_transformers()
    tokenizer = train_tokenizer(family, int(arch.pop("tokenizer_vocab", 384)))
    config = _config(family, dict(arch), tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # norms start at exactly 1/0: perturb them so a wrong norm mapping shows
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
