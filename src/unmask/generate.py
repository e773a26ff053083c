"""The denoising loop and the public `generate` API. One loop for every cache method.

canvas -> policy.plan -> engine forward -> logits for the needed rows -> score -> select
-> commit -> policy events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from .caches.base import StepContext
from .caches.registry import resolve_cache
from .decoding import block_start, prior, schedule, selection
from .decoding.stops import first_stop
from .decoding.sampling import LLADA_ALGS, dream_candidates, llada_candidates
from .engine import StepOutput, StepPlan, make_state, run_plan
from .models.model import LoadedModel
from .options import GenerationOptions


@dataclass
class StepTrace:
    committed: list[list[int]]  # per sequence, generation offsets decoded this step
    layer_rows: list[int]  # rows computed per layer
    refreshed: list[bool]  # layers that recomputed every row


@dataclass
class GenerationResult:
    token_ids: list[list[int]]  # per prompt, the generated region (EOS tail included)
    texts: list[str]
    nfe: list[int]  # forward calls while each prompt was still decoding
    seconds: list[float]  # wall time until each prompt finished
    answer_tokens: list[int]  # tokens before the first EOS/EOT
    prompt_ids: list[list[int]]
    refresh_fraction: float  # layer-steps that recomputed every row / all layer-steps
    row_fraction: float  # rows computed / rows a full forward computes, over all layer-steps
    trace: list[StepTrace] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return max(self.seconds) if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return sum(self.answer_tokens) / self.total_seconds if self.total_seconds else 0.0


def encode_prompts(model: LoadedModel, prompts: list[str], chat: bool) -> list[list[int]]:
    out = []
    for text in prompts:
        if chat and model.chat_template:
            out.append(model.tokenizer.encode(model.chat_template.format(content=text)))
        else:
            bos = [model.special.bos] if model.special.bos is not None else []
            out.append(bos + model.tokenizer.encode(text))
    return out


class _PrefixReporter:
    """Calls `on_step(index, prefix_ids)` after a step that grew a sequence's committed prefix.

    Diffusion decoding commits out of order; the decoded run from the first generated position is
    what a streaming client can show. Masks a policy stopped decoding read as EOS, as in the result.
    """

    def __init__(self, callback: Callable[[int, list[int]], None], batch: int):
        self.callback = callback
        self.reported = [0] * batch

    def __call__(self, canvas: Tensor, pending: Tensor, decoded: Tensor, special) -> None:
        gen = readable(canvas, decoded, special)
        lengths = torch.where(pending.any(-1), pending.int().argmax(-1), gen.shape[1]).tolist()
        rows = None
        for i, n in enumerate(lengths):
            if n > self.reported[i]:
                rows = gen.tolist() if rows is None else rows  # one device transfer per step at most
                self.reported[i] = n
                self.callback(i, rows[i][:n])


def readable(gen: Tensor, decoded: Tensor, special) -> Tensor:
    """Generated ids [B, G] with the masks that were never decoded read as EOS.

    Elastic-Cache stops decoding the masks after the first EOS it decodes (they stay attention keys
    while it runs); the answer ends before them. A position decoded to the [MASK] id keeps it.
    """
    return torch.where((gen == special.mask) & ~decoded, torch.full_like(gen, special.eos), gen)


class _Request:
    """All state of one generate call (no process-wide state: two requests never share anything)."""

    prefix_hook: _PrefixReporter | None = None
    cancelled: Callable[[int], bool] | None = None

    def __init__(self, model: LoadedModel, opts: GenerationOptions, policy_cls, settings, prompt_ids, trace: bool):
        self.model, self.opts = model, opts
        self.module = model.module
        self.special = model.special
        device = model.device
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
        )
        self.state.pending = valid & (canvas == self.special.mask)
        self.decoded = torch.zeros_like(valid)  # positions committed so far
        self.generator = None
        if opts.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(opts.seed)
        self.active = torch.ones(b, dtype=torch.bool, device=device)
        pads = [width - len(ids) for ids in prompt_ids]
        self.padding: list[int] | None = pads if any(pads) else None  # left padding per row
        self.nfe = [0] * b
        self.seconds = [0.0] * b
        self.trace: list[StepTrace] | None = [] if trace else None
        self.layer_steps = self.refreshed_steps = 0
        self.rows_computed = 0

    # -- scoring ---------------------------------------------------------------
    def _forward(self, plan: StepPlan) -> tuple[StepOutput, Tensor]:
        """Run the plan; return the engine output and the logits after guidance and EOS/mask rules."""
        out = self.policy.forward(self.state, plan)
        logits = out.logits
        if self.opts.cfg_scale > 0:
            logits = self._guided(logits, plan)
        if self.policy.suppress_mask_logit:
            logits[..., self.special.mask] = float("-inf")  # committing [MASK] would leave a mask in the answer
        if self.opts.logits_eos_inf:
            logits[..., self.special.eos] = float("-inf")
        return out, logits

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

    def _candidates(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        o = self.opts
        if o.alg in LLADA_ALGS:
            x0, conf = llada_candidates(logits, o.temperature, o.alg, self.generator, self.confidence_dtype)
        else:
            x0, conf = dream_candidates(logits, o.temperature, o.top_p, o.top_k, o.alg, self.generator)
        if o.confidence_eos_eot_inf:
            for sid in self.special.stop_ids:
                conf = conf.masked_fill(x0 == sid, float("-inf"))
        return x0, conf

    def _count_forward(self) -> None:
        for i, active in enumerate(self.active.tolist()):  # one device read, not one per sequence
            self.nfe[i] += int(active)

    # -- the loop ---------------------------------------------------------------
    def run(self) -> None:
        o, st = self.opts, self.state
        self.start_time = time.perf_counter()
        step = 0
        for s, e in schedule.blocks(self.gen_start, o.gen_length, o.block_length):
            masked = self._masked()
            ctx = StepContext(step=step, block_step=0, block=(s, e), gen_start=self.gen_start, masked=masked)
            in_block = masked[:, s:e].sum(-1)
            if not bool(in_block.any()):
                continue
            counts = None if o.parallel or o.schedule == "eps" else schedule.linear_counts(in_block, o.steps_per_block)
            self.policy.on_block_start(st, ctx)
            block_step = 0
            while True:
                if self.cancelled is not None:
                    self._stop_cancelled()
                masked = self._masked()
                if not bool(masked[:, s:e].any()):
                    break
                ctx = StepContext(step=step, block_step=block_step, block=(s, e), gen_start=self.gen_start, masked=masked)
                committed, conf = self._step(ctx, counts)
                self.policy.on_step_end(st, ctx, committed, conf)
                self._finish_sequences(committed)
                if self.prefix_hook is not None:
                    g = self.gen_start
                    self.prefix_hook(st.canvas[:, g:], st.pending[:, g:], self.decoded[:, g:], self.special)
                step += 1
                block_step += 1
            if not bool(self.active.any()):
                break

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
        return self.state.pending & self.active.unsqueeze(1)

    def _step(self, ctx: StepContext, counts: Tensor | None) -> tuple[Tensor, Tensor]:
        o, st = self.opts, self.state
        plan = self.policy.plan(st, ctx)
        out, logits = self._forward(plan)
        self._count_forward()
        self._account(out)
        self.policy.after_forward(st, ctx, plan, out)
        x0, conf = self._candidates(logits)
        b, t = st.batch, st.length
        pos = plan.logit_positions.index
        dense_conf = torch.full((b, t), float("-inf"), dtype=torch.float64, device=conf.device)
        dense_x0 = st.canvas.clone()
        dense_conf.scatter_(1, pos, conf)
        dense_x0.scatter_(1, pos, x0)
        s, e = ctx.block
        candidate = torch.zeros_like(ctx.masked)
        candidate[:, s:e] = ctx.masked[:, s:e]
        span = plan.logit_positions.span
        if span is None or span[0] > s or span[1] < e:  # logits do not cover the whole block
            candidate &= plan.logit_positions.mask(t)
        if not bool(candidate.any()):
            raise RuntimeError(f"cache={self.policy.name} planned no logits for any masked position of block {ctx.block}")
        step_conf = dense_conf
        if o.sigma > 0:
            dense_conf = dense_conf.clone()  # step_conf (what policies see) stays without the prior
            decoded = ~st.pending[:, self.gen_start :]
            density = prior.certainty_density(decoded, o.sigma)
            dense_conf[:, self.gen_start :] = dense_conf[:, self.gen_start :] * density
        # Candidates whose confidence was forced to -inf (EOS/EOT options) stay selectable, last.
        dense_conf = torch.where(candidate, dense_conf.clamp_min(-1e300), float("-inf"))
        commit = self._select_in_span(dense_conf, candidate, ctx, counts)
        st.canvas = torch.where(commit, dense_x0, st.canvas)
        st.pending &= ~commit
        self.decoded |= commit
        if self.trace is not None:
            offsets = [(row.nonzero().flatten() - self.gen_start).tolist() for row in commit]
            self.trace.append(StepTrace(offsets, list(out.layer_rows), list(out.refreshed_layers)))
        return commit, step_conf

    def _select_in_span(self, conf: Tensor, candidate: Tensor, ctx: StepContext, counts: Tensor | None) -> Tensor:
        """Select over the policy's span, so exact ties break as the official loop breaks them.

        A span from the canvas start begins at each row's first real token: a left-padded row is
        then ranked over the same vector as when it decodes alone (batch invariance).
        """
        lo, hi = self.policy.selection_span(self.state, ctx)
        commit = torch.zeros_like(candidate)
        if lo > 0 or self.padding is None:
            commit[:, lo:hi] = self._select(conf[:, lo:hi], candidate[:, lo:hi], ctx, counts)
            return commit
        for b, pad in enumerate(self.padding):
            rows = slice(b, b + 1)
            commit[rows, pad:hi] = self._select(conf[rows, pad:hi], candidate[rows, pad:hi], ctx, counts, rows)
        return commit

    def _select(
        self, conf: Tensor, candidate: Tensor, ctx: StepContext, counts: Tensor | None, rows: slice = slice(None)
    ) -> Tensor:
        o = self.opts
        if self.policy.commits_first_mask(ctx):
            return block_start.first_mask(candidate)
        if o.threshold is not None:
            return selection.select_threshold(conf, o.threshold)
        if o.factor is not None:
            return selection.select_factor(conf, o.factor)
        s, e = ctx.block
        remaining = candidate.sum(-1)
        if o.schedule == "eps":
            in_block = ctx.masked[rows, s:e].sum(-1)
            k = schedule.eps_count(in_block, min(ctx.block_step, o.steps_per_block - 1), o.steps_per_block, o.eps)
            if o.alg == "origin":
                ratio = schedule.eps_ratio(min(ctx.block_step, o.steps_per_block - 1), o.steps_per_block, o.eps)
                u = torch.rand(conf.shape, dtype=torch.float64, device=conf.device, generator=self.generator)
                return candidate & (u < ratio)
        elif ctx.block_step < o.steps_per_block:
            k = counts[rows, ctx.block_step]
        else:
            k = torch.ones_like(remaining)
        if ctx.block_step >= o.steps_per_block - 1:
            k = torch.maximum(k, torch.ones_like(k))  # past the budget: keep making progress
        k = torch.minimum(k, remaining)
        if o.alg_temp > 0:
            return selection.select_sampled(conf, k, o.alg_temp, self.generator)
        return selection.select_top_k(conf, k)

    def _account(self, out) -> None:
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

    def result(self, prompt_ids) -> GenerationResult:
        st = self.state
        gen = readable(st.canvas[:, self.gen_start :], self.decoded[:, self.gen_start :], self.special)
        first = first_stop(gen, self.special.stop_ids).tolist()
        ids = gen.tolist()
        texts = [self.model.tokenizer.decode(row[:n]) for row, n in zip(ids, first)]
        total = self.layer_steps or 1
        full_rows = self.length * len(self.module.layers)
        steps = self.layer_steps / max(1, len(self.module.layers))
        return GenerationResult(
            token_ids=ids,
            texts=texts,
            nfe=self.nfe,
            seconds=self.seconds,
            answer_tokens=first,
            prompt_ids=prompt_ids,
            refresh_fraction=self.refreshed_steps / total,
            row_fraction=self.rows_computed / max(1.0, steps * full_rows),
            trace=self.trace,
        )


def generate(
    model: LoadedModel,
    prompts: list[str] | str | None = None,
    input_ids: list[list[int]] | None = None,
    cache: str | dict | None = None,
    trace: bool = False,
    on_step: Callable[[int, list[int]], None] | None = None,
    cancelled: Callable[[int], bool] | None = None,
    **options: Any,
) -> GenerationResult:
    """Denoise `prompt ++ [MASK] * gen_length` for each prompt (batched, left-padded).

    `cache` mirrors the Hydra group: None, "prefix", or {"name": "dllm", "kp": 50, ...}.
    `options` are the `generation.*` keys (gen_length, block_length, steps, threshold, ...).
    `on_step(index, prefix_ids)`, if given, is called after each denoising step that grew prompt
    `index`'s committed prefix (the decoded run from the first generated position, EOS included);
    the last call per prompt carries its full `token_ids`. Used for streaming.
    `cancelled(index)`, if given, is asked before each denoising step while prompt `index` runs;
    once it answers True that prompt takes no further steps (its open positions read as EOS) and
    the call returns as soon as no prompt runs. Used by the server to drop requests whose client left.
    """
    policy_cls, settings = resolve_cache(cache)
    options = {**policy_cls.default_options(settings, model.cfg.family), **options}
    opts = GenerationOptions.build(model.cfg.family, **options)
    policy_cls.validate(settings, opts, model.cfg.family)
    if (prompts is None) == (input_ids is None):
        raise ValueError("pass exactly one of prompts=[...] or input_ids=[[...], ...]")
    if isinstance(prompts, str):
        prompts = [prompts]
    prompt_ids = encode_prompts(model, prompts, opts.chat) if prompts is not None else [list(map(int, p)) for p in input_ids]
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token")
    longest = max(len(p) for p in prompt_ids) + opts.gen_length
    if longest > model.cfg.max_position:
        raise ValueError(
            f"prompt ({longest - opts.gen_length} tokens) + generation.gen_length ({opts.gen_length}) exceeds "
            f"the model's maximum length of {model.cfg.max_position}"
        )
    with torch.inference_mode():
        request = _Request(model, opts, policy_cls, settings, prompt_ids, trace)
        if on_step is not None:
            request.prefix_hook = _PrefixReporter(on_step, len(prompt_ids))
        request.cancelled = cancelled
        request.run()
        return request.result(prompt_ids)
