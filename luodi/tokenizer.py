"""The model's tokenizer without transformers: tokenizer.json through `tokenizers`, the chat template
through jinja2. Plain prompts encode exactly as the Hugging Face tokenizer does by default."""

import json
from datetime import datetime
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import BadInputError, CorruptModelError
from .inputs import check_messages, check_text


# the files Tokenizer reads from a folder: tokenizer.json (required), then its config and chat template if present
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
SPACE_MARKS = ("Ġ", "▁")
# what a hostile chat template's expressions can raise besides jinja's own errors (1 // 0, huge numbers, ...)
TEMPLATE_FAILURES = (ArithmeticError, ValueError, TypeError, LookupError, RecursionError)  # how byte-level BPE and SentencePiece vocabularies write a leading space


def _template_env():
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, indent=indent, ensure_ascii=False)
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    return env


class Tokenizer:
    """Encode, decode and apply the chat template of an export folder's tokenizer files."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer as FastTokenizer

        self.folder = folder = Path(folder)
        try:
            self._tok = FastTokenizer.from_file(str(folder / TOKENIZER_FILES[0]))
            config = json.loads((folder / TOKENIZER_FILES[1]).read_text()) if (
                folder / TOKENIZER_FILES[1]).is_file() else {}
        except Exception as e:
            raise CorruptModelError(f"{folder}: cannot read the tokenizer ({e})") from None
        template_file = folder / TOKENIZER_FILES[2]
        self.chat_template = template_file.read_text() if template_file.is_file() else config.get("chat_template")
        self.special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        if not isinstance(self.chat_template, (str, type(None))) or not all(
                isinstance(v, (str, type(None))) for v in self.special.values()):
            raise CorruptModelError(f"{folder}: {TOKENIZER_FILES[1]}'s chat_template and special tokens must be "
                                    "strings")
        self.eos_token_id = self.token_id(self.special["eos_token"])
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    @cached_property
    def vocab(self) -> dict[str, int]:
        """Token string -> id, added tokens included (built once: ~30 ms for a 49k vocabulary)."""
        return self._tok.get_vocab(with_added_tokens=True)

    @cached_property
    def word_classes(self) -> np.ndarray:
        """Token id -> the id of the same text without its leading space (byte-level BPE's "Ġ", SentencePiece's
        "▁") where the vocabulary has one, else the id itself: "The" opening an answer and " The" inside the
        prompt are one word to prompt lookup."""
        vocab = self.vocab
        classes = np.arange(max(vocab.values()) + 1)
        for text, token in vocab.items():
            if text[:1] in SPACE_MARKS and (bare := vocab.get(text[1:])) is not None:
                classes[token] = bare
        return classes

    def differences(self, other: "Tokenizer") -> list[str]:
        """What differs between two tokenizers in ways that change token ids: vocabulary and special tokens."""
        found = []
        mine, theirs = self.vocab, other.vocab
        if mine != theirs:
            changed = sorted(set(mine.items()) ^ set(theirs.items()), key=lambda item: item[1])
            found.append(f"vocabularies differ ({len(mine)} vs {len(theirs)} entries; e.g. "
                         f"{', '.join(repr(t) for t, _ in changed[:3])})")
        found += [f"{name} differs ({self.special[name]!r} vs {other.special[name]!r})"
                  for name in self.special if self.special[name] != other.special[name]]
        return found

    def token_id(self, token: str | None) -> int | None:
        """The id of a token string, or None."""
        return None if token is None else self._tok.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of text; with add_special_tokens, as the Hugging Face tokenizer's default call."""
        return self._tok.encode(check_text(text), add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of token ids (special tokens dropped by default, as in generated output)."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The chat template applied to messages, as transformers' apply_chat_template(tokenize=False)."""
        from jinja2.exceptions import TemplateError

        if not self.chat_template:
            raise BadInputError(f"{self.folder}: this model has no chat template (a base model?): give it a plain "
                                "prompt, not chat messages")
        messages = check_messages(messages)
        try:
            template = _template_env().from_string(self.chat_template)
        except (TemplateError, *TEMPLATE_FAILURES) as e:  # jinja folds constants while compiling
            raise CorruptModelError(f"{self.folder}: the chat template is not valid jinja ({e})") from None
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)
        except (TemplateError, *TEMPLATE_FAILURES) as e:
            raise BadInputError(f"the chat template refused these messages: {e}") from None

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Token ids of a chat prompt (the template supplies the special tokens, so none are added)."""
        return self.encode(self.render_chat(messages), add_special_tokens=False)


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value
