"""Continuous batching: several requests' denoising loops share one batch canvas, one forward per step.

Each request keeps its own `DenoisingLoop` (its options, commit rule, cache policy and the policy's
per-sequence state, all in its own coordinates). A `SlotBatch` lays their canvases and stores side
by side, right-aligned in one [B, T] batch (a shorter canvas is left-padded with invalid positions,
which are never attention keys), and after that every loop's canvas and stores are views of the
batch: what a loop commits lands in the batch, and what its policy reads is its own slice.

Each step, every loop plans in its own coordinates; the plans, shifted to the batch's columns and
padded by repetition (the rule of `Rows`), become one plan that `run_plan` executes for all, and
each loop takes its own rows of the logits (and of the attention probabilities its layer hook asks
for). Loops join and leave between steps; the batch is then rebuilt with one copy of each store.
Nothing a loop computes depends on its companions, so greedy tokens equal the request alone (the
engine is batch-invariant). A policy whose plan is not a `StepPlan` (dLLM-Cache: its own forward)
runs its forward per loop, on the same views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .forward import StepOutput, run_plan
from .kv_store import CanvasStore, LayerKV
from .plan import StepContext, StepPlan
from .rows import Rows
from .state import CanvasState

if TYPE_CHECKING:
    from .loop import DenoisingLoop


# A forward's sequences keep at least this share of its canvas length as their own (the rest is padding).
FILL = 0.8


def _fit(x: Tensor, length: int, dim: int, fill) -> Tensor:
    """x resized to `length` along `dim` at its start: left-padded with `fill`, or its leading part dropped."""
    n = x.shape[dim]
    if n == length:
        return x
    if n > length:
        return x.narrow(dim, n - length, length)
    shape = list(x.shape)
    shape[dim] = length - n
    return torch.cat([x.new_full(shape, fill), x], dim)


def _merge_rows(sets: list[Rows], offsets: list[int]) -> Rows:
    """One Rows [B, R] from each loop's [1, R_k] (shifted by its offset; shorter lists repeat their last row)."""
    spans = {None if r.span is None else (r.span[0] + o, r.span[1] + o) for r, o in zip(sets, offsets)}
    if len(spans) == 1 and None not in spans:
        (start, end), = spans
        return Rows(torch.cat([r.index + o for r, o in zip(sets, offsets)]), (start, end))
    width = max(r.size for r in sets)
    parts = []
    for r, o in zip(sets, offsets):
        index = r.index + o
        if index.shape[1] < width:
            index = torch.cat([index, index[:, -1:].expand(-1, width - index.shape[1])], 1)
        parts.append(index)
    return Rows(torch.cat(parts))


def _merge_positions(positions: list[Tensor], offsets: list[int]) -> Tensor:
    width = max(p.shape[1] for p in positions)
    parts = [p + o for p, o in zip(positions, offsets)]
    return torch.cat([torch.cat([p, p[:, -1:].expand(-1, width - p.shape[1])], 1) for p in parts])


class SlotBatch:
    """Single-sequence loops that step together; `step()` advances every loop by one denoising step.

    All loops must keep the same kinds of stores (layer inputs, queries): the server groups requests
    by cache method (each loop's cache settings and decoding options are its own). `tokens` (loops x the batch's canvas length) is the memory the batch holds.
    """

    def __init__(self, module):
        self.module = module
        self.loops: list[DenoisingLoop] = []
        self._joining: list[DenoisingLoop] = []
        self._gone: list[DenoisingLoop] = []  # finished at the last step; their slots go at the next relayout
        self.state: CanvasState | None = None
        self.offsets: list[int] = []

    def __len__(self) -> int:
        return len(self.members)

    @property
    def members(self) -> list[DenoisingLoop]:
        """Every loop in the batch, those joining at the next step included."""
        return [loop for loop in self.loops if loop not in self._gone] + self._joining

    @property
    def length(self) -> int:
        return max([loop.length for loop in self.members], default=0)

    @property
    def tokens(self) -> int:
        return len(self) * self.length

    def add(self, loop: DenoisingLoop) -> None:
        """Join at the next step (a single-sequence loop, not yet run)."""
        if loop.state.batch != 1:
            raise ValueError(f"a slot holds one sequence; this loop has {loop.state.batch}")
        loop.begin()
        self._joining.append(loop)

    def step(self) -> list[DenoisingLoop]:
        """One denoising step of every loop; returns the loops that finished (they have left the batch)."""
        contexts: list[StepContext] = []
        staying, done = [], []
        for loop in self.members:
            ctx = loop.next_context()
            if ctx is None:
                done.append(loop)
            else:
                staying.append(loop)
                contexts.append(ctx)
        if staying != self.loops:
            self._relayout(staying)
        self._joining, self._gone = [], []
        if not self.loops:
            return done
        plans = [loop.policy.plan(loop.state, ctx) for loop, ctx in zip(self.loops, contexts)]
        outputs = self._forward(plans)
        for loop, ctx, plan, out in zip(self.loops, contexts, plans, outputs):
            loop.finish_step(ctx, plan, out)
        # Finished loops leave now; their slots are compacted away with the next step's joins (one copy).
        self._gone = [loop for loop in self.loops if not bool(loop.active.any())]
        return done + self._gone

    # -- the forward --------------------------------------------------------------------------------
    def _forward(self, plans: list) -> list[StepOutput]:
        """Each group of plans (`_groups`) as one forward; a loop alone in its group runs on its views."""
        if not all(isinstance(p, StepPlan) for p in plans):
            return [loop.policy.forward(loop.state, plan) for loop, plan in zip(self.loops, plans)]
        outputs: list[StepOutput | None] = [None] * len(plans)
        for slots in self._groups(plans):
            if len(slots) == 1:
                loop = self.loops[slots[0]]
                outputs[slots[0]] = loop.policy.forward(loop.state, plans[slots[0]])
                continue
            members = [plans[k] for k in slots]
            whole = all(p.rows.span == (0, self.loops[k].length) for k, p in zip(slots, members))
            state, offsets, write_back = self._substate(slots, fresh=whole)
            out = run_plan(self.module, state, self._merge(members, [self.loops[k] for k in slots], offsets))
            write_back()
            for row, (k, plan) in enumerate(zip(slots, members)):
                outputs[k] = StepOutput(out.logits[row : row + 1, : plan.logit_positions.size], out.layer_rows, out.refreshed_layers)
        return outputs

    def _groups(self, plans: list[StepPlan]) -> list[list[int]]:
        """Slots whose plans share a forward: a merged plan computes every sequence's rows padded to the
        widest, so sequences refreshing all their rows and those computing a few go separately; so do
        plans whose layer hooks refresh differently (`refresh_next`, `refresh_from`)."""
        groups: dict[tuple, list[int]] = {}
        for k, (p, loop) in enumerate(zip(plans, self.loops)):
            key = (p.rows.span == (0, loop.length), p.layer_hook is not None and p.refresh_next, p.refresh_from)
            groups.setdefault(key, []).append(k)
        return [bucket for group in groups.values() for bucket in self._by_length(group)]

    def _by_length(self, slots: list[int]) -> list[list[int]]:
        """Split a group so that no canvas is padded by more than 1 - FILL of its bucket's length: a
        sequence's rows and keys are padded to the longest canvas of its forward."""
        order = sorted(slots, key=lambda k: -self.loops[k].length)
        buckets: list[list[int]] = []
        for k in order:
            if buckets and self.loops[k].length >= FILL * self.loops[buckets[-1][0]].length:
                buckets[-1].append(k)
            else:
                buckets.append([k])
        return [sorted(bucket) for bucket in buckets]

    def _substate(self, slots: list[int], fresh: bool = False):
        """The batch restricted to `slots` and to their widest canvas: the batch itself when that is all of it,
        else a gathered copy; returns it, the slots' offsets in it and the function that writes it back.
        `fresh`: the forward rewrites every row of the stores, so they are not gathered, only written back."""
        st, length = self.state, max(self.loops[k].length for k in slots)
        offsets = [length - self.loops[k].length for k in slots]
        if len(slots) == len(self.loops) and length == st.length:
            return st, offsets, lambda: None
        index = torch.tensor(slots, dtype=torch.long, device=st.canvas.device)
        cut = st.length - length
        pairs: list[tuple[Tensor, Tensor, int]] = []  # (batch tensor, gathered copy, its position dim)

        def take(x: Tensor | None, dim: int, written: bool = True) -> Tensor | None:
            if x is None:
                return None
            part = x.narrow(dim, cut, length)
            if fresh and written:
                shape = list(part.shape)
                shape[0] = len(slots)
                part = part.new_empty(shape)
            else:
                part = part.index_select(0, index)
            if written:
                pairs.append((x, part, dim))
            return part

        kv = [LayerKV.of(take(layer.k, 2), take(layer.v, 2), take(layer.q, 2)) for layer in st.store.kv]
        inputs = None if st.store.inputs is None else [take(x, 1) for x in st.store.inputs]
        sub = CanvasState(
            canvas=take(st.canvas, 1, False), valid=take(st.valid, 1, False), store=CanvasStore.of(kv, inputs),
            cos=take(st.cos, 1, False), sin=take(st.sin, 1, False),
            embeds=take(st.embeds, 1, False), from_embeds=take(st.from_embeds, 1, False),
            embeds_end=max(0, st.embeds_end - cut),
        )
        sub.refresh_key_mask()

        def write_back() -> None:
            for whole, part, dim in pairs:
                whole.narrow(dim, cut, length).index_copy_(0, index, part)

        return sub, offsets, write_back

    def _merge(self, plans: list[StepPlan], loops: list[DenoisingLoop], offsets: list[int]) -> StepPlan:
        """One plan for a group of loops' plans (`_groups`: they agree on refresh_from and refresh_next)."""
        hooked = [p for p in plans if p.layer_hook is not None]
        probs = None
        if any(p.prob_positions is not None for p in plans):
            probs = _merge_positions(
                [p.prob_positions if p.prob_positions is not None else p.rows.index[:, :1] for p in plans], offsets
            )
        device = self.state.canvas.device
        whole = [p.rows.span == (0, loop.length) for p, loop in zip(plans, loops)]
        rows = _merge_rows([p.rows for p in plans], offsets)
        if all(whole):  # every row of every canvas, their left padding too: one span, the engine's fast path
            rows = Rows.range(0, max(loop.length for loop in loops), len(plans), device)
        return StepPlan(
            rows=rows,
            logit_positions=_merge_rows([p.logit_positions for p in plans], offsets),
            prob_positions=probs,
            layer_hook=self._hook(plans, offsets) if hooked else None,
            refresh_from=plans[0].refresh_from,
            refresh_next=bool(hooked and hooked[0].refresh_next),
            full_rows=torch.tensor(whole, device=device),
        )

    @staticmethod
    def _hook(plans: list[StepPlan], offsets: list[int]):
        """Each loop's layer hook on its own rows and columns of the batch's attention probabilities."""
        counts = [None if p.prob_positions is None else p.prob_positions.shape[1] for p in plans]

        def hook(layer: int, probs: Tensor | None, refreshing: Tensor) -> Tensor | None:
            switches, any_switch = [], False
            for k, (plan, off) in enumerate(zip(plans, offsets)):
                switch = None
                if plan.layer_hook is not None:
                    own = None if probs is None or counts[k] is None else probs[k : k + 1, :, : counts[k], off:]
                    switch = plan.layer_hook(layer, own, refreshing[k : k + 1])
                any_switch |= switch is not None
                switches.append(switch if switch is not None else torch.zeros(1, dtype=torch.bool, device=refreshing.device))
            return torch.cat(switches) if any_switch else None

        return hook

    # -- the layout ---------------------------------------------------------------------------------
    def _relayout(self, loops: list[DenoisingLoop]) -> None:
        """Rebuild the batch for `loops` (stayers first, in order, then joiners) and re-point their views."""
        old, kept = self.state, [i for i, loop in enumerate(self.loops) if loop in loops]
        joining = [loop for loop in loops if loop not in self.loops]
        self.loops = [self.loops[i] for i in kept] + joining
        if not self.loops:
            self.state, self.offsets = None, []
            return
        kinds = {(loop.state.store.inputs is None, loop.state.store.kv[0].q is None) for loop in self.loops}
        if len(kinds) > 1:
            raise ValueError("loops keeping different stores (layer inputs, queries) cannot share a batch")
        length = max(loop.length for loop in self.loops)
        index = torch.tensor(kept, dtype=torch.long, device=self.loops[0].state.canvas.device)

        def stack(batch_of, own_of, dim: int, fill) -> Tensor:
            every = len(kept) == old.batch if old is not None else False
            stay = batch_of(old) if every else batch_of(old).index_select(0, index) if kept else None
            parts = [] if stay is None else [_fit(stay, length, dim, fill)]
            parts += [_fit(own_of(loop.state), length, dim, fill) for loop in joining]
            return torch.cat(parts)

        pad = self.loops[0].special.pad
        canvas = stack(lambda s: s.canvas, lambda s: s.canvas, 1, pad)
        valid = stack(lambda s: s.valid, lambda s: s.valid, 1, False)
        cos = stack(lambda s: s.cos, lambda s: s.cos, 1, 0.0)
        sin = stack(lambda s: s.sin, lambda s: s.sin, 1, 0.0)
        layers = []
        for i in range(len(self.loops[0].state.store.kv)):
            k = stack(lambda s: s.store.kv[i].k, lambda s: s.store.kv[i].k, 2, 0.0)
            v = stack(lambda s: s.store.kv[i].v, lambda s: s.store.kv[i].v, 2, 0.0)
            q = None
            if self.loops[0].state.store.kv[i].q is not None:
                q = stack(lambda s: s.store.kv[i].q, lambda s: s.store.kv[i].q, 2, 0.0)
            layers.append((k, v, q))
        inputs = None
        if self.loops[0].state.store.inputs is not None:
            inputs = [stack(lambda s: s.store.inputs[i], lambda s: s.store.inputs[i], 1, 0.0) for i in range(len(layers))]
        store = CanvasStore.of([LayerKV.of(k, v, q) for k, v, q in layers], inputs)
        self.state = CanvasState(canvas=canvas, valid=valid, store=store, cos=cos, sin=sin)
        self.state.refresh_key_mask()
        self.offsets = [length - loop.length for loop in self.loops]
        self._stack_embeds(length)
        for slot, (loop, off) in enumerate(zip(self.loops, self.offsets)):
            own = loop.state
            own.canvas = canvas[slot : slot + 1, off:]
            for i, (k, v, q) in enumerate(layers):
                own.store.kv[i].point_to(k[slot : slot + 1, :, off:], v[slot : slot + 1, :, off:],
                                         None if q is None else q[slot : slot + 1, :, off:])
            if inputs is not None:
                own.store.inputs = [x[slot : slot + 1, off:] for x in inputs]

    def _stack_embeds(self, length: int) -> None:
        """Image-feature rows (LLaDA-V) side by side like the canvas; none when no member has any. They are
        read-only while a loop decodes, so each loop keeps its own copy and the batch a stacked one."""
        owners = [loop.state for loop in self.loops]
        if all(own.embeds is None for own in owners):
            return
        d = next(own.embeds.shape[-1] for own in owners if own.embeds is not None)
        dtype, device = next((own.embeds.dtype, own.embeds.device) for own in owners if own.embeds is not None)
        embeds = torch.zeros(len(owners), length, d, dtype=dtype, device=device)
        from_embeds = torch.zeros(len(owners), length, dtype=torch.bool, device=device)
        end = 0
        for slot, (own, off) in enumerate(zip(owners, self.offsets)):
            if own.embeds is not None:
                embeds[slot, off:] = own.embeds[0]
                from_embeds[slot, off:] = own.from_embeds[0]
                end = max(end, off + own.embeds_end)
        self.state.embeds, self.state.from_embeds, self.state.embeds_end = embeds, from_embeds, end
