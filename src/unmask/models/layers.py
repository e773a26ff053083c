"""Transformer building blocks shared by the LLaDA and Dream families.

Every layer works on a subset of canvas rows: it projects Q/K/V for those rows,
writes their K/V into a store that holds the whole canvas, and lets them attend
to every stored key. A full forward is the same call with all rows.
"""

from __future__ import annotations

import functools
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model_config import ModelConfig
from .scratch import Scratch


# In float32 on CPU (MKL's GEMM), a product over a subset of rows gives the same bits as those rows
# of the product over all rows once the subset has 16 rows or more (one row or a few take another
# kernel), and so does a product over a subset of the weight's rows (output columns); 32 leaves a
# margin. Not so for bfloat16 on CPU (oneDNN: model-sized products differ in the last bit), and other
# devices are not checked: there every row and column is projected together. Because the premise is
# a property of the BLAS library and the processor, it is also probed once per weight shape on the
# machine that runs (`_subset_products_agree`); where the probe disagrees, every row is projected.
SUBSET_MIN_ROWS = 32


def subset_rows_exact(device: torch.device, dtype: torch.dtype, rows: int, weight_shape: tuple[int, int]) -> bool:
    """Whether projecting `rows` rows (or some output columns) alone through a weight of
    `weight_shape` [out, in] reproduces the full product's bits."""
    if device.type != "cpu" or dtype != torch.float32 or rows < SUBSET_MIN_ROWS:
        return False
    return _subset_products_agree(int(weight_shape[0]), int(weight_shape[1]))


@functools.lru_cache(maxsize=64)
def _subset_products_agree(out_features: int, in_features: int) -> bool:
    """A machine fact, computed once per shape: on random float32 data of this shape, do row spans of
    SUBSET_MIN_ROWS and more, and a subset of the weight's rows, give the full product's bits?"""
    g = torch.Generator().manual_seed(0)
    total = 4 * SUBSET_MIN_ROWS + 45
    x = torch.randn(total, in_features, generator=g)
    weight = torch.randn(out_features, in_features, generator=g) * in_features**-0.5
    with torch.inference_mode():
        full = torch.mm(x, weight.t())
        for rows in (SUBSET_MIN_ROWS, SUBSET_MIN_ROWS + 7, 2 * SUBSET_MIN_ROWS + 3):
            for start in (0, 5, total - rows):
                if not torch.equal(torch.mm(x[start : start + rows], weight.t()), full[start : start + rows]):
                    return False
        half = out_features // 2
        return torch.equal(torch.mm(x, weight[half:].t()), full[:, half:]) and torch.equal(
            torch.mm(x[3 : 3 + SUBSET_MIN_ROWS], weight[:half].t()), full[3 : 3 + SUBSET_MIN_ROWS, :half]
        )


class KVSlot(Protocol):
    """One layer's key/value storage for the canvas (see `unmask.engine.kv_store`)."""

    def write(self, rows, k: Tensor, v: Tensor, q: Tensor | None = None) -> tuple[Tensor, Tensor]: ...


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back, then scaled (LLaDA and Qwen2 agree on this order)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # torch's rms_norm is bit-identical to x * rsqrt(mean(x^2) + eps) and one kernel cheaper.
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # No casts to round at: the weight multiplies inside the same call (same product, one call less).
            return F.rms_norm(x, (x.shape[-1],), self.weight, eps=self.eps)
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


class RotaryTable(nn.Module):
    """Precomputed cos/sin for NeoX-style (rotate_half) rotary embeddings.

    The sin table is stored signed (first half negated), so that `rotate_half(x) * sin` is
    `roll(x, half) * signed_sin`: one roll instead of slicing, negating and concatenating.

    LLaDA and Dream keep float32 tables (built in float64) and rotate in float32. With
    `in_model_dtype` (LLaDA-V, whose LM is LLaMA-style transformers code) the tables are built in
    float32 as that code builds them, follow the module's dtype, and `apply_rotary` rotates in
    that dtype, as the official code casts cos/sin to the activations' dtype.
    """

    def __init__(self, head_dim: int, theta: float, max_position: int, in_model_dtype: bool = False):
        super().__init__()
        self.in_model_dtype = in_model_dtype
        if in_model_dtype:
            inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
            angles = torch.outer(torch.arange(max_position, dtype=torch.int64).float(), inv_freq)
        else:
            inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
            angles = torch.outer(torch.arange(max_position, dtype=torch.float64), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        sign = torch.ones(head_dim, dtype=angles.dtype)
        sign[: head_dim // 2] = -1
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", (angles.sin() * sign).float(), persistent=False)

    def _apply(self, fn, recurse=True):
        """Moves follow the module; dtype casts only with `in_model_dtype` (else tables stay float32)."""
        super()._apply(fn, recurse)
        if not self.in_model_dtype:
            self.cos, self.sin = self.cos.float(), self.sin.float()
        return self

    def lookup(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos/signed sin shaped [B, 1, R, D] for position ids [B, R] (the pair `apply_rotary` takes)."""
        if positions.numel() and int(positions.max()) >= self.cos.shape[0]:
            raise ValueError(f"position {int(positions.max())} exceeds the model's maximum of {self.cos.shape[0]}")
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, out: Tensor | None = None) -> Tensor:
    """x * cos + rotate_half(x) * sin, with `sin` the signed table of `RotaryTable`: in float32 for
    float32 tables, else in the tables' dtype with the official rounding order (LLaDA-V).

    `out` (float32 x only, no gradient): a contiguous tensor of x's shape to write the result into.
    """
    if cos.dtype != torch.float32:
        return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin
    xf = x if x.dtype == torch.float32 else x.float()
    if torch.is_grad_enabled():
        return torch.addcmul(xf * cos, xf.roll(xf.shape[-1] // 2, dims=-1), sin).to(x.dtype)
    # rotate_half(x) * sin, half by half: each element gets the same product and sum as with the rolled
    # copy (same bits), without building the copy.
    half = xf.shape[-1] // 2
    rotated = torch.mul(xf, cos, out=out) if out is not None and x.dtype == torch.float32 else xf * cos
    rotated[..., :half].addcmul_(xf[..., half:], sin[..., :half])
    rotated[..., half:].addcmul_(xf[..., :half], sin[..., half:])
    return rotated if x.dtype == torch.float32 else rotated.to(x.dtype)


def _project(x: Tensor, weight: Tensor, bias: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """`F.linear(x, weight, bias)` for [B, R, in] rows; without a bias, the one matrix product that
    `F.linear` would run (same kernel, same operands, same bits) without its wrappers' calls, into
    `out` ([B*R, out_features], contiguous) when given."""
    if bias is not None or x.dim() != 3 or torch.is_grad_enabled():
        return F.linear(x, weight, bias)
    b, r, d = x.shape
    return torch.mm(x.reshape(b * r, d), weight.t(), out=out).view(b, r, weight.shape[0])


class DecoderLayer(nn.Module):
    """Pre-norm attention + SwiGLU block, with its pieces exposed for cache methods."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, cfg.num_heads * hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.num_heads * hd, d, bias=False)
        self.ffn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.gate_proj = nn.Linear(d, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(d, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, d, bias=False)
        # "sdpa" (fused kernel) or "eager" (explicit softmax(QK^T)V, the transformers spelling).
        self.attn_implementation = "sdpa"
        self._stacks: dict[str, tuple[tuple, Tensor, Tensor | None]] = {}

    # -- stacked projections (inference) -------------------------------------------
    def _stacked(self, name: str, linears: tuple[nn.Linear, ...]) -> tuple[Tensor, Tensor | None]:
        """The linears' weights (and biases) as one tensor, so one matmul replaces several.

        Small row counts make every matmul call expensive relative to its work, so at inference
        q/k/v and gate/up each run as one call. The linears' parameters are re-pointed to slices of
        the stacked tensor, so it costs no extra memory (an 8B model does not grow by the size of
        its projections) and in-place weight updates reach it directly. It is rebuilt only when a
        parameter is replaced (its storage changes).
        """
        cached = self._stacks.get(name)
        if cached is not None and cached[0] == tuple(lin.weight.data_ptr() for lin in linears):
            return cached[1], cached[2]
        # Outside inference mode, so the re-pointed parameters stay usable for training later.
        with torch.inference_mode(False), torch.no_grad():
            weight = torch.cat([lin.weight for lin in linears])
            bias = torch.cat([lin.bias for lin in linears]) if linears[0].bias is not None else None
            start = 0
            for lin in linears:
                end = start + lin.weight.shape[0]
                lin.weight = nn.Parameter(weight[start:end], requires_grad=lin.weight.requires_grad)
                if bias is not None:
                    lin.bias = nn.Parameter(bias[start:end], requires_grad=lin.bias.requires_grad)
                start = end
        self._stacks[name] = (tuple(lin.weight.data_ptr() for lin in linears), weight, bias)
        return weight, bias

    def _use_stacks(self) -> bool:
        """Stack only where no gradient flows to the weights (training keeps the plain graph)."""
        return not (torch.is_grad_enabled() and self.q_proj.weight.requires_grad)

    def qkv(self, normed: Tensor, cos: Tensor, sin: Tensor, scratch: Scratch | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated queries [B,H,R,D], rotated keys and values [B,Hkv,R,D] of the given rows.

        With `scratch` they are views of its buffers, valid until the next layer's call: callers copy
        what they keep (the K/V store does).
        """
        if not self._use_stacks():
            return self.query(normed, cos, sin), self.key(normed, cos, sin), self.value(normed)
        weight, bias = self._stacked("qkv", (self.q_proj, self.k_proj, self.v_proj))
        b, r, _ = normed.shape
        h, hkv = self.num_heads, self.num_kv_heads
        out = rotated = None
        if scratch is not None and bias is None:
            out = scratch.take("qkv", (b * r, weight.shape[0]), normed)
            rotated = scratch.take("rotated", (b, r, h + hkv, self.head_dim), normed)
        qkv = _project(normed, weight, bias, out=out).view(b, r, h + 2 * hkv, self.head_dim)
        # One rotation for queries and keys together, in the [B, R, heads, D] layout.
        qk = apply_rotary(qkv[:, :, : h + hkv], cos.transpose(1, 2), sin.transpose(1, 2), out=rotated)
        return qk[:, :, :h].transpose(1, 2), qk[:, :, h:].transpose(1, 2), qkv[:, :, h + hkv :].transpose(1, 2)

    def kept_qkv(
        self, normed: Tensor, cos: Tensor, sin: Tensor, keep: slice, scratch: Scratch | None = None
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """Rotated keys and values of every row and queries of the `keep` rows only (a last layer's
        other queries feed nothing); None where that would not give `qkv`'s bits (a bias, too few
        kept rows, not float32 on CPU: `subset_rows_exact`), so the caller projects every query."""
        if not self._use_stacks():
            return None
        weight, bias = self._stacked("qkv", (self.q_proj, self.k_proj, self.v_proj))
        kept = normed[:, keep]
        if bias is not None or not subset_rows_exact(normed.device, normed.dtype, kept.shape[1], weight.shape):
            return None
        b, r, _ = normed.shape
        h, hkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        out = rotated = None
        if scratch is not None:
            out = scratch.take("qkv", (b * r, 2 * hkv * hd), normed)
            rotated = scratch.take("rotated", (b, r, hkv, hd), normed)
        # The key/value rows and the query rows of the stacked weight: each output column is the same
        # product as in the stacked one.
        kv = _project(normed, weight[h * hd :], out=out).view(b, r, 2 * hkv, hd)
        cos_rows, sin_rows = cos.transpose(1, 2), sin.transpose(1, 2)
        k = apply_rotary(kv[:, :, :hkv], cos_rows, sin_rows, out=rotated)
        q = _project(kept, weight[: h * hd]).view(b, kept.shape[1], h, hd)
        q = apply_rotary(q, cos_rows[:, keep], sin_rows[:, keep])
        return q.transpose(1, 2), k.transpose(1, 2), kv[:, :, hkv:].transpose(1, 2)

    # -- pieces -----------------------------------------------------------------
    def _heads(self, x: Tensor, n: int) -> Tensor:
        b, r, _ = x.shape
        return x.view(b, r, n, self.head_dim).transpose(1, 2)

    def query(self, normed: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        return apply_rotary(self._heads(self.q_proj(normed), self.num_heads), cos, sin)

    def key(self, normed: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        return apply_rotary(self._heads(self.k_proj(normed), self.num_kv_heads), cos, sin)

    def value(self, normed: Tensor) -> Tensor:
        return self._heads(self.v_proj(normed), self.num_kv_heads)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
        """Attention of q [B,H,R,D] over all keys; returns the attention branch output [B,R,d]."""
        if self.attn_implementation == "eager":
            if self.num_kv_heads != self.num_heads:
                v = v.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
            out = torch.matmul(self.attention_probs(q, k, key_mask).to(v.dtype), v)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=key_mask, enable_gqa=self.num_kv_heads != self.num_heads
            )
        b, _, r, _ = out.shape
        return _project(out.transpose(1, 2).reshape(b, r, -1), self.o_proj.weight)

    def attention_probs(self, q: Tensor, k: Tensor, key_mask: Tensor | None) -> Tensor:
        """Softmax attention [B,H,P,T] in float32 for the given queries only."""
        if self.num_kv_heads != self.num_heads:
            k = k.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * self.head_dim**-0.5
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask, float("-inf"))
        return scores.softmax(dim=-1)

    def ffn(self, h: Tensor, scratch: Scratch | None = None) -> Tensor:
        """FFN branch output (before the residual add); `scratch` holds the gate/up product."""
        n = self.ffn_norm(h)
        if not self._use_stacks():
            return self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))
        weight, _ = self._stacked("gate_up", (self.gate_proj, self.up_proj))
        b, r, _ = n.shape
        out = scratch.take("gate_up", (b * r, weight.shape[0]), n) if scratch is not None else None
        gate, up = _project(n, weight, out=out).chunk(2, dim=-1)
        if torch.is_grad_enabled():
            return _project(F.silu(gate) * up, self.down_proj.weight)
        # In place in the gate half (a temporary): the same kernels and bits, two activations less to allocate.
        return _project(F.silu(gate, inplace=True).mul_(up), self.down_proj.weight)

    # -- the rows primitive -------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        kv: KVSlot | None = None,
        rows=None,
        key_mask: Tensor | None = None,
        prob_index: Tensor | None = None,
        keep: slice | Tensor | None = None,
        qkv: tuple[Tensor, Tensor, Tensor] | None = None,
        scratch: Scratch | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Run rows `x` [B,R,d]; with `kv`, store their K/V at `rows` and attend to the whole store.

        `prob_index` [B,P] selects computed rows whose attention probabilities are returned.
        `keep` (a slice or [B,N] indices into the rows) limits the output to those rows: every row's
        K/V is still stored, but only the kept rows attend and run the FFN (a last layer whose other
        rows feed nothing).
        `qkv`: the rows' rotated queries, keys and values when the caller already has them (what
        `qkv(attn_norm(x))` would return; `engine.layer0` keeps layer 0's across steps).
        `scratch`: buffers for the large temporaries (`models.scratch`).
        """
        queries_kept = False
        if qkv is None:
            normed = self.attn_norm(x)
            # Only the kept rows' queries are needed, unless probabilities or a query store ask for others.
            if isinstance(keep, slice) and prob_index is None and getattr(kv, "q", None) is None:
                qkv = self.kept_qkv(normed, cos, sin, keep, scratch)
                queries_kept = qkv is not None
            if qkv is None:
                qkv = self.qkv(normed, cos, sin, scratch)
        q, k, v = qkv
        if kv is not None:
            k, v = kv.write(rows, k, v, None if queries_kept else q)
        probs = None
        if prob_index is not None:
            idx = prob_index[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[-1])
            probs = self.attention_probs(torch.gather(q, 2, idx), k, key_mask)
        if isinstance(keep, slice):
            x, q = x[:, keep], (q if queries_kept else q[:, :, keep])
        elif keep is not None:
            x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            q = torch.gather(q, 2, keep[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[-1]))
        h = x + self.attend(q, k, v, key_mask)
        return h + self.ffn(h, scratch), probs
