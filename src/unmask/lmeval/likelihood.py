"""Monte-Carlo log-likelihood of a continuation under a masked diffusion model (LLaDA paper, B.5).

A masked diffusion model gives no exact likelihood; its training loss is an upper bound on the
negative log-likelihood. LLaDA's evaluation estimates log p(target | prefix) with that bound,
following its `get_log_likelihood.py` / `eval_llada.py`:

- each Monte-Carlo sample masks `l` of the L target tokens (the prefix is never masked),
  the positions drawn uniformly without replacement;
- within a mini-batch of b samples the mask counts are stratified: a random k in [1, L], then
  b counts spread evenly from k over one period of L (rounded, wrapped into [1, L]);
- a sample's loss is the cross-entropy of the masked target tokens, weighted by L / l
  (one over the masked share);
- the estimate is minus the mean per-sample loss over `mc_num` samples (mc_num / b mini-batches).

Unsupervised classifier-free guidance (`cfg_scale`) runs the same masked batch a second time with
the prefix masked too and mixes the logits as LLaDA's code does. `greedy_matches` is LLaDA's
`is_check_greedy` test: reveal the target one most-confident position at a time and compare.

Randomness comes only from the `torch.Generator` passed in (masks are drawn on the CPU), so an
estimate depends on its seed and not on the device or on what ran before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.model import DiffusionLM


def mask_counts(target_len: int, batch: int, generator: torch.Generator) -> Tensor:
    """How many target tokens each of `batch` samples masks: stratified over [1, target_len]."""
    if target_len < 1:
        raise ValueError("the continuation has no tokens to score")
    start = int(torch.randint(1, target_len + 1, (), generator=generator))
    counts = torch.round(torch.linspace(float(start), start + (batch - 1) * (target_len / batch), steps=batch)).long()
    return (counts - 1) % target_len + 1


def target_masks(counts: Tensor, target_len: int, generator: torch.Generator) -> Tensor:
    """[batch, target_len] bool: row i masks counts[i] positions chosen uniformly at random."""
    first = torch.arange(target_len).unsqueeze(0) < counts.unsqueeze(1)
    return torch.stack([row[torch.randperm(target_len, generator=generator)] for row in first])


def target_logits(module: DiffusionLM, ids: Tensor, start: int) -> Tensor:
    """Logits [B, T - start, V] for positions start.. of full sequences `ids` [B, T].

    A full bidirectional forward, with the LM head applied only to the rows that predict the
    target (the same numbers as `module(ids)[:, start:]`, without the prefix's vocabulary rows).
    """
    shift = 1 if module.cfg.shift_logits else 0
    if start - shift < 0:
        raise ValueError("a Dream-style model needs at least one prefix token before the target")
    b, t = ids.shape
    cos, sin = module.rotary.lookup(torch.arange(t, device=ids.device).expand(b, t))
    h = module.embed(ids)
    for layer in module.layers:
        h, _ = layer(h, cos, sin, key_mask=None)
    return module.head(h[:, start - shift : t - shift])


def guided_logits(module: DiffusionLM, ids: Tensor, start: int, mask_id: int, cfg_scale: float) -> Tensor:
    """Target logits, with unsupervised classifier-free guidance when cfg_scale > 0."""
    if cfg_scale <= 0:
        return target_logits(module, ids, start)
    unconditional = ids.clone()
    unconditional[:, :start] = mask_id
    both = target_logits(module, torch.cat([ids, unconditional]), start)
    cond, uncond = both.chunk(2, dim=0)
    return uncond + (cfg_scale + 1) * (cond - uncond)


@torch.inference_mode()
def mc_loglikelihood(
    module: DiffusionLM,
    prefix: list[int],
    target: list[int],
    mask_id: int,
    generator: torch.Generator,
    mc_num: int = 128,
    batch_size: int = 32,
    cfg_scale: float = 0.0,
) -> float:
    """LLaDA's Monte-Carlo estimate of log p(target | prefix) (see the module docstring)."""
    if mc_num < 1 or batch_size < 1 or mc_num % batch_size:
        raise ValueError(f"mc_num={mc_num} must be a positive multiple of mc_batch_size={batch_size}")
    device = module.embed.weight.device
    start, length = len(prefix), len(target)
    seq = torch.tensor(prefix + target, device=device).unsqueeze(0).expand(batch_size, -1)
    gold = seq[:, start:]
    losses = []
    for _ in range(mc_num // batch_size):
        counts = mask_counts(length, batch_size, generator)
        masked = target_masks(counts, length, generator).to(device)
        noisy = seq.clone()
        noisy[:, start:] = torch.where(masked, torch.full_like(gold, mask_id), gold)
        logits = guided_logits(module, noisy, start, mask_id, cfg_scale)
        weight = (counts.to(device) / length).unsqueeze(1).expand(-1, length)
        loss = F.cross_entropy(logits[masked], gold[masked], reduction="none") / weight[masked]
        losses.append(loss.sum().item() / batch_size)
    return -sum(losses) / len(losses)


@torch.inference_mode()
def greedy_matches(module: DiffusionLM, prefix: list[int], target: list[int], mask_id: int, cfg_scale: float = 0.0) -> bool:
    """Whether revealing the target one most-confident masked position per step yields `target`."""
    device = module.embed.weight.device
    start = len(prefix)
    seq = torch.tensor(prefix + [mask_id] * len(target), device=device).unsqueeze(0)
    for _ in range(len(target)):
        open_ = seq[0, start:] == mask_id
        logits = guided_logits(module, seq, start, mask_id, cfg_scale)[0][open_]
        guess = logits.argmax(-1)
        confidence = torch.softmax(logits.float(), dim=-1).gather(-1, guess.unsqueeze(-1)).squeeze(-1)
        best = int(confidence.argmax())
        position = int(open_.nonzero()[best]) + start
        seq[0, position] = guess[best]
    return seq[0, start:].tolist() == list(target)
