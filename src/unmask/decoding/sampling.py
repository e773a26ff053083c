"""Candidate tokens and their confidences from logits (LLaDA's Gumbel rule and Dream's samplers)."""

from __future__ import annotations

import torch
from torch import Tensor

LLADA_ALGS = ("low_confidence", "random")
DREAM_ALGS = ("maskgit_plus", "topk_margin", "entropy", "origin")
ALGS = LLADA_ALGS + DREAM_ALGS


CONFIDENCE_DTYPES = ("auto", "logits", "float32", "float64")


def llada_candidates(
    logits: Tensor,
    temperature: float,
    alg: str,
    generator: torch.Generator | None,
    precision: str = "float64",
    hidden_ids: tuple[int, ...] = (),
) -> tuple[Tensor, Tensor]:
    """x0 = argmax of Gumbel-perturbed logits (float64); confidence = softmax prob of x0, or uniform for `random`.

    `precision` is the dtype of the softmax: "logits" (the logits' own dtype, as LLaDA's and
    dLLM-Cache's loops do: near-certain tokens tie at exactly 1.0 and the top-k order decides),
    "float32" or "float64" (Fast-dLLM's loops). Confidences come back as float64 either way; the
    widening is exact, so ties stay ties. `hidden_ids` get a -inf logit in the softmax only, after
    x0 is chosen (LLaDA's confidence_eos_eot_inf): their candidates score 0, the others renormalise.
    """
    logits64 = logits.double()  # exact for any float dtype, so the argmax is unchanged (and bf16 argmax is slow)
    if temperature > 0:
        u = torch.rand(logits64.shape, dtype=torch.float64, device=logits.device, generator=generator)
        x0 = _argmax(logits64.exp() / (-torch.log(u)) ** temperature)
    else:
        x0 = _argmax(logits64)
    if alg == "random":
        conf = torch.rand(x0.shape, dtype=torch.float64, device=logits.device, generator=generator)
    else:
        source = logits64 if precision == "float64" else logits.float() if precision == "float32" else logits
        if hidden_ids:
            source = source.clone()
            source[..., list(hidden_ids)] = float("-inf")
        probs = torch.softmax(source, dim=-1)
        conf = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1).double()
    return x0, conf


def _argmax(x: Tensor) -> Tensor:
    """Index of the last dim's maximum, first on ties and NaN as the maximum, as `argmax` gives it:
    `max` returns the same index and is about twice as fast on CPU."""
    return torch.max(x, dim=-1).indices


def _filter_top_p(logits: Tensor, top_p: float) -> Tensor:
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    drop = cum > top_p
    drop[..., 1:] = drop[..., :-1].clone()
    drop[..., 0] = False
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def _filter_top_k(logits: Tensor, top_k: int) -> Tensor:
    kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def dream_candidates(
    logits: Tensor, temperature: float, top_p: float | None, top_k: int | None, alg: str, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Dream's sampler: temperature, top-p/top-k, then confidence by `alg` (float32 probabilities as Dream does)."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = _filter_top_p(logits, top_p)
    if top_k is not None:
        logits = _filter_top_k(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        flat = probs.reshape(-1, probs.shape[-1])
        x0 = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
    else:
        x0 = _argmax(probs)
    if alg == "topk_margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        conf = top2[..., 0] - top2[..., 1]
    elif alg == "entropy":
        conf = (probs * torch.log(probs + 1e-10)).sum(-1)  # Dream's negative entropy, its epsilon included
    else:  # maskgit_plus, origin
        conf = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    return x0, conf.double()
