"""The Python API: luodi.load() and LanguageModel (generate, stream, chat) over any backend."""

from dataclasses import dataclass
from pathlib import Path

from .bundles import check_folder, check_requirements, is_tar_name, unpack_bundle
from .contract.manifest import Generation
from .errors import LuodiError
from .inputs import check_token_ids
from .manifest import MANIFEST, read_manifest
from .runtimes import check_threads, open_backend
from .runtimes.base import Backend
from .runtimes.decode import DecodeLoop, GenerationStats
from .runtimes.drafters import ModelDrafter, PromptLookup
from .runtimes.sampling import GenerationConfig
from .runtimes.scheduler import Scheduler
from .runtimes.speculative import MAX_DRAFT_TOKENS, Speculation
from .runtimes.streaming import IncrementalDecoder
from .tokenizer import Tokenizer

# beside a draft model, prompt lookup drafts only after matches of this many tokens: on SmolLM2's open-ended
# prompts shorter matches were taken over the model's drafts and landed less often (docs/SPECULATIVE.md)
MODEL_LOOKUP_MIN_NGRAM = 4
DEFAULT_DRAFT_COST = 0.5  # a draft token's cost relative to a target step when either's weight bytes are unknown


@dataclass
class GenerationResult:
    """One prompt's generation: the new text and token ids, why it stopped, and timing."""

    text: str
    token_ids: list[int]
    finish_reason: str
    stats: GenerationStats
    logprobs: list[float] | None = None  # each chosen token's log-probability (n, best_of, vote, logprobs)
    top_logprobs: list[list[tuple[int, float]]] | None = None  # (token, log-probability) alternatives per step
    score: float | None = None  # best_of's score, or beam search's length-penalised log-probability
    answer: str | None = None  # vote: the majority answer, with its vote counts
    votes: dict | None = None
    samples: list["GenerationResult"] | None = None  # best_of / vote: every sample

    def to_dict(self) -> dict:
        """JSON-ready form (the CLI's --json output); the test-time compute fields when set."""
        extra = {name: getattr(self, name) for name in ("logprobs", "top_logprobs", "score", "answer", "votes")
                 if getattr(self, name) is not None}
        if self.samples is not None:
            extra["samples"] = [s.to_dict() for s in self.samples]
        return {"text": self.text, "token_ids": self.token_ids, "finish_reason": self.finish_reason,
                "stats": self.stats.to_dict(), **extra}


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stops if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


class LanguageModel:
    """A model ready to generate: a backend, its tokenizer and its generation defaults."""

    def __init__(self, backend: Backend, tokenizer: Tokenizer, eos_ids: list[int], pad_id: int):
        self.backend = backend
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.pad_id = pad_id

    def scheduler(self, max_rows: int = 8, kv_positions: int | None = None) -> Scheduler:
        """A scheduler over this model (runtimes/scheduler.py): sequences join and leave between steps, each row
        with its own length. Its KV pool holds at most `max_rows` sequences and, if set, `kv_positions` positions
        in all (a request that could never fit is a one-line error; one that fits later waits)."""
        return Scheduler(self.backend, self.eos_ids, self.pad_id, max_rows=max_rows, kv_positions=kv_positions)

    def _config(self, kwargs) -> GenerationConfig:
        try:
            return GenerationConfig(**kwargs).validate()
        except TypeError as e:
            raise LuodiError(f"bad generation option: {e}") from None

    def _encode(self, prompt) -> list[int]:
        """Token ids of one prompt: text, chat messages (a list starting with a dict) or token ids, each checked."""
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            return self.tokenizer.encode_chat(prompt)
        return check_token_ids(prompt, self.backend.vocab_size)

    def speculation(self, speculate, draft_tokens: int | None = None) -> Speculation:
        """A Speculation for generate's `speculate`: "lookup" (prompt lookup), a draft LanguageModel sharing this
        model's tokenizer (another export, e.g. this model's INT4 export drafting for its fp32 one), or both as
        ("lookup", draft): the draft model, with prompt-lookup matches taken for free where they pay more."""
        parts = list(speculate) if isinstance(speculate, (list, tuple)) else [speculate]
        models = [p for p in parts if isinstance(p, LanguageModel)]
        lookups = [p for p in parts if isinstance(p, str) and p == "lookup"]
        if len(models) + len(lookups) != len(parts) or len(models) > 1 or len(lookups) > 1 or not parts:
            raise LuodiError("speculate must be 'lookup', a draft model from luodi.load(), or ('lookup', draft "
                             f"model), got {speculate!r}")
        k = MAX_DRAFT_TOKENS if draft_tokens is None else draft_tokens
        classes = self.tokenizer.word_classes
        if not models:
            return Speculation(PromptLookup(classes=classes), k)
        draft_lm = models[0]
        differences = draft_lm.tokenizer.differences(self.tokenizer)
        if draft_lm.eos_ids != self.eos_ids:
            differences.append(f"EOS ids differ ({sorted(draft_lm.eos_ids)} vs {sorted(self.eos_ids)})")
        if differences:
            raise LuodiError("the draft model's tokenizer is not the target's: " + "; ".join(differences))
        draft, target = draft_lm.backend.weight_bytes, self.backend.weight_bytes
        self.backend.share_cpu()
        draft_lm.backend.share_cpu()
        lookup = PromptLookup(min_ngram=MODEL_LOOKUP_MIN_NGRAM, classes=classes) if lookups else None
        drafter = ModelDrafter(draft_lm.backend, draft / target if draft and target else DEFAULT_DRAFT_COST, lookup)
        return Speculation(drafter, k)

    def _run(self, prompts: list, config: GenerationConfig, speculation: Speculation | None = None):
        """Drive the decode loop; yields (row, text piece) as text becomes complete, returns the results.

        A row's text is held back by (longest stop string - 1) characters until it ends, so a stop string
        is never partly streamed before it is recognised and cut.
        """
        loop = DecodeLoop(self.backend, [self._encode(p) for p in prompts], config, self.eos_ids, self.pad_id,
                          speculation)
        decoders = [IncrementalDecoder(self.tokenizer.decode) for _ in prompts]
        consumed = [0] * len(prompts)  # tokens of each row already given to its decoder
        emitted = [0] * len(prompts)  # characters of each row's text already handed out
        hold = max((len(s) - 1 for s in config.stop_strings), default=0)
        for _ in loop:
            for row, dec in enumerate(decoders):
                for token in loop.tokens[row][consumed[row]:]:
                    if config.ignore_eos or token not in self.eos_ids:
                        dec.push(token)
                consumed[row] = len(loop.tokens[row])
                text, hit = _cut_at_stop(dec.text, config.stop_strings)
                if hit:
                    loop.stop(row, "stop_string")
                safe = len(text) if hit else len(text) - hold
                if safe > emitted[row]:
                    yield row, text[emitted[row]:safe]
                    emitted[row] = safe
        results = []
        for row, dec in enumerate(decoders):
            if loop.finish_reasons[row] != "stop_string":
                dec.flush()
            text, _ = _cut_at_stop(dec.text, config.stop_strings)
            if len(text) > emitted[row]:
                yield row, text[emitted[row]:]
            results.append(GenerationResult(text, loop.tokens[row], loop.finish_reasons[row], loop.stats))
        return results

    def generate(self, prompt, speculate=None, draft_tokens: int | None = None, n: int = 1, best_of: int | None = None,
                 vote: int | None = None, num_beams: int = 1, length_penalty: float = 1.0, early_stopping=False,
                 logprobs: int = 0, score=None, extract=None, **kwargs):
        """Generate for one prompt (str, token ids or chat messages) or a list of prompts (batched, left-padded).

        Keyword arguments are GenerationConfig fields: max_new_tokens, do_sample, temperature, top_k, top_p,
        repetition_penalty, seed, stop_token_ids, stop_strings, ignore_eos. Greedy unless sampling is asked.
        `speculate` ("lookup", a draft model, or both; see speculation()) drafts up to `draft_tokens` tokens per step
        (default 7, adapted to how often drafts land); the output is plain decoding's (greedy: identical ids;
        sampling: the same distribution). Speculation runs one prompt at a time.

        Test-time compute (one prompt, its prefill run once; luodi/multi_sample.py): `n` samples (a list),
        `best_of` (the best by mean log-probability or `score(result)`), `vote` (self-consistency: the majority
        answer by `extract(text)`, with vote counts), `num_beams` (beam search, `length_penalty` and
        `early_stopping` as in transformers); `logprobs=k` adds each token's log-probability and k alternatives.
        """
        if n != 1 or best_of is not None or vote is not None or num_beams != 1 or logprobs:
            from .multi_sample import generate_many

            if speculate is not None:
                raise LuodiError("speculate runs plain decoding only, not with n, best_of, vote, num_beams or logprobs")
            return generate_many(self, prompt, self._config(kwargs), n, best_of, vote, num_beams, length_penalty,
                                 early_stopping, logprobs, score, extract)
        batch = isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list))
        config = self._config(kwargs)
        speculation = None if speculate is None else self.speculation(speculate, draft_tokens)
        stream = TextStream(self._run(prompt if batch else [prompt], config, speculation))
        for _ in stream:
            pass
        return stream.results if batch else stream.results[0]

    def stream(self, prompt, speculate=None, draft_tokens: int | None = None, **kwargs) -> "TextStream":
        """Iterate the generated text piece by piece (never splitting a character); one prompt only.

        After the iteration, the stream's `result` holds the GenerationResult (token ids, stats). `speculate`
        and `draft_tokens` as in generate().
        """
        config = self._config(kwargs)
        speculation = None if speculate is None else self.speculation(speculate, draft_tokens)
        return TextStream(self._run([prompt], config, speculation))

    def chat(self, messages: list[dict], **kwargs) -> GenerationResult:
        """Generate a reply to chat messages through the model's chat template."""
        return self.generate([messages], **kwargs)[0]


class TextStream:
    """Text pieces of a running generation; `results` (and `result`, the first) are set when it ends."""

    def __init__(self, run):
        self._run = run
        self.results: list[GenerationResult] | None = None

    @property
    def result(self) -> GenerationResult | None:
        """The first (for stream(): the only) prompt's result, once the iteration has ended."""
        return self.results[0] if self.results else None

    def __iter__(self):
        while True:
            try:
                _, piece = next(self._run)
            except StopIteration as done:
                self.results = done.value
                return
            yield piece


def _eos_and_pad(generation: Generation, tokenizer: Tokenizer) -> tuple[list[int], int]:
    eos = generation.eos_token_ids or [tokenizer.eos_token_id]
    pad = generation.pad_token_id
    return [e for e in eos if e is not None], pad if pad is not None else eos[0]


def load(path_or_name, backend: str | None = None, threads: int | None = None, verify: bool = True,
         device: str = "CPU", providers: list[str] | None = None, cache_dir: str | Path | None = None,
         inference_precision: str = "f32"):
    """A LanguageModel for a bundle (.tar archive or folder) or export folder, or, with backend="torch", for any
    model source run by the transformers reference.

    The backend is the manifest's unless `backend` is given; `device` picks the OpenVINO device and
    `inference_precision` what OpenVINO computes in (f32, the default; bf16 or f16 where the CPU has them:
    faster for fp32/fp16 IRs, not faithful to fp32), `providers` ONNX Runtime's execution providers (e.g.
    ["cuda"]). Every file is checked against the manifest (sha256 unless verify=False, for trusted hot paths;
    sizes, paths and runtime versions always). An archive is
    unpacked once, read-only, into `cache_dir` (default $LUODI_CACHE/bundles, i.e. ~/.cache/luodi/bundles).
    """
    path = Path(path_or_name)
    folder = unpack_bundle(path, verify, Path(cache_dir) if cache_dir else None) if is_tar_name(path) else path
    if (folder / MANIFEST).is_file() and backend != "torch":
        manifest = read_manifest(folder, str(path))
        check_folder(folder, manifest, checksums=verify)
        if backend in (None, manifest.backend):
            check_requirements(manifest.requires, where=str(path))
        runtime = open_backend(folder, manifest, kind=backend, threads=threads, device=device,
                               providers=providers, inference_precision=inference_precision)
        tokenizer = Tokenizer(folder)
        return LanguageModel(runtime, tokenizer, *_eos_and_pad(manifest.generation, tokenizer))
    if backend not in (None, "torch"):
        raise LuodiError(f"{path_or_name}: not an export folder or bundle (no manifest.json); export it first, "
                         "or use backend='torch' for the transformers reference")
    return _load_reference(str(path_or_name), threads)


def _load_reference(spec: str, threads: int | None):
    import torch

    from .exporters.spec import spec_from_config
    from .loaders import resolve
    from .loaders.hf_folder import generation_defaults, load_reference
    from .runtimes.torch_ref import TorchReferenceBackend

    if check_threads(threads):
        torch.set_num_threads(threads)
    source = resolve(spec)
    model = load_reference(source.hf_dir)
    tokenizer = Tokenizer(source.hf_dir)
    generation = generation_defaults(source.hf_dir, tokenizer.eos_token_id)
    runtime = TorchReferenceBackend(model, spec_from_config(model.config).max_context)
    return LanguageModel(runtime, tokenizer, *_eos_and_pad(generation, tokenizer))
