"""The benchmark workloads of `luodi bench --workload` (configs/workloads.yaml): each a prompt defined as text and
a new-token count, made into ids by the loaded model's own tokenizer, so a benchmark needs nothing outside the
repository and SmolLM2 gets the anchor kit's ids (shared/anchors/make_prompts.py)."""

from dataclasses import dataclass
from pathlib import Path

from .errors import BadInputError, LuodiError
from .inputs import read_text_file
from .paths import configs_dir


@dataclass(frozen=True)
class Workload:
    """One workload: a chat `message`, or the first `prompt_tokens` tokens of `text_file`; `new_tokens` to make."""
    name: str
    new_tokens: int
    message: str | None = None
    text_file: Path | None = None
    prompt_tokens: int | None = None


def workload(name: str) -> Workload:
    """The named workload's definition from configs/workloads.yaml; a one-line error for an unknown name."""
    import yaml

    path = configs_dir() / "workloads.yaml"
    definitions = yaml.safe_load(read_text_file(path, "workload definitions"))
    if name not in definitions:
        raise BadInputError(f"unknown workload {name!r}: {path} defines {', '.join(definitions)}")
    return parse_workload(name, definitions[name], path)


def parse_workload(name: str, entry, where) -> Workload:
    """A workload from its definition (a mapping in configs/workloads.yaml's form), or a one-line error naming
    `where` it was read from."""
    if not isinstance(entry, dict) or "new_tokens" not in entry or (
            ("message" in entry) == ("text_file" in entry and "prompt_tokens" in entry)):
        raise LuodiError(f"{where}: workload {name} needs new_tokens and either message or text_file + prompt_tokens")
    return Workload(name, int(entry["new_tokens"]), entry.get("message"),
                    Path(entry["text_file"]) if "text_file" in entry else None, entry.get("prompt_tokens"))


def prompt_ids(work: Workload, tokenizer) -> list[int]:
    """The workload's prompt as token ids of `tokenizer`, encoded as the Hugging Face tokenizer does: a message
    through the chat template with the generation prompt (the plain text with the default special tokens when
    the model has no template); a text file's first prompt_tokens tokens without special tokens."""
    if work.message is not None:
        if tokenizer.chat_template:
            return tokenizer.encode_chat([{"role": "user", "content": work.message}])
        return tokenizer.encode(work.message)
    ids = tokenizer.encode(read_text_file(work.text_file, f"workload {work.name}'s text file"),
                           add_special_tokens=False)
    if len(ids) < work.prompt_tokens:
        raise BadInputError(f"workload {work.name} takes the first {work.prompt_tokens} tokens of {work.text_file}, "
                            f"which has only {len(ids)}")
    return ids[:work.prompt_tokens]
