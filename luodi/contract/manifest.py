"""The manifest's typed form: every field luodi reads, with its type and range, validated before use.

A manifest comes from an export folder or a bundle, and a bundle is attacker-controlled (an attacker who
rewrites one recomputes its checksums too), so `Manifest.from_json` checks every field the runtime relies on
(types, ranges, allowed values, file names that stay inside the bundle, token ids inside the vocabulary)
before anything reads a path or sizes a buffer from it. Informational sections (passes, graph, parity,
quantization, openvino) are only checked to be JSON objects: nothing decides anything from them.
"""

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from . import schema
from .kv import ITEM_BYTES, KV_LAYOUTS, KVLayout
from .quantization import RECIPE_SEARCH, RecipeSearch
from .schema import rule

FORMAT = "luodi-export"
FORMAT_VERSION = 1
BACKENDS = ("ort", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
KV_DTYPES = tuple(ITEM_BYTES)
EMBEDDING_DTYPES = ("float32", "float16")
LAYER_TYPES = ("sliding_attention", "full_attention")  # transformers' names, as ModelSpec.layer_types holds them
# Upper bounds far above any model luodi exports, low enough that no buffer sized from them is absurd
MAX_LAYERS, MAX_HEADS, MAX_HEAD_DIM, MAX_HIDDEN = 1024, 1024, 4096, 1 << 17
MAX_VOCAB, MAX_CONTEXT, MAX_KV_BYTES_PER_TOKEN = 1 << 22, 1 << 21, 64 << 20
MAX_FILE_BYTES = 1 << 42  # 4 TiB: any size or offset a manifest gives stays a number that prints
MAX_NAME_PART, MAX_NAME = 255, 1024  # bytes of one path component, of a whole name (Linux limits)
MANIFEST = "manifest.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"\d+(\.\d+){0,3}")


def member_name_problem(name: str) -> str | None:
    """Why `name` is not a plain relative '/'-separated path inside a bundle (absolute, '..', '.', empty
    parts, backslashes, NUL), or None when it is one."""
    if not isinstance(name, str):
        return f"must be a file name, got {name!r:.60}"
    path = PurePosixPath(name)
    if (not name or "\\" in name or "\x00" in name or path.is_absolute() or name != path.as_posix()
            or any(part in ("..", ".", "") for part in name.split("/"))):
        return f"path {name!r:.200} escapes the bundle or is not a plain relative path"
    if len(name.encode()) > MAX_NAME or any(len(part.encode()) > MAX_NAME_PART for part in name.split("/")):
        return f"path {name[:60]!r}... is longer than a file system takes"
    if "_ORT_MEM_ADDR_" in name:
        return f"path {name!r:.200} is ONNX Runtime's in-memory address marker, not a file"
    return None


def _members(names) -> str | None:
    return next(filter(None, (member_name_problem(n) for n in names)), None)


def _listed_files(files: dict) -> str | None:
    """Listed names: plain relative paths, not the manifest itself, none a folder of another."""
    if problem := _members(files):
        return problem
    if MANIFEST in files:
        return f"lists {MANIFEST}, which is the manifest itself"
    folders = {"/".join(name.split("/")[:i]) for name in files for i in range(1, name.count("/") + 1)}
    if clash := sorted(folders & set(files)):
        return f"lists {clash[0]!r} both as a file and as a folder of other files"
    return None


def _sha256_or_none(value) -> str | None:
    return None if value is None or _SHA256.fullmatch(value) else "must be a lowercase hex sha256"


@dataclass(frozen=True)
class Source:
    """Where the exported weights came from (informational, and the draft/target identity check)."""

    name: str = rule(check=lambda v: None if 0 < len(v) <= 200 else "must be 1 to 200 characters")
    kind: str | None = None
    origin: str | None = None
    sha256: str | None = rule(default=None, check=_sha256_or_none)


@dataclass(frozen=True)
class ModelSpec:
    """The model's structure, the one spec luodi has: the exporter reads it from a transformers config
    (exporters/spec.py spec_from_config) and traces the canonical decoder from it, the manifest carries it, and
    the runtimes, memory plan, calibration, Triton and the TensorRT build read it by attribute. A new
    architecture trait is one field here (with a default, so earlier manifests still load)."""

    model_type: str
    family: str
    vocab_size: int = rule(1, MAX_VOCAB)
    hidden_size: int = rule(1, MAX_HIDDEN)
    num_layers: int = rule(1, MAX_LAYERS)
    num_heads: int = rule(1, MAX_HEADS)
    num_kv_heads: int = rule(1, MAX_HEADS)
    head_dim: int = rule(1, MAX_HEAD_DIM)
    norm: str = rule(choices=("rms", "layer"))
    norm_eps: float = rule(0.0, 1.0)
    positions: str = rule(choices=("rope", "learned"))
    activation: str = rule(choices=("silu", "gelu_tanh", "gelu"))
    gated_mlp: bool
    max_context: int = rule(1, MAX_CONTEXT)
    tie_word_embeddings: bool
    rotary_dim: int = rule(0, MAX_HEAD_DIM)  # channels of each head the rotary embedding turns (0: learned)
    # Gemma / Qwen3 traits; the defaults are what the Llama-style families do (absent in older manifests)
    qk_norm: bool = False  # RMSNorm over each head of q and k before the rotary embedding
    sandwich_norms: bool = False  # norms after attention and after the MLP too (four per block)
    embedding_scale: float = rule(0.0, MAX_HIDDEN, default=1.0)  # token embeddings times this (Gemma: sqrt(hidden))
    attention_scale: float | None = rule(0.0, 1e6, default=None)  # scores scale; None: 1 / sqrt(head_dim)
    attn_softcap: float | None = rule(0.0, 1e6, default=None)  # scores -> tanh(scores / c) * c before the mask
    final_softcap: float | None = rule(0.0, 1e6, default=None)  # logits -> tanh(logits / c) * c
    sliding_window: int | None = rule(1, MAX_CONTEXT, default=None)  # a sliding layer sees fewer keys back
    layer_types: list[str] = rule(choices=LAYER_TYPES, default=())  # per layer sliding or full (): all full

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of one layer, None where it attends to every earlier position."""
        return self.sliding_window if self.layer_types and self.layer_types[layer] == LAYER_TYPES[0] else None

    def to_json(self) -> dict:
        """The spec as the manifest's JSON object."""
        return schema.to_json(self)


@dataclass(frozen=True)
class GraphIO:
    """The graph's input and output names."""

    inputs: list[str]
    outputs: list[str]
    kv_layout: str | None = None


@dataclass(frozen=True)
class Generation:
    """Generation defaults: the ids that end a sequence and pad a batch."""

    eos_token_ids: list[int] = rule(0, MAX_VOCAB)
    pad_token_id: int | None = rule(0, MAX_VOCAB, default=None)
    bos_token_id: int | None = rule(0, MAX_VOCAB, default=None)


@dataclass(frozen=True)
class Memory:
    """Weight and KV bytes (the activation plan is informational)."""

    weight_bytes: int | None = rule(0, MAX_FILE_BYTES, default=None)
    kv_bytes_per_token: int | None = rule(0, MAX_KV_BYTES_PER_TOKEN, default=None)
    kv_bytes_at_max_context: int | None = rule(0, MAX_FILE_BYTES, default=None)
    folded_weight_bytes: int | None = rule(0, MAX_FILE_BYTES, default=None)
    activations: dict | None = None


@dataclass(frozen=True)
class EmbeddingTableRef:
    """Where the token-embedding rows live for a graph that takes inputs_embeds."""

    file: str = rule(check=member_name_problem)
    offset: int = rule(0, MAX_FILE_BYTES)
    shape: list[int] = rule(1, MAX_VOCAB * MAX_HIDDEN, check=lambda s: None if len(s) == 2 else "must have 2 dims")
    dtype: str = rule(choices=EMBEDDING_DTYPES)

    @property
    def end(self) -> int:
        """The byte just past the table's last row."""
        return self.offset + self.shape[0] * self.shape[1] * ITEM_BYTES[self.dtype]


@dataclass(frozen=True)
class TensorRTInfo:
    """The TensorRT engine's file and build facts."""

    engine_file: str | None = rule(default=None, check=member_name_problem)
    kv_dtype: str = rule(choices=KV_DTYPES, default="float32")
    max_batch: int = rule(1, 4096, default=1)
    profiles: dict = field(default_factory=dict)
    module: str | None = None  # the TensorRT module that built the engine (tensorrt or tensorrt_rtx)
    version: str | None = None
    arch: str | None = None  # the compute capability it was built for, smXY
    engine_bytes: int | None = rule(0, MAX_FILE_BYTES, default=None)
    legality: str | None = None  # what checked the graph: TensorRT's parser or the static allow-list
    build_seconds: float | None = None
    max_step_tokens: int | None = rule(1, 4096, default=None)


@dataclass(frozen=True)
class FileEntry:
    """One listed file: its size and sha256."""

    bytes: int = rule(0, MAX_FILE_BYTES)
    sha256: str = rule(check=lambda v: None if _SHA256.fullmatch(v) else "must be a lowercase hex sha256")


def _requires_problem(requires: dict) -> str | None:
    from .runtimes import REQUIREMENT_NAMES

    for name, version in requires.items():
        if name not in REQUIREMENT_NAMES:
            return f"names {name!r:.60}, which is not a runtime luodi knows ({', '.join(REQUIREMENT_NAMES)})"
        if not _VERSION.fullmatch(version):
            return f"gives {name} the version {version!r:.60}, which is not a dotted version number"
    return None


@dataclass(frozen=True)
class RuntimeFacts:
    """What a backend takes from its export's manifest besides the spec: the step whose every position's logits
    the graph returns, the bytes one step reads (a draft model's cost) and the checkpoint's sha256."""

    logits_window: int | None = None
    weight_bytes: int | None = None
    source: str | None = None


@dataclass(frozen=True)
class Manifest:
    """manifest.json of an export folder or bundle, validated (`from_json`) before anything uses it."""

    format: str = rule(choices=(FORMAT,))
    format_version: int = rule(choices=(FORMAT_VERSION,))
    backend: str = rule(choices=BACKENDS)
    model_file: str = rule(check=member_name_problem)
    max_context: int = rule(1, MAX_CONTEXT)
    spec: ModelSpec
    io: GraphIO
    generation: Generation
    files: dict[str, FileEntry] = rule(check=_listed_files)
    precision: str = rule(choices=PRECISIONS, default="fp32")
    kv_cache: str = rule(choices=tuple(KV_LAYOUTS), default="concat")
    kv_dtype: str | None = rule(choices=KV_DTYPES, default=None)  # read it as `cache_dtype`
    logits_window: int | None = rule(1, 4096, default=None)
    logits: str | None = rule(choices=("last", "all"), default=None)  # before the logits window
    source: Source = None  # (a field typed without `| None` may be left out, but is never null)
    memory: Memory = None
    embedding_table: EmbeddingTableRef | None = None
    tensorrt: TensorRTInfo | None = None
    tokenizer_files: list[str] = rule(default_factory=tuple, check=_members)
    requires: dict[str, str] = rule(default_factory=dict, check=_requires_problem)
    target: str | None = None
    luodi_version: str | None = None
    created: str | None = None
    opset: int | None = None
    bundle: dict = None
    passes: dict = None
    graph: dict = None
    parity: dict | None = None
    quantization: dict = None
    openvino: dict = None

    @classmethod
    def from_json(cls, data, where: str) -> "Manifest":
        """The manifest `data` (parsed JSON) checked field by field and across fields; raises a one-line
        ManifestMismatchError naming the first problem and where the manifest came from."""
        manifest = schema.read(cls, data, where)
        manifest.validate(where)
        return manifest

    def validate(self, where: str) -> None:
        """The checks that span fields: one max context, heads that group, one layer type per layer and a
        window exactly when some slide, ids inside the vocabulary, a KV cache of sane size, and a table whose
        rows are the model's width."""
        spec = self.spec
        problems = [
            (spec.max_context != self.max_context, f"spec.max_context {spec.max_context} differs from "
                                                   f"max_context {self.max_context}"),
            (spec.num_heads % spec.num_kv_heads != 0, f"spec.num_heads {spec.num_heads} is not a multiple of "
                                                      f"spec.num_kv_heads {spec.num_kv_heads}"),
            (spec.rotary_dim > spec.head_dim, f"spec.rotary_dim {spec.rotary_dim} exceeds head_dim {spec.head_dim}"),
            (len(spec.layer_types) not in (0, spec.num_layers), f"spec.layer_types has {len(spec.layer_types)} "
                                                                 f"entries for {spec.num_layers} layers"),
            ((spec.sliding_window is None) != (LAYER_TYPES[0] not in spec.layer_types),
             "spec.sliding_window and spec.layer_types disagree (a window needs sliding layers and back)"),
            (2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * 4 > MAX_KV_BYTES_PER_TOKEN,
             "spec gives a KV cache of more than 64 MiB per token"),
            (any(i >= spec.vocab_size for i in self.token_ids), f"generation names a token id outside the "
                                                                f"vocabulary of {spec.vocab_size}"),
            (self.embedding_table is not None and self.embedding_table.shape[1] != spec.hidden_size,
             f"embedding_table rows are not {spec.hidden_size} wide"),
            (self.backend == "tensorrt" and self.tensorrt is None, "backend tensorrt needs a tensorrt section"),
            (self.embedding_table is not None and self.embedding_table.file in self.files
             and self.embedding_table.end > self.files[self.embedding_table.file].bytes,
             "embedding_table reads past the end of its file"),
        ]
        for failed, problem in problems:
            if failed:
                raise schema.ManifestMismatchError(f"{where}: manifest {problem}")
        if self.quantization and RECIPE_SEARCH in self.quantization:
            schema.read(RecipeSearch, self.quantization[RECIPE_SEARCH], where, f"quantization.{RECIPE_SEARCH}")

    @property
    def recipe_search(self) -> RecipeSearch | None:
        """The int4 recipe search's record (every candidate's measurement and the choice), if the export ran one."""
        found = (self.quantization or {}).get(RECIPE_SEARCH)
        return None if found is None else schema.read(RecipeSearch, found, "manifest", f"quantization.{RECIPE_SEARCH}")

    @property
    def facts(self) -> RuntimeFacts:
        """What a backend takes from this manifest besides the spec; exports before the logits window kept the
        last position only ("logits": "last")."""
        window = self.logits_window if self.logits_window is not None else 1 if self.logits == "last" else None
        return RuntimeFacts(window, self.memory.weight_bytes if self.memory else None,
                            self.source.sha256 if self.source else None)

    @property
    def layout(self) -> KVLayout:
        """The graph's KV-cache layout (contract/kv.py)."""
        return KV_LAYOUTS[self.kv_cache]

    @property
    def total_bytes(self) -> int:
        """The bytes of every listed file."""
        return sum(entry.bytes for entry in self.files.values())

    @property
    def cache_dtype(self) -> str:
        """The KV cache's dtype (a half-precision graph's logits too): the manifest's kv_dtype, else (exports
        before that field) the TensorRT section's, else float32."""
        return self.kv_dtype or (self.tensorrt.kv_dtype if self.tensorrt else "float32")

    @property
    def token_ids(self) -> tuple[int, ...]:
        """Every token id the generation defaults name."""
        g = self.generation
        return (*g.eos_token_ids, *(i for i in (g.pad_token_id, g.bos_token_id) if i is not None))

    def to_json(self) -> dict:
        """The manifest as a JSON object."""
        return schema.to_json(self)


EXPORT_ONLY = ("format", "format_version", "created", "files")  # the fields a bundle's manifest writes anew


def is_manifest_json(data) -> bool:
    """Whether parsed JSON is shaped as a luodi manifest (its format and a file list), before any validation:
    how luodi recognises its own earlier outputs (luodi.outputs), even ones too old or damaged to load."""
    return isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("files"), dict)


def is_bundle_json(data: dict) -> bool:
    """Whether a manifest (is_manifest_json) is a bundle's rather than an export folder's."""
    return "bundle" in data


def bundle_json(export: dict, added: dict[str, FileEntry], requires: dict[str, str], created: str) -> dict:
    """A bundle's manifest: the export's own JSON (spec, IO, memory, generation, passes, parity) carried as it
    was written, the runtime versions the bundle requires, when it was made, and the files with `added` ones."""
    files = {**export["files"], **{name: schema.to_json(entry) for name, entry in added.items()}}
    content = {k: v for k, v in export.items() if k not in EXPORT_ONLY}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, **content,
            "bundle": {"created": created, "export_created": export.get("created")},
            "requires": requires, "files": dict(sorted(files.items()))}
