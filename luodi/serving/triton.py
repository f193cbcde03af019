"""`luodi triton`: a bundle -> a Triton Inference Server model repository.

Two models, side by side:
- `<name>`: Triton's Python backend running the bundle through luodi (generate, with decoupled streaming);
  the bundle is copied next to `model.py` (triton_python_model.py) and verified when the model loads.
- `<name>_raw`: the bare graph for users who run their own decode loop, on Triton's own backend for the
  bundle's target (`onnxruntime_onnx` or `tensorrt_plan`), with each layer's KV cache as sequence-batching
  implicit state (Triton keeps it between the requests of a sequence). Triton's OpenVINO backend has no
  implicit state, and an OpenVINO bundle's cache lives inside its infer request, so OpenVINO bundles get the
  generate model only.

The repository may hold other models: a run adds or replaces these two folders only, each written atomically,
and replaces an existing one only when `luodi triton` wrote it and --force is given (luodi.outputs).
"""

import contextlib
import re
import shutil
from pathlib import Path, PurePosixPath

from ..bundles import verify_bundle
from ..contract import Manifest
from ..contract.graph import ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS, kv_names
from ..bundles.checks import check_member_name
from ..bundles.onnx_external_data import external_data_locations
from ..bundles.unpack import scan_archive
from ..errors import LuodiError
from ..fileio import discard
from ..manifest import read_manifest
from ..outputs import TRITON_MODEL, claim_output, output_folder, output_kind, write_triton_marker
from .pbtxt import Enum, to_pbtxt
from .token_lookup import restore_token_lookup

MODEL_FILE = Path(__file__).with_name("triton_python_model.py")
_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16"}
_NAMING = "--name or --out"  # what to change when a model folder is refused
_OPTIONAL = [("max_tokens", "TYPE_INT32"), ("temperature", "TYPE_FP32"), ("top_k", "TYPE_INT32"),
             ("top_p", "TYPE_FP32"), ("seed", "TYPE_INT64"), ("stream", "TYPE_BOOL"), ("chat", "TYPE_BOOL")]


def _tensor(name: str, dtype: str, dims: list, optional: bool = False) -> dict:
    entry = {"name": name, "data_type": Enum(dtype), "dims": dims}
    return entry | {"optional": True} if optional else entry


def generate_config(name: str, bundle_file: str, threads: int | None, instances: int) -> dict:
    """config.pbtxt content of the Python-backend model serving luodi's generate (decoupled: streamed pieces)."""
    params = {"bundle": bundle_file, "threads": str(threads or "")}
    return {"name": name, "backend": "python", "max_batch_size": 0,
            "model_transaction_policy": {"decoupled": True},
            "input": [_tensor("text_input", "TYPE_STRING", [1])]
            + [_tensor(n, t, [1], optional=True) for n, t in _OPTIONAL],
            "output": [_tensor("text_output", "TYPE_STRING", [-1]), _tensor("finish_reason", "TYPE_STRING", [-1])],
            "instance_group": [{"count": instances, "kind": Enum("KIND_CPU")}],
            "parameters": [{"key": k, "value": {"string_value": v}} for k, v in params.items()]}


def kv_data_type(manifest: Manifest) -> str:
    """The KV cache's Triton type, as the manifest's contract gives it (fp16 or bf16 for a half graph)."""
    return _TYPES[manifest.cache_dtype]


def raw_platform(manifest: Manifest) -> str | None:
    """The Triton backend serving the bundle's bare graph: its target module says (None: generate model only)."""
    from ..targets import get_target

    return get_target(manifest.target).triton_platform


def raw_config(name: str, manifest: Manifest) -> dict:
    """config.pbtxt content of the bare graph: ids, mask and positions in, logits out, KV as implicit state.

    A fixed-size cache (shared or scatter buffer: [1, kv_heads, max_context, head_dim]) starts as zeros and
    uses one buffer for the state's input and output; a concatenated cache grows from zero positions."""
    spec, backend = manifest.spec, manifest.backend
    kv_type = kv_data_type(manifest)
    fixed = manifest.layout.in_place
    positions = spec.max_context if fixed else -1
    dims = [1, spec.num_kv_heads, positions, spec.head_dim]
    initial = {"data_type": Enum(kv_type), "dims": [1, spec.num_kv_heads, positions if fixed else 0, spec.head_dim],
               "zero_data": True, "name": "empty cache"}
    states = [{"input_name": past, "output_name": present, "data_type": Enum(kv_type), "dims": dims,
               "initial_state": initial} | ({"use_same_buffer_for_input_output": True} if fixed else {})
              for past, present in zip(*kv_names(spec.num_layers))]
    return {"name": name, "platform": raw_platform(manifest), "max_batch_size": 0,
            "input": [_tensor(n, "TYPE_INT64", [1, -1]) for n in (INPUT_IDS, ATTENTION_MASK, POSITION_IDS)],
            "output": [_tensor(LOGITS, "TYPE_FP16" if kv_type == "TYPE_FP16" and backend == "tensorrt"
                               else "TYPE_FP32", [1, -1, spec.vocab_size])],
            "sequence_batching": {"max_sequence_idle_microseconds": 60_000_000, "state": states},
            "instance_group": [{"count": 1, "kind": Enum("KIND_GPU" if backend == "tensorrt" else "KIND_CPU")}]}


def _model_name(manifest: Manifest, name: str | None) -> str:
    name = name or f"{manifest.source.name if manifest.source else 'model'}-{manifest.backend}"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if not name or name.startswith("."):
        raise LuodiError(f"{name!r} is not a usable Triton model name")
    return name


def _copy_members(bundle: Path, targets: dict) -> None:
    """Copy bundle files {name: target path} out of a bundle folder or archive (an archive is read once)."""
    for target in targets.values():
        target.parent.mkdir(parents=True, exist_ok=True)
    if bundle.is_dir():
        for name, target in targets.items():
            shutil.copyfile(bundle / name, target)
    else:
        scan_archive(bundle, targets.get)


def _copy_raw(bundle: Path, manifest: Manifest, version: Path) -> None:
    """The raw model's files under Triton's default names: a TensorRT engine as model.plan; an ONNX graph as
    model.onnx with the external data its tensors name (found by the bundle checks' reader, each name inside
    the bundle), and its token lookup restored when it left that to luodi's runtime (embedding_input), so the
    raw model takes token ids."""
    if manifest.backend == "tensorrt":
        _copy_members(bundle, {manifest.tensorrt.engine_file: version / "model.plan"})
        return
    graph = version / "model.onnx"
    _copy_members(bundle, {manifest.model_file: graph})
    parent = PurePosixPath(manifest.model_file).parent
    data = {(parent / location).as_posix(): version / location
            for location in map(lambda n: check_member_name(n, str(bundle)), external_data_locations(graph))}
    _copy_members(bundle, data)
    restore_token_lookup(graph)


def _claim_models(out: Path, model: str, raw: str | None, force: bool) -> None:
    """Refuse before any work unless both model folders may be written. An earlier `<model>_raw` that luodi
    wrote is part of the model being replaced, so it needs --force even when this bundle has no raw model."""
    if out.exists() and not out.is_dir():
        raise LuodiError(f"--out {out} is a file; a Triton model repository is a folder")
    claim_output(out / model, TRITON_MODEL, force, option=_NAMING)
    if raw or output_kind(out / f"{model}_raw") == TRITON_MODEL:
        claim_output(out / f"{model}_raw", TRITON_MODEL, force, option=_NAMING)


def _write_generate(folder: Path, bundle: Path, model: str, threads: int | None, instances: int) -> None:
    version = folder / "1"
    version.mkdir()
    shutil.copyfile(MODEL_FILE, version / "model.py")
    (shutil.copytree if bundle.is_dir() else shutil.copyfile)(bundle, version / bundle.name)
    (folder / "config.pbtxt").write_text(to_pbtxt(generate_config(model, bundle.name, threads, instances)))
    write_triton_marker(folder, bundle.name)


def _write_raw(folder: Path, bundle: Path, raw: str, manifest: Manifest) -> None:
    (folder / "1").mkdir()
    _copy_raw(bundle, manifest, folder / "1")
    (folder / "config.pbtxt").write_text(to_pbtxt(raw_config(raw, manifest)))
    write_triton_marker(folder, bundle.name)


def write_triton_repo(bundle: Path, out: Path, name: str | None = None, threads: int | None = None,
                      instances: int = 1, force: bool = False) -> dict:
    """Add (or, with `force`, replace) one model in a Triton model repository, atomically; returns
    {model name: what it serves}. Other models and files in the repository are left alone.

    The bundle is verified first (checksums, paths, runtime versions), so a damaged bundle never lands in
    a repository."""
    bundle, out = Path(bundle), Path(out)
    verify_bundle(bundle)
    manifest = read_manifest(bundle) if bundle.is_dir() else scan_archive(bundle)[0]
    model = _model_name(manifest, name)
    raw = f"{model}_raw" if raw_platform(manifest) else None
    _claim_models(out, model, raw, force)
    written = {model: "luodi generate (Python backend, decoupled streaming)"}
    with contextlib.ExitStack() as folders:
        generate = folders.enter_context(output_folder(out / model, TRITON_MODEL, force, _NAMING))
        _write_generate(generate, bundle, model, threads, instances)
        if raw:
            _write_raw(folders.enter_context(output_folder(out / raw, TRITON_MODEL, force, _NAMING)),
                       bundle, raw, manifest)
            written[raw] = f"{raw_platform(manifest)} graph, KV cache as sequence-batching state"
            if manifest.layout.in_place:
                written[raw] += (" (a max-context buffer per layer, moved every step: an export with "
                                 "--passes=-inplace_kv_cache grows its cache instead, see docs/DEPLOY.md)")
    if not raw and output_kind(out / f"{model}_raw") == TRITON_MODEL:  # the replaced model's, claimed above
        discard(out / f"{model}_raw")
    return written
