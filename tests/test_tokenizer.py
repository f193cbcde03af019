"""luodi's torch-free tokenizer against transformers' tokenizer, and UTF-8-safe streaming."""

import pytest

from luodi.runtimes.streaming import IncrementalDecoder
from luodi.tokenizer import Tokenizer

TEXTS = ["Hello world", "  leading spaces and\ttabs\n\nnew lines", "café naïve 落地 你好 🙂🚀", "", "2026-11-26: 42%",
         "<|im_start|>user\nhi<|im_end|>"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 落地?"},
        {"role": "assistant", "content": "To land."}, {"role": "user", "content": "Thanks"}]


def _check(name, export_dir, reference):
    _, hf_tok = reference(name)
    tok = Tokenizer(export_dir(name))
    for text in TEXTS:
        assert tok.encode(text) == hf_tok(text)["input_ids"], text
    want = hf_tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert tok.encode_chat(CHAT) == list(want)


def test_tiny_tokenizers_match_transformers(tiny, export_dir, reference):
    _check(tiny, export_dir, reference)


@pytest.mark.smollm2
def test_smollm2_tokenizer_matches_transformers(export_dir, reference):
    _check("smollm2-135m", export_dir, reference)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_streaming_never_splits_a_character(name, export_dir):
    tok = Tokenizer(export_dir(name))
    text = "Unicode 落地 café 🙂 and 🚀 — done"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split())  # multi-byte characters span several byte-level tokens
    dec = IncrementalDecoder(tok.decode)
    pieces = [dec.push(t) for t in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_word_classes_join_a_word_with_and_without_its_leading_space(export_dir):
    """What prompt lookup matches on: "Ġx" (x after a space) is x's class; a token without a bare twin is its own."""
    tok = Tokenizer(export_dir("tiny-llama"))
    classes, vocab = tok.word_classes, tok.vocab
    pairs = [(token, vocab[text[1:]]) for text, token in vocab.items() if text[:1] == "Ġ" and text[1:] in vocab]
    assert pairs and all(classes[token] == bare for token, bare in pairs)
    alone = [token for text, token in vocab.items() if text[:1] != "Ġ"]
    assert all(classes[token] == token for token in alone)
