"""luodi tune's plan: the configurations to measure and how, read from configs/tune.yaml (or --candidates FILE).

A Build is one export (target, precision, quantization settings); a Candidate is a Build run one way (OpenVINO's
inference precision, a thread count, plain or speculative decoding). Candidates that cannot run here (bf16 on a
CPU without it) stay in the plan with the reason, so the report lists them.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import LuodiError
from ..paths import configs_dir
from ..runtimes import check_threads
from ..workloads import Workload, parse_workload, workload

QUANTIZATION_KEYS = ("method", "group_size", "keep", "accuracy_level")
WORKLOAD_KINDS = ("chat", "long-prompt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
BUILD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a build's name is its folder under exports/
QUANTIZATION_TYPES = {"method": ((str,), "name"), "group_size": ((int,), "integer"), "keep": ((str, list), "name or list"),
                      "accuracy_level": ((int,), "integer")}


def default_candidates() -> Path:
    """configs/tune.yaml, the candidate list luodi tune reads unless given another."""
    return configs_dir() / "tune.yaml"


@dataclass(frozen=True)
class Build:
    """One export: target, precision and the quantization settings luodi export takes (--method, --keep, ...)."""
    name: str
    target: str
    precision: str
    quantization: tuple = ()  # sorted (key, value) pairs of QUANTIZATION_KEYS
    calib: bool = False  # quantized on the plan's calibration text

    def settings(self) -> dict:
        """What determines the export (recorded in the tune state to tell when it must be redone)."""
        return {"target": self.target, "precision": self.precision, **dict(self.quantization), "calib": self.calib}

    def describe(self) -> str:
        """E.g. 'ort int4 minmax keep=lm_head'."""
        q = dict(self.quantization)
        extra = [q["method"]] if "method" in q else []
        extra += [f"{k}={','.join(v) if isinstance(v, (list, tuple)) else v}" for k, v in q.items() if k != "method"]
        return " ".join([self.target, self.precision, *extra])


def quality_key(build: Build, inference_precision: str | None) -> str:
    """The name of a quality measurement: the build and what OpenVINO computes in."""
    return f"{build.name} | {inference_precision or '-'}"


@dataclass(frozen=True)
class Candidate:
    """A build run one way; `draft` set: speculative decoding with that build drafting."""
    build: Build
    inference_precision: str | None  # OpenVINO's; None for other runtimes
    threads: int
    draft: Build | None = None
    not_applicable: str | None = None  # why it cannot run on this machine

    @property
    def id(self) -> str:
        """A stable name: build | inference precision | threads | plain or speculate=draft."""
        return " | ".join([self.build.name, self.inference_precision or "-", f"{self.threads} threads",
                           f"speculate={self.draft.name}" if self.draft else "plain"])

    @property
    def quality_key(self) -> str:
        """What its quality depends on: the build and what it computes in (speculation keeps the output)."""
        return quality_key(self.build, self.inference_precision)

    def settings(self) -> dict:
        """What determines its measurements."""
        return {"build": self.build.settings(), "inference_precision": self.inference_precision,
                "threads": self.threads, "draft": self.draft.settings() if self.draft else None}


@dataclass(frozen=True)
class Quality:
    """How quality is measured: perplexity on `text` (first max_tokens tokens, windows of `window`)."""
    text: Path
    max_tokens: int
    window: int
    calib: Path | None = None


@dataclass(frozen=True)
class Plan:
    """Everything a tune measures: the reference build, the candidates, the speed workloads and settings."""
    reference: Build
    candidates: list[Candidate]
    workloads: dict[str, Workload]  # of WORKLOAD_KINDS that are measured
    repeat: int
    quality: Quality
    source: Path

    def protocol(self, model: str) -> dict:
        """What every measurement depends on (the tune state is discarded when it changes)."""
        return {"model": model, "workloads": {k: repr(w) for k, w in self.workloads.items()}, "repeat": self.repeat,
                "quality": {k: str(v) for k, v in vars(self.quality).items()}}


def _build(name, entry, where: Path) -> Build:
    if not isinstance(name, str) or not BUILD_NAME.fullmatch(name):
        raise LuodiError(f"{where}: build name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    if not isinstance(entry, dict) or not isinstance(entry.get("target"), str):
        raise LuodiError(f"{where}: build {name!r} needs a mapping with a target")
    unknown = set(entry) - {"target", "precision", "calib", *QUANTIZATION_KEYS}
    if unknown:
        raise LuodiError(f"{where}: build {name!r} has unknown keys {sorted(unknown)}; it takes target, precision, "
                         f"calib, {', '.join(QUANTIZATION_KEYS)}")
    precision = entry.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise LuodiError(f"{where}: build {name!r} precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    for key, (types, expected) in QUANTIZATION_TYPES.items():
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types) or
                                  (isinstance(value, list) and not all(isinstance(v, str) for v in value))):
            raise LuodiError(f"{where}: build {name!r} {key} {value!r} is not a {expected}")
    quantization = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in entry.items()
                                if k in QUANTIZATION_KEYS))
    return Build(name, entry["target"], precision, quantization, bool(entry.get("calib", False)))


def _thread_counts(values, where) -> list[int]:
    if not isinstance(values, list):
        raise LuodiError(f"{where}: threads must be a list, e.g. [1, all]")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    counts = []
    for value in values:
        count = cores if value == "all" else value
        try:
            check_threads(count)
        except LuodiError as e:
            raise LuodiError(f"{where}: {e}") from None
        if count not in counts:
            counts.append(count)
    return counts


def _inference_precision_reason(precision: str) -> str | None:
    """Why OpenVINO cannot compute in `precision` on this CPU (None: it can)."""
    from ..runtime_libraries import import_openvino
    from ..runtimes.openvino import check_precision

    try:
        check_precision(import_openvino().Core(), "CPU", precision)
    except LuodiError as e:
        return f"not applicable: {e}"
    return None


def _read_yaml(path: Path) -> dict:
    import yaml

    from ..inputs import read_text_file

    try:
        config = yaml.safe_load(read_text_file(path, "tune candidates file"))
    except yaml.YAMLError as e:
        raise LuodiError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    for key in ("reference", "builds", "workloads", "quality"):
        if not isinstance(config, dict) or key not in config:
            raise LuodiError(f"{path}: needs a {key!r} entry (see configs/tune.yaml)")
    for key in ("builds", "workloads", "quality", "speculation", "inference_precision", "speed"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise LuodiError(f"{path}: {key} must be a mapping (see configs/tune.yaml)")
    if not isinstance(config["reference"], str):
        raise LuodiError(f"{path}: reference must be a build's name")
    if not isinstance((config.get("speculation") or {}).get("targets", []), list):
        raise LuodiError(f"{path}: speculation targets must be a list of build names")
    if not isinstance((config["quality"] or {}).get("text"), str):
        raise LuodiError(f"{path}: quality needs a text entry, the held-out text file")
    return config


def _count(value, what: str, where: Path) -> int:
    """A positive integer setting from the candidates file, or a one-line error naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LuodiError(f"{where}: {what} must be a positive integer, got {value!r}")
    return value


def _workloads(config: dict, kinds: tuple, where: Path) -> dict[str, Workload]:
    chosen = {}
    for kind in kinds:
        entry = (config["workloads"] or {}).get(kind)
        if entry is None:
            raise LuodiError(f"{where}: workloads needs a {kind!r} entry")
        chosen[kind] = workload(entry) if isinstance(entry, str) else parse_workload(kind, entry, where)
    return chosen


def load_plan(path: Path | None = None, targets: list[str] | None = None, threads: list[int] | None = None,
              workload_kind: str = "both", repeat: int | None = None, eval_tokens: int | None = None) -> Plan:
    """The plan in `path` (default configs/tune.yaml), for `targets` (default every target its builds use),
    `threads` (default the file's), and the workloads of `workload_kind` (chat, long-prompt or both); `repeat`
    and `eval_tokens` override the file's speed runs and quality tokens."""
    from ..targets import target_names

    path = Path(path) if path else default_candidates()
    config = _read_yaml(path)
    builds = {name: _build(name, entry, path) for name, entry in (config["builds"] or {}).items()}
    if config["reference"] not in builds:
        raise LuodiError(f"{path}: the reference {config['reference']!r} is not one of its builds")
    reference = builds[config["reference"]]
    if reference.precision != "fp32":
        raise LuodiError(f"{path}: the reference build must be fp32, {reference.name} is {reference.precision}")
    available = target_names()
    wanted = targets or sorted({b.target for b in builds.values()})
    for target in wanted:
        if target not in available:
            raise LuodiError(f"unknown or not yet available target {target!r}; available: {', '.join(available)}")
    speculation = config.get("speculation") or {}
    draft = builds.get(speculation.get("draft")) if speculation else None
    if speculation and draft is None:
        raise LuodiError(f"{path}: speculation's draft {speculation.get('draft')!r} is not one of its builds")
    for name in speculation.get("targets", []) if speculation else []:
        if name not in builds:
            raise LuodiError(f"{path}: speculation target {name!r} is not one of its builds")
    counts = _thread_counts(threads or config.get("threads") or ["all"], path)
    precisions = config.get("inference_precision") or {}
    reasons = {}
    candidates = []
    for build in builds.values():
        if build.target not in wanted:
            continue
        drafts = [None] + ([draft] if draft and build.name in speculation.get("targets", []) else [])
        chosen = precisions.get(build.target) or [None]
        if not isinstance(chosen, list) or not all(isinstance(ip, str | None) for ip in chosen):
            raise LuodiError(f"{path}: inference_precision {build.target} must be a list, e.g. [f32, bf16]")
        for ip in chosen:
            if ip not in reasons:
                reasons[ip] = _inference_precision_reason(ip) if ip not in (None, "f32") else None
            candidates += [Candidate(build, ip, t, d, reasons[ip]) for d in drafts for t in counts]
    if not candidates:
        raise LuodiError(f"{path} has no build for the targets {', '.join(wanted)}")
    kinds = WORKLOAD_KINDS if workload_kind == "both" else (workload_kind,)
    q = config["quality"]
    quality = Quality(Path(q["text"]), eval_tokens or _count(q.get("max_tokens", 1024), "quality.max_tokens", path),
                      _count(q.get("window", 512), "quality.window", path), Path(q["calib"]) if q.get("calib") else None)
    if any(b.calib for b in builds.values()) and quality.calib is None:
        raise LuodiError(f"{path}: builds with calib: true need quality.calib, a calibration text file")
    return Plan(reference, candidates, _workloads(config, kinds, path),
                repeat or _count((config.get("speed") or {}).get("repeat", 3), "speed.repeat", path), quality, path)

