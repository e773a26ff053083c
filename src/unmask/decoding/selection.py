"""Which masked positions to commit this step: scheduled top-k, threshold, or factor rule.

All selectors take dense confidences [B, T] (float64) where non-candidates are -inf,
and return a [B, T] bool commit mask. A sequence with any candidate commits at least one.
"""

from __future__ import annotations

import torch
from torch import Tensor


def select_top_k(conf: Tensor, k: Tensor) -> Tensor:
    """Commit the k[b] most confident candidates of each sequence.

    Each row is ranked with its own k, as the reference loops do: the order torch.topk gives
    exact ties depends on k, and low-precision confidences tie often.
    """
    out = torch.zeros_like(conf, dtype=torch.bool)
    counts = k.tolist()
    if not counts or max(counts) == 0:
        return out
    if len(set(counts)) == 1:
        top = torch.topk(conf, counts[0], dim=-1)
        return out.scatter_(1, top.indices, torch.isfinite(top.values))
    for b, n in enumerate(counts):
        if n > 0:
            top = torch.topk(conf[b], n)
            out[b, top.indices] = torch.isfinite(top.values)
    return out


def select_sampled(conf: Tensor, k: Tensor, alg_temp: float, generator: torch.Generator | None) -> Tensor:
    """Dream's alg_temp > 0: draw k positions from softmax(confidence / alg_temp) without replacement."""
    out = torch.zeros_like(conf, dtype=torch.bool)
    weights = torch.softmax(conf / alg_temp, dim=-1).float()
    for b in range(conf.shape[0]):
        n = min(int(k[b]), int(torch.isfinite(conf[b]).sum()))
        if n > 0:
            out[b, torch.multinomial(weights[b], n, generator=generator)] = True
    return out


def _with_best(conf: Tensor, commit: Tensor) -> Tensor:
    """Always add each sequence's most confident candidate (so every step makes progress)."""
    has = torch.isfinite(conf).any(-1, keepdim=True)
    best = torch.zeros_like(commit).scatter_(1, conf.argmax(-1, keepdim=True), True) & has
    return commit | best


def select_threshold(conf: Tensor, tau: float) -> Tensor:
    """Fast-dLLM threshold rule: every candidate with confidence >= tau, and at least the best one."""
    return _with_best(conf, conf >= tau)


def select_factor(conf: Tensor, factor: float) -> Tensor:
    """Fast-dLLM factor rule: the largest n with (n + 1) * (1 - c_n) < factor over sorted confidences."""
    values, order = torch.sort(conf, dim=-1, descending=True)
    n = torch.arange(1, conf.shape[-1] + 1, device=conf.device, dtype=conf.dtype)
    ok = ((n + 1) * (1 - values) < factor) & torch.isfinite(values)
    # The committed prefix ends at the last sorted index where the rule still holds.
    count = torch.where(ok, n, torch.zeros_like(n)).max(dim=-1).values.long()
    keep = torch.arange(conf.shape[-1], device=conf.device) < count.unsqueeze(1)
    commit = torch.zeros_like(conf, dtype=torch.bool).scatter_(1, order, keep)
    return _with_best(conf, commit)
