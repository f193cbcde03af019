"""In-place KV cache for ONNX Runtime: attention + rotary + KV concat -> com.microsoft GroupQueryAttention.

GroupQueryAttention writes this step's keys/values into the past buffer at each sequence's own length
(seqlens_k) instead of concatenating: when the runtime binds one fixed max-length buffer as both past
and present, a decode step writes one position and copies nothing. It also applies the rotary embedding
itself from the cos/sin tables (positions follow from seqlens_k), and the keys/values are never repeated
to the query heads. Run after pack_matmuls: a packed Q/K/V projection feeds the op whole, with no Split.

The graph's contract changes with it, and the manifest records that (`kv_cache: shared_buffer`): each
sequence's cache holds its tokens from slot 0 with no padding, attention_mask only gives each sequence's
length (its row sum) and the total length (its width), and a prompt with padding must be run one sequence
at a time (the ONNX Runtime backend does that). Matches the 3-D form attention_3d leaves; partial rotary
and head sizes GroupQueryAttention's CPU kernel rejects are left as they are. A sliding-window layer (its
bias also hides keys W or more positions back) becomes local_window_size = W; soft-capped scores
(Gemma 2) keep their cap as the op's softcap, which it applies, as transformers does, before masking.
"""

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from ..contract.kv import SHARED_BUFFER
from .base import RewritePass, scalar

MASK_INPUT = "attention_mask"


def _table(half: ir.Value) -> ir.Value | None:
    """T when half = Gather(T, position_ids) with T a constant [positions, rotary_dim / 2] table, else None."""
    gather = half.producer()
    if gather is None or gather.op_type != "Gather" or gather.attributes.get_int("axis", 0) != 0:
        return None
    table = gather.inputs[0]
    if table.const_value is None or table.shape is None or len(table.shape) != 2:
        return None
    return table


def _derives_from(value: ir.Value, source: ir.Value, limit: int = 64) -> bool:
    """Whether `value` is computed from the contents of `source` (not just its shape), looking at most
    `limit` values up."""
    seen, todo = set(), [value]
    while todo and len(seen) < limit:
        current = todo.pop()
        if current is source:
            return True
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        producer = current.producer()
        if producer is not None and producer.op_type != "Shape":
            todo.extend(producer.inputs)
    return False


def _window(bias: ir.Value, limit: int = 64) -> int | None:
    """The sliding window W when the attention bias hides keys W or more positions back (the canonical decoder's
    `(q_slot - k_slot) < W`, a Less against a constant), None when no Less is among its first `limit` inputs up;
    -1 when a Less compares with something that is not a constant (a mask this pass does not know)."""
    seen, todo = set(), [bias]
    while todo and len(seen) < limit:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        producer = current.producer()
        if producer is None or producer.op_type == "Shape":
            continue
        if producer.op_type == "Less":
            window = scalar(producer.inputs[1])
            return int(window) if isinstance(window, (int, np.integer)) and window >= 2 else -1
        todo.extend(producer.inputs)
    return None


def _packed(q: ir.Value, k: ir.Value, v: ir.Value) -> list:
    """[qkv, None, None] when q, k, v are the three parts of one Split (pack_matmuls' packed projection, which
    GroupQueryAttention takes whole), else [q, k, v]."""
    split = q.producer()
    if split is not None and split.op_type == "Split" and list(split.outputs) == [q, k, v] and \
            split.attributes.get_int("axis", 0) in (-1, 2):
        return [split.inputs[0], None, None]
    return [q, k, v]


class _GroupQueryAttention(pattern.RewriteRuleClassBase):
    def __init__(self, rotary: bool, mask: ir.Value):
        super().__init__("GroupQueryAttention" + ("Rotary" if rotary else ""))
        self.rotary, self.mask = rotary, mask

    def pattern(self, op, q, k, v, cos, sin, bias, past_k, past_v):
        if self.rotary:
            q = op.RotaryEmbedding(q, cos, sin, _allow_other_attributes=True, _outputs=["q_rot"])
            k = op.RotaryEmbedding(k, cos, sin, _allow_other_attributes=True)
        return op.Attention(q, k, v, bias, past_k, past_v, _allow_other_attributes=True, _outputs=["y", "pk", "pv"])

    def check(self, context, y, bias, cos=None, sin=None, q_rot=None, **_):
        result = pattern.MatchResult()
        if not _derives_from(bias, self.mask):
            return result.fail("the attention bias is not computed from attention_mask")
        attrs = y.producer().attributes
        heads, kv_heads = attrs.get_int("q_num_heads", 0), attrs.get_int("kv_num_heads", 0)
        if not heads or not kv_heads or y.shape is None or not isinstance(y.shape[-1], int):
            return result.fail("not the 3-D Attention form with known head counts")
        head_dim = y.shape[-1] // heads
        if attrs.get_int("is_causal", 0) or head_dim % 8:
            return result.fail("attention options or head size GroupQueryAttention does not take")
        if _window(bias) == -1:
            return result.fail("the attention bias hides keys by a rule other than a constant window")
        if not self.rotary:
            return result
        if q_rot.producer().attributes.get_int("interleaved", 0) or "rotary_embedding_dim" in \
                q_rot.producer().attributes:
            return result.fail("interleaved or partial rotary")
        tables = [_table(cos), _table(sin)]
        if any(t is None or t.shape[1] * 2 != head_dim for t in tables):
            return result.fail("cos/sin are not full-width tables looked up by position")
        if head_dim % 16 or (head_dim // 2) % 8:
            return result.fail("head size GroupQueryAttention's rotary does not take")
        return result

    def rewrite(self, op, q, k, v, bias, past_k, past_v, y, cos=None, sin=None, **_):
        attrs = y.producer().attributes
        heads, kv_heads = attrs.get_int("q_num_heads"), attrs.get_int("kv_num_heads")
        scale = attrs.get_float("scale", 1.0 / float(np.sqrt(y.shape[-1] // heads)))
        # a query sees keys fewer than W positions back: W keys with its own, which is what GroupQueryAttention's
        # local_window_size counts in onnxruntime 1.32 (tests/passes/test_sliding_window.py probes it); soft-capping
        # comes before the mask in both
        window = _window(bias)
        extra = {"local_window_size": window} if window else {}
        if attrs.get_float("softcap", 0.0):
            extra["softcap"] = attrs.get_float("softcap")
        one = op.Constant(value=ir.tensor(np.array([1], dtype=np.int64)))
        seqlens_k = op.Cast(op.Sub(op.ReduceSum(self.mask, one, keepdims=0), one), to=ir.DataType.INT32)
        total = op.Cast(op.Gather(op.Shape(self.mask), op.Constant(value=ir.tensor(np.array(1, dtype=np.int64)))),
                        to=ir.DataType.INT32)
        inputs = [*_packed(q, k, v), past_k, past_v, seqlens_k, total]
        if self.rotary:
            inputs += [_table(cos), _table(sin)]
        return op.GroupQueryAttention(*inputs, num_heads=heads, kv_num_heads=kv_heads, scale=scale,
                                      do_rotary=int(self.rotary), rotary_interleaved=0, _domain="com.microsoft",
                                      _outputs=3, **extra)


class InplaceKvCache(RewritePass):
    name = "inplace_kv_cache"
    description = "Attention + rotary + KV concat -> GroupQueryAttention over a shared max-length KV buffer"
    kv_layout = SHARED_BUFFER.name

    def apply(self, model: ir.Model) -> int:
        self.mask = next((v for v in model.graph.inputs if v.name == MASK_INPUT), None)
        if self.mask is None:
            return 0
        count = super().apply(model)
        if count:
            model.opset_imports.setdefault("com.microsoft", 1)
        return count

    def rules(self):
        return [_GroupQueryAttention.rule(rotary=True, mask=self.mask),
                _GroupQueryAttention.rule(rotary=False, mask=self.mask)]
