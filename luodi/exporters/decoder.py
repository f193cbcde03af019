"""The canonical decoder: one small PyTorch module that every supported family maps onto.

luodi traces this module, not the transformers model, so an export does not break when transformers
rewrites its modeling code; the transformers model stays the parity reference. Its interface is the
ONNX graph's: (input_ids, attention_mask, position_ids, past key/values) -> (logits, present key/values),
with the KV cache as explicit tensors [batch, kv_heads, past, head_dim] and present = concat(past, new).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..contract.manifest import ModelSpec


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, as Llama, Qwen2 and Phi-3 compute it (Gemma's (1 + w) is folded
    into the weight at load)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def softcap(x, cap: float):
    """tanh(x / cap) * cap: Gemma 2's soft-capping of attention scores and logits."""
    return torch.tanh(x / cap) * cap


def _norm(spec: ModelSpec) -> nn.Module:
    return RMSNorm(spec.hidden_size, spec.norm_eps) if spec.norm == "rms" else nn.LayerNorm(
        spec.hidden_size, eps=spec.norm_eps)


def _activation(name: str, x):
    if name == "silu":
        return F.silu(x)
    return F.gelu(x, approximate="tanh" if name == "gelu_tanh" else "none")


def apply_rotary(x, cos, sin):
    """Rotate-half rotary embedding on the first cos.shape[-1] channels of x [b, h, s, d]."""
    rot = cos.shape[-1]
    x_rot, x_pass = (x, None) if rot == x.shape[-1] else (x[..., :rot], x[..., rot:])
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2:]
    out = x_rot * cos + torch.cat([-x2, x1], dim=-1) * sin
    return out if x_pass is None else torch.cat([out, x_pass], dim=-1)


class Attention(nn.Module):
    """Multi-head / grouped-query attention over an explicit, concatenated KV cache."""

    def __init__(self, spec: ModelSpec, qkv_bias: bool, o_bias: bool):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
        self.q_proj = nn.Linear(spec.hidden_size, spec.num_heads * spec.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(spec.hidden_size, spec.num_kv_heads * spec.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(spec.hidden_size, spec.num_kv_heads * spec.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(spec.num_heads * spec.head_dim, spec.hidden_size, bias=o_bias)
        self.scale = spec.attention_scale or 1.0 / math.sqrt(spec.head_dim)
        self.softcap = spec.attn_softcap
        if spec.qk_norm:  # one RMSNorm over each head's channels, shared by the heads
            self.q_norm, self.k_norm = RMSNorm(spec.head_dim, spec.norm_eps), RMSNorm(spec.head_dim, spec.norm_eps)

    def _heads(self, proj, x, heads: int, norm):
        b, s, _ = x.shape
        h = proj(x).view(b, s, heads, self.head_dim)
        return (h if norm is None else norm(h)).transpose(1, 2)

    def forward(self, x, rotary, allowed, past_k, past_v):
        b, s, _ = x.shape
        q = self._heads(self.q_proj, x, self.num_heads, getattr(self, "q_norm", None))
        k = self._heads(self.k_proj, x, self.num_kv_heads, getattr(self, "k_norm", None))
        v = self._heads(self.v_proj, x, self.num_kv_heads, None)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
        groups = self.num_heads // self.num_kv_heads
        kk, vv = k, v
        if groups > 1:
            total = k.shape[2]
            kk = k[:, :, None].expand(b, self.num_kv_heads, groups, total, self.head_dim).reshape(
                b, self.num_heads, total, self.head_dim)
            vv = v[:, :, None].expand(b, self.num_kv_heads, groups, total, self.head_dim).reshape(
                b, self.num_heads, total, self.head_dim)
        scores = torch.matmul(q, kk.transpose(-1, -2)) * self.scale
        if self.softcap:
            scores = softcap(scores, self.softcap)
        scores = torch.where(allowed, scores, torch.finfo(scores.dtype).min)
        out = torch.matmul(torch.softmax(scores, dim=-1), vv)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)), k, v


class MLP(nn.Module):
    """down(act(gate(x)) * up(x)) for gated families, fc_out(act(fc_in(x))) otherwise."""

    def __init__(self, spec: ModelSpec, intermediate: int, bias: bool):
        super().__init__()
        self.activation, self.gated = spec.activation, spec.gated_mlp
        if self.gated:
            self.gate_proj = nn.Linear(spec.hidden_size, intermediate, bias=bias)
        self.up_proj = nn.Linear(spec.hidden_size, intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, spec.hidden_size, bias=bias)

    def forward(self, x):
        if self.gated:
            return self.down_proj(_activation(self.activation, self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(_activation(self.activation, self.up_proj(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)); with sandwich norms (Gemma) each
    branch's output is normalized too before the residual add."""

    def __init__(self, spec: ModelSpec, intermediate: int, qkv_bias: bool, o_bias: bool, mlp_bias: bool):
        super().__init__()
        self.input_norm = _norm(spec)
        self.attn = Attention(spec, qkv_bias, o_bias)
        self.post_attn_norm = _norm(spec)  # the MLP's input norm
        self.mlp = MLP(spec, intermediate, mlp_bias)
        if spec.sandwich_norms:
            self.attn_out_norm, self.mlp_out_norm = _norm(spec), _norm(spec)

    def forward(self, x, rotary, allowed, past_k, past_v):
        h, k, v = self.attn(self.input_norm(x), rotary, allowed, past_k, past_v)
        x = x + (self.attn_out_norm(h) if hasattr(self, "attn_out_norm") else h)
        h = self.mlp(self.post_attn_norm(x))
        return x + (self.mlp_out_norm(h) if hasattr(self, "mlp_out_norm") else h), k, v


class CanonicalDecoder(nn.Module):
    """The decoder luodi exports; see the module docstring for its interface."""

    def __init__(self, spec: ModelSpec, intermediate: int, *, qkv_bias=False, o_bias=False, mlp_bias=False,
                 inv_freq: torch.Tensor | None = None, rope_scaling: float = 1.0, local_rope: tuple | None = None):
        """`inv_freq` and `rope_scaling` make the rotary tables; `local_rope` (inv_freq, scaling), where given,
        makes the sliding layers' own (Gemma 3: another base)."""
        super().__init__()
        self.spec = spec
        if spec.tie_word_embeddings:  # one [hidden, vocab] matrix serves the embedding and the LM head
            self.lm_head_weight_t = nn.Parameter(torch.empty(spec.hidden_size, spec.vocab_size))
        else:
            self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
            self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.positions == "learned":
            self.embed_positions = nn.Embedding(spec.max_context, spec.hidden_size)
        else:
            self._rope_tables("", inv_freq, rope_scaling)
            if local_rope is not None:
                self._rope_tables("_local", *local_rope)
        self.layers = nn.ModuleList(
            Block(spec, intermediate, qkv_bias, o_bias, mlp_bias) for _ in range(spec.num_layers))
        self.final_norm = _norm(spec)

    def _rope_tables(self, suffix: str, inv_freq, scaling: float):
        """cos/sin of every position up to max_context, as transformers computes them (fp32)."""
        positions = torch.arange(self.spec.max_context, dtype=torch.float32, device=inv_freq.device)
        freqs = positions[:, None] * inv_freq.float()[None, :]
        self.register_buffer("cos_table" + suffix, freqs.cos() * float(scaling), persistent=False)
        self.register_buffer("sin_table" + suffix, freqs.sin() * float(scaling), persistent=False)

    def _embed(self, input_ids):
        if not self.spec.tie_word_embeddings:
            x = self.embed_tokens(input_ids)
        else:
            b, s = input_ids.shape
            x = self.lm_head_weight_t.index_select(1, input_ids.reshape(-1)).t().reshape(b, s, -1)
        if self.spec.embedding_scale != 1.0:  # the scale rounded to the model's dtype, as Gemma does
            x = x * torch.tensor(self.spec.embedding_scale, dtype=x.dtype)
        return x

    def _lm_head(self, x):
        logits = self.lm_head(x) if not self.spec.tie_word_embeddings else torch.matmul(x, self.lm_head_weight_t)
        return softcap(logits, self.spec.final_softcap) if self.spec.final_softcap else logits

    def _rotary(self, position_ids, suffix: str = ""):
        """cos and sin [batch, 1, seq, rotary_dim], built from their (equal) halves [batch, seq, rotary_dim/2]
        looked up in the tables (fused attention kernels take the tables themselves)."""
        cos = F.embedding(position_ids, getattr(self, "cos_table" + suffix))
        sin = F.embedding(position_ids, getattr(self, "sin_table" + suffix))
        return torch.cat([cos, cos], dim=-1)[:, None], torch.cat([sin, sin], dim=-1)[:, None]

    def forward(self, input_ids, attention_mask, position_ids, past_key_values):
        """Logits for every input position and the present KV cache (past + this step's keys/values)."""
        seq = input_ids.shape[1]
        total = attention_mask.shape[1]
        x = self._embed(input_ids)
        rotary = local_rotary = None
        if self.spec.positions == "learned":
            x = x + self.embed_positions(position_ids)
        else:
            rotary = self._rotary(position_ids)
            local_rotary = self._rotary(position_ids, "_local") if hasattr(self, "cos_table_local") else rotary
        # query i sits at cache slot past + i and sees slots <= its own that the mask keeps; in a sliding
        # layer also only the slots fewer than `window` back (transformers: kv_idx > q_idx - window)
        q_slot = torch.arange(seq, device=input_ids.device)[:, None] + (total - seq)
        k_slot = torch.arange(total, device=input_ids.device)[None, :]
        allowed = (k_slot <= q_slot)[None, None] & (attention_mask[:, None, None, :] > 0)
        window = self.spec.sliding_window
        local = allowed & ((q_slot - k_slot) < window)[None, None] if window else allowed
        presents = []
        for i, (layer, (past_k, past_v)) in enumerate(zip(self.layers, past_key_values)):
            sliding = self.spec.layer_window(i) is not None
            x, k, v = layer(x, local_rotary if sliding else rotary, local if sliding else allowed, past_k, past_v)
            presents.append((k, v))
        return self._lm_head(self.final_norm(x)), presents
