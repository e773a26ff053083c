"""The commit rule: which candidate positions one denoising step commits.

Everything that decides it lives here, so the loop only scores, commits what the rule returns and
keeps accounts: the schedule's per-step counts (LLaDA's even split, Dream's eps schedule and its
`origin` draw), the threshold and factor rules, Dream's alg_temp sampling, the certainty prior,
Fast-dLLM's Dream block start (its first mask alone) and the span the official loop ranks over.
The cache policy's facts for a step arrive in `CommitContext`; this module never imports caches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..options import GenerationOptions
from . import block_start, prior, schedule, selection


@dataclass
class CommitContext:
    """What the rule needs to know about the step besides the confidences."""

    block: tuple[int, int]  # current block [start, end) in canvas positions
    block_step: int  # steps taken in the current block
    gen_start: int  # first generated position
    masked: Tensor  # [B, T] bool, still-masked positions of active sequences
    span: tuple[int, int]  # canvas slice [lo, hi) the official loop ranks confidences over
    first_mask_only: bool = False  # commit each sequence's first candidate and nothing else


class CommitRule:
    """One request's commit rule, built from its options (state: the current block's counts).

    `padding` is each row's left padding (None when no row is padded): a span from the canvas start
    then ranks each row from its first real token, over the same vector as when it decodes alone,
    so exact ties break as they would without the batch. Random draws (`origin`, alg_temp) use
    `generator`, the request's own.
    """

    def __init__(self, opts: GenerationOptions, padding: list[int] | None = None, generator: torch.Generator | None = None):
        self.opts = opts
        self.padding = padding
        self.generator = generator
        self.counts: Tensor | None = None  # [B, steps_per_block] linear schedule of the current block

    def start_block(self, in_block: Tensor) -> None:
        """A block starts with `in_block` [B] masks per sequence: fix the linear schedule's counts."""
        o = self.opts
        self.counts = None if o.parallel or o.schedule == "eps" else schedule.linear_counts(in_block, o.steps_per_block)

    def commit(self, confidence: Tensor, candidates: Tensor, ctx: CommitContext) -> Tensor:
        """[B, T] bool: the positions to commit this step.

        `confidence` [B, T] float64 is read at `candidates` [B, T] bool only and is left unchanged.
        A candidate whose confidence is -inf (the EOS/EOT options) stays selectable, after the others.
        """
        conf = self._with_prior(confidence, ctx) if self.opts.sigma > 0 else confidence
        conf = torch.where(candidates, conf.clamp_min(-1e300), float("-inf"))
        lo, hi = ctx.span
        commit = torch.zeros_like(candidates)
        if lo > 0 or self.padding is None:
            commit[:, lo:hi] = self._select(conf[:, lo:hi], candidates[:, lo:hi], ctx)
            return commit
        for b, pad in enumerate(self.padding):
            rows = slice(b, b + 1)
            commit[rows, pad:hi] = self._select(conf[rows, pad:hi], candidates[rows, pad:hi], ctx, rows)
        return commit

    def _with_prior(self, confidence: Tensor, ctx: CommitContext) -> Tensor:
        """d2Cache's certainty prior: generated confidences scaled by the density of decoded neighbours."""
        g = ctx.gen_start
        out = confidence.clone()
        out[:, g:] = out[:, g:] * prior.certainty_density(~ctx.masked[:, g:], self.opts.sigma)
        return out

    def _select(self, conf: Tensor, candidates: Tensor, ctx: CommitContext, rows: slice = slice(None)) -> Tensor:
        """The rule proper over one ranked slice; `rows` picks those rows' schedule counts."""
        o = self.opts
        if ctx.first_mask_only:
            return block_start.first_mask(candidates)
        if o.threshold is not None:
            return selection.select_threshold(conf, o.threshold)
        if o.factor is not None:
            return selection.select_factor(conf, o.factor)
        step = min(ctx.block_step, o.steps_per_block - 1)
        remaining = candidates.sum(-1)
        if o.schedule == "eps":
            s, e = ctx.block
            k = schedule.eps_count(ctx.masked[rows, s:e].sum(-1), step, o.steps_per_block, o.eps)
            if o.alg == "origin":
                ratio = schedule.eps_ratio(step, o.steps_per_block, o.eps)
                u = torch.rand(conf.shape, dtype=torch.float64, device=conf.device, generator=self.generator)
                return candidates & (u < ratio)
        elif ctx.block_step < o.steps_per_block:
            k = self.counts[rows, ctx.block_step]
        else:
            k = torch.ones_like(remaining)
        if ctx.block_step >= o.steps_per_block - 1:
            k = torch.maximum(k, torch.ones_like(k))  # past the budget: keep making progress
        k = torch.minimum(k, remaining)
        if o.alg_temp > 0:
            return selection.select_sampled(conf, k, o.alg_temp, self.generator)
        return selection.select_top_k(conf, k)
