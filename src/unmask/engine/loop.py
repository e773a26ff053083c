"""The denoising loop: one loop for every cache method.

Each step: policy.plan -> engine forward -> candidates and confidences -> the commit rule picks
positions -> the canvas takes them -> policy events -> accounting. Which positions a step commits
is the commit rule's business (`decoding.commit`); what to recompute is the policy's. The loop
receives the policy class, so the engine never imports the caches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from ..decoding import schedule
from ..decoding.commit import CommitContext, CommitRule
from ..decoding.sampling import LLADA_ALGS, dream_candidates, llada_candidates
from ..decoding.stops import first_stop
from ..decoding.suppress import suppressed_ids
from ..options import GenerationOptions
from .forward import StepOutput, run_plan
from .plan import StepContext, StepPlan
from .state import make_state

if TYPE_CHECKING:
    from ..models.model import LoadedModel


@dataclass
class StepTrace:
    committed: list[list[int]]  # per sequence, generation offsets decoded this step
    layer_rows: list[int]  # rows computed per layer
    refreshed: list[bool]  # layers that recomputed every row


class DenoisingLoop:
    """All state of one generate call (no process-wide state: two calls never share anything).

    `prefix_hook(canvas, pending, decoded, special)`, if set, is called after every step with the
    generated region; `cancelled(index)`, if set, is asked before every step while sequence
    `index` runs.
    """

    prefix_hook: Callable[[Tensor, Tensor, Tensor, Any], None] | None = None
    cancelled: Callable[[int], bool] | None = None

    def __init__(
        self, model: LoadedModel, opts: GenerationOptions, policy_cls, settings, prompt_ids, trace: bool, prompt_embeds=None
    ):
        self.model, self.opts = model, opts
        self.module = model.module
        self.special = model.special
        device = model.device
        self.prompt_ids = prompt_ids
        b = len(prompt_ids)
        width = max(len(p) for p in prompt_ids)
        self.gen_start, self.length = width, width + opts.gen_length
        canvas = torch.full((b, self.length), self.special.pad, dtype=torch.long, device=device)
        valid = torch.zeros(b, self.length, dtype=torch.bool, device=device)
        for i, ids in enumerate(prompt_ids):
            canvas[i, width - len(ids) : width] = torch.tensor(ids, dtype=torch.long)
            valid[i, width - len(ids) :] = True
        canvas[:, width:] = self.special.mask
        self.policy = policy_cls(settings, self.module, opts, self.special)
        auto = opts.confidence_dtype == "auto"
        self.confidence_dtype = policy_cls.confidence_dtype(opts) if auto else opts.confidence_dtype
        self.state = make_state(
            self.module, canvas, valid,
            layer_inputs=policy_cls.needs_layer_inputs,
            queries=policy_cls.needs_queries,
            reuse_layer0=True,
        )
        if prompt_embeds is not None:  # per prompt None or (embeds [L, d], from_embeds [L]): image rows
            self.state.attach_embeds(width, prompt_embeds)
        self.state.pending = valid & (canvas == self.special.mask)
        self.suppressed = list(suppressed_ids(model.tokenizer, model.cfg.family, opts.suppress_tokens))
        self.decoded = torch.zeros_like(valid)  # positions committed so far
        self.generator = None
        if opts.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(opts.seed)
        self.active = torch.ones(b, dtype=torch.bool, device=device)
        pads = [width - len(ids) for ids in prompt_ids]
        self.rule = CommitRule(opts, pads if any(pads) else None, self.generator)
        self.hidden_stop_ids = self._hidden_stop_ids()
        self.nfe = [0] * b
        self.seconds = [0.0] * b
        self.trace: list[StepTrace] | None = [] if trace else None
        self.layer_steps = self.refreshed_steps = 0
        self.rows_computed = 0

    # -- scoring ---------------------------------------------------------------
    def _logits(self, plan: StepPlan, out: StepOutput) -> Tensor:
        """The forward's logits after guidance and the EOS/mask rules."""
        logits = out.logits
        if self.opts.cfg_scale > 0:
            logits = self._guided(logits, plan)
        return self._ruled(logits)

    def scoring_key(self) -> tuple | None:
        """What turns this loop's logits into candidates, where that is the same function for every loop
        with an equal key (`engine.slots` then scores a group's logits in one go); None where it is not
        (guidance runs a forward of its own; random draws use the loop's own generator)."""
        if not hasattr(self, "_scoring_key"):  # fixed for the loop's life; asked at every batched step
            o = self.opts
            alone = o.cfg_scale > 0 or o.temperature > 0 or o.alg in ("random", "origin")
            self._scoring_key = None if alone else (
                o.alg, self.confidence_dtype, self.hidden_stop_ids, o.top_p, o.top_k, o.confidence_eos_eot_inf,
                self.policy.suppress_mask_logit, o.logits_eos_inf, tuple(self.suppressed),
            )
        return self._scoring_key

    def score(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Candidates and confidences of forward logits (no guidance): `_ruled` in place, then `_candidate_tokens`."""
        return self._candidate_tokens(self._ruled(logits))

    def _ruled(self, logits: Tensor) -> Tensor:
        """The EOS/mask/suppression rules on logits, in place."""
        if self.policy.suppress_mask_logit:
            logits[..., self.special.mask] = float("-inf")  # committing [MASK] would leave a mask in the answer
        if self.opts.logits_eos_inf:
            logits[..., self.special.eos] = float("-inf")
        if self.suppressed:
            logits[..., self.suppressed] = float("-inf")  # generation.suppress_tokens (LLaDA-V's forbidden specials)
        return logits

    def _guided(self, cond: Tensor, plan: StepPlan) -> Tensor:
        """Classifier-free guidance: a second full pass with the prompt masked."""
        uncond_canvas = self.state.canvas.clone()
        uncond_canvas[:, : self.gen_start] = torch.where(
            self.state.valid[:, : self.gen_start], self.special.mask, uncond_canvas[:, : self.gen_start]
        )
        un_state = make_state(self.module, uncond_canvas, self.state.valid)
        uncond = run_plan(self.module, un_state, StepPlan(rows=un_state.all_rows(), logit_positions=plan.logit_positions)).logits
        self._count_forward()
        s = self.opts.cfg_scale
        return uncond + (s + 1) * (cond - uncond)

    def _candidate_tokens(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Each logit position's candidate token and its confidence (the EOS/EOT option applied)."""
        o = self.opts
        if o.alg in LLADA_ALGS:
            return llada_candidates(logits, o.temperature, o.alg, self.generator, self.confidence_dtype, self.hidden_stop_ids)
        x0, conf = dream_candidates(logits, o.temperature, o.top_p, o.top_k, o.alg, self.generator)
        if o.confidence_eos_eot_inf:
            for sid in self.special.stop_ids:
                conf = conf.masked_fill(x0 == sid, float("-inf"))
        return x0, conf

    def _hidden_stop_ids(self) -> tuple[int, ...]:
        """Token ids hidden in the confidence softmax: with confidence_eos_eot_inf, LLaDA's generate.py sets
        the EoT logit to -inf before that softmax and the EOS one in the Gumbel-noised logits, which at
        temperature 0 are the same tensor: then both are hidden."""
        sp, o = self.special, self.opts
        if not o.confidence_eos_eot_inf:
            return ()
        ids = [] if sp.eot is None else [sp.eot]
        if o.temperature == 0:
            ids.append(sp.eos)
        return tuple(ids)

    def _count_forward(self) -> None:
        for i, active in enumerate(self.active.tolist()):  # one device read, not one per sequence
            self.nfe[i] += int(active)

    # -- the loop ---------------------------------------------------------------
    def run(self) -> None:
        self.begin()
        while (ctx := self.next_context()) is not None:
            self._step(ctx)

    def _step(self, ctx: StepContext) -> None:
        """One step of this loop alone: plan, forward, commit (the profiler wraps this method)."""
        plan = self.policy.plan(self.state, ctx)
        self.finish_step(ctx, plan, self.policy.forward(self.state, plan))

    def begin(self) -> None:
        """Start the clock and the block schedule; then `next_context`, plan, forward, `finish_step`
        until `next_context` says None. `run` does exactly this; a scheduler that batches the
        forwards of several loops (`engine.slots`) drives the same steps."""
        self.start_time = time.perf_counter()
        self._blocks = iter(schedule.blocks(self.gen_start, self.opts.gen_length, self.opts.block_length))
        self._block: tuple[int, int] | None = None
        self._steps = self._block_steps = 0

    def next_context(self) -> StepContext | None:
        """The next step's context, starting blocks as they come; None once the sequences are done."""
        st = self.state
        while True:
            if self._block is None:
                block = next(self._blocks, None)
                if block is None:
                    return None
                s, e = block
                masked = self._masked()
                in_block = masked[:, s:e].sum(-1)
                if not bool(in_block.any()):
                    continue
                self._block, self._block_steps = block, 0
                self.rule.start_block(in_block)
                self.policy.on_block_start(st, StepContext(self._steps, 0, block, self.gen_start, masked))
            if self.cancelled is not None:
                self._stop_cancelled()
            s, e = self._block
            masked = self._masked()
            if bool(masked[:, s:e].any()):
                return StepContext(self._steps, self._block_steps, self._block, self.gen_start, masked)
            self._block = None
            if not bool(self.active.any()):
                return None

    def finish_step(self, ctx: StepContext, plan: StepPlan, out: StepOutput,
                    scored: tuple[Tensor, Tensor] | None = None) -> None:
        """Everything after the forward: score, commit, policy events, finished sequences, streaming.
        `scored`: the logits' candidates and confidences as `score` gives them, already computed (their
        rules applied to `out.logits` in place), by a batch that scored several loops' logits at once."""
        st = self.state
        committed, conf = self._step_from(ctx, plan, out, scored)
        self.policy.on_step_end(st, ctx, committed, conf)
        self._finish_sequences(committed)
        if self.prefix_hook is not None:
            g = self.gen_start
            self.prefix_hook(st.canvas[:, g:], st.pending[:, g:], self.decoded[:, g:], self.special)
        self._steps += 1
        self._block_steps += 1

    def _stop_cancelled(self) -> None:
        """Stop the sequences whose caller has gone: their open positions become EOS, the state of
        a sequence that finished early, and they take no further steps."""
        gone = [i for i, running in enumerate(self.active.tolist()) if running and self.cancelled(i)]
        if not gone:
            return
        rows = torch.tensor(gone, device=self.active.device)
        gen = self.state.canvas[rows, self.gen_start :]
        self.state.canvas[rows, self.gen_start :] = torch.where(gen == self.special.mask, self.special.eos, gen)
        self.state.pending[rows] = False
        self.active[rows] = False

    def _masked(self) -> Tensor:
        masked = self.state.pending & self.active.unsqueeze(1)
        if self.opts.commit_before_stop:  # LLaDA-V: once an EOS/EOT is committed, only the masks before it
            g = self.gen_start
            first = first_stop(self.state.canvas[:, g:], self.special.stop_ids) + g
            masked &= torch.arange(self.length, device=masked.device) < first.unsqueeze(1)
        return masked

    def _step_from(self, ctx: StepContext, plan: StepPlan, out: StepOutput,
                   scored: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """One denoising step from its forward's output; returns the positions it committed and its
        confidences (-inf where unknown)."""
        st = self.state
        logits = self._logits(plan, out) if scored is None else None
        self._count_forward()
        self._account(out)
        self.policy.after_forward(st, ctx, plan, out)
        x0, conf = self._candidate_tokens(logits) if scored is None else scored
        pos = plan.logit_positions.index
        dense_conf = torch.full((st.batch, st.length), float("-inf"), dtype=torch.float64, device=conf.device)
        dense_x0 = st.canvas.clone()
        dense_conf.scatter_(1, pos, conf)
        dense_x0.scatter_(1, pos, x0)
        candidates = self._candidate_positions(ctx, plan)
        rule_ctx = CommitContext(
            block=ctx.block, block_step=ctx.block_step, gen_start=self.gen_start, masked=ctx.masked,
            span=self.policy.selection_span(st, ctx), first_mask_only=self.policy.commits_first_mask(ctx),
        )
        commit = self.rule.commit(dense_conf, candidates, rule_ctx)
        st.canvas.copy_(torch.where(commit, dense_x0, st.canvas))  # in place: the canvas may be a batch's view
        st.pending &= ~commit
        self.decoded |= commit
        if self.trace is not None:
            offsets = [(row.nonzero().flatten() - self.gen_start).tolist() for row in commit]
            self.trace.append(StepTrace(offsets, list(out.layer_rows), list(out.refreshed_layers)))
        return commit, dense_conf

    def _candidate_positions(self, ctx: StepContext, plan: StepPlan) -> Tensor:
        """[B, T] bool: the block's masks the step has logits for."""
        s, e = ctx.block
        candidates = torch.zeros_like(ctx.masked)
        candidates[:, s:e] = ctx.masked[:, s:e]
        span = plan.logit_positions.span
        if span is None or span[0] > s or span[1] < e:  # logits do not cover the whole block
            candidates &= plan.logit_positions.mask(self.state.length)
        if not bool(candidates.any()):
            raise RuntimeError(f"cache={self.policy.name} planned no logits for any masked position of block {ctx.block}")
        return candidates

    def _account(self, out: StepOutput) -> None:
        self.layer_steps += len(out.layer_rows)
        self.refreshed_steps += sum(out.refreshed_layers)
        self.rows_computed += sum(out.layer_rows)

    def _finish_sequences(self, committed: Tensor) -> None:
        """Mark sequences done (EOS early stop) and record their finishing time."""
        st = self.state
        gen = st.canvas[:, self.gen_start :]
        still_masked = st.pending[:, self.gen_start :].clone()
        if self.opts.stop_until_eos:
            first = first_stop(gen, self.special.stop_ids)
            offsets = torch.arange(gen.shape[1], device=gen.device)
            before = still_masked & (offsets < first.unsqueeze(1))
            done = self.active & ~before.any(-1) & (first < gen.shape[1])
            if bool(done.any()):
                fill = done.unsqueeze(1) & still_masked
                gen = torch.where(fill, torch.full_like(gen, self.special.eos), gen)
                st.canvas[:, self.gen_start :] = gen
                st.pending[:, self.gen_start :] &= ~fill
                still_masked &= ~fill
        finished = self.active & ~still_masked.any(-1)
        now = time.perf_counter() - self.start_time
        for i in finished.nonzero().flatten().tolist():
            self.seconds[i] = now
        self.active &= ~finished
