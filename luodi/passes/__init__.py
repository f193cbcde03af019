"""Graph passes over the exported ONNX model, one pass per file, run in the order a target's config
(configs/targets/<target>.yaml) lists them; `luodi export --passes` edits that list."""

from dataclasses import dataclass

import onnx_ir as ir

from ..contract.kv import CONCAT
from ..errors import LuodiError
from .additive_attention_mask import AdditiveAttentionMask
from .attention_3d import Attention3d
from ..quantization.blocked_dequantize import WeightsInt4, WeightsInt8
from .cleanup import Cleanup
from .embedding_gather import EmbeddingGather
from .embedding_input import EmbeddingInput
from .embedding_int8 import EmbeddingInt8
from .embedding_rows import EmbeddingRows
from .fuse_attention import FuseAttention
from .fuse_gelu import FuseGelu
from .fuse_rms_norm import FuseRmsNorm
from .fuse_rotary import FuseRotary
from .fuse_silu import FuseSilu
from .fuse_skip_norm import FuseSkipNorm
from .inplace_kv_cache import InplaceKvCache
from .kv_cache_scatter import KvCacheScatter
from .last_token_logits import LastTokenLogits
from .lm_head_view import LmHeadView
from .pack_matmuls import PackMatMuls
from .rms_normalization import RmsNormalization

PASSES = {p.name: p for p in (Cleanup, EmbeddingGather, FuseRmsNorm, FuseSkipNorm, FuseGelu, FuseSilu, FuseRotary,
                               FuseAttention, Attention3d, PackMatMuls, InplaceKvCache, LastTokenLogits,
                               LmHeadView, AdditiveAttentionMask, EmbeddingRows, RmsNormalization,
                               KvCacheScatter, EmbeddingInt8, EmbeddingInput, WeightsInt4, WeightsInt8)}


def resolve_pipeline(default: list, edit: str | None) -> list:
    """The pass list after an edit: 'a,b' replaces it; '-a' drops a pass, '+a' appends one (comma-separated)."""
    names = list(default)
    if not edit:
        return names
    items = [i.strip() for i in edit.split(",") if i.strip()]
    if all(i[0] not in "+-" for i in items):
        names = items
    else:
        for item in items:
            op, name = item[0], item[1:]
            if op == "-" and name in names:
                names.remove(name)
            elif op == "+" and name not in names:
                names.append(name)
            elif op not in "+-":
                raise LuodiError(f"--passes: mix of plain and +/- entries in {edit!r}")
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise LuodiError(f"unknown pass(es) {', '.join(unknown)}; available: {', '.join(PASSES)}")
    return names


@dataclass(frozen=True)
class PipelineResult:
    """What a pass list did: each pass's match count (a pass that runs again: name#2, name#3, ...) and the
    graph's KV-cache layout, as made by the last pass that made one (else the traced graph's, concat)."""

    counts: dict[str, int]
    kv_layout: str = CONCAT.name


def run_passes(model, names: list[str]) -> PipelineResult:
    """Apply the named passes to an onnx_ir.Model in place, in order (each checks its own post-conditions)."""
    counts, layout = {}, CONCAT.name
    for name in resolve_pipeline(names, None):
        graph_pass = PASSES[name]()
        try:
            graph_pass(model)
        except ir.passes.PostconditionError as e:
            raise LuodiError(str(e.__cause__ or e)) from None
        key, n = name, 1
        while key in counts:
            n += 1
            key = f"{name}#{n}"
        counts[key] = graph_pass.count
        if graph_pass.kv_layout and graph_pass.count:
            layout = graph_pass.kv_layout
    return PipelineResult(counts, layout)
