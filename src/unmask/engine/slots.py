"""Continuous batching: several requests' denoising loops step together, one forward per group of them.

Each request keeps its own `DenoisingLoop` (its options, commit rule, cache policy and the policy's
per-sequence state, all in its own coordinates). Each step, every loop plans in its own coordinates;
loops whose plans can share a forward (`_groups`: all refreshing every row, or all computing a few,
with padding cheaper than a forward of their own) run as one: their plans, shifted to the group's
columns and padded by repetition (the rule of `Rows`), become one plan that `run_plan` executes, and
each loop takes its own rows of the logits (and of the attention probabilities its layer hook asks
for).

A group's forward runs on a `_Home`: its members' canvases and stores side by side, right-aligned
in one [B, T] stack (a shorter canvas is left-padded with invalid positions, which are never
attention keys); after that every member's canvas and stores are views of the stack, so what a loop
commits lands there and what its policy reads is its own slice. A group that is exactly the members
of a home, or a run of its slots (the others left or run elsewhere this step), runs on it or a slice
of it with no copy; otherwise a new stack is built, where a group refreshing every row copies no
store at all (the forward rewrites it), and the others copy each member's stores once. Joining and
leaving therefore copy nothing by themselves; a home outlives its members' leaving only while some
member still lives in it, so memory stays within that of requests admitted together.

Nothing a loop computes depends on its companions, so greedy tokens equal the request alone (the
engine is batch-invariant). A policy whose plan is not a `StepPlan` (dLLM-Cache: its own forward)
runs its forward per loop, on its own home.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..models.scratch import Scratch
from .forward import StepOutput, run_plan
from .kv_store import CanvasStore, LayerKV
from .layer0 import Layer0Rows
from .plan import StepContext, StepPlan
from .rows import Rows
from .state import CanvasState

if TYPE_CHECKING:
    from .loop import DenoisingLoop


# What a forward costs, in rows computed: (its fixed cost, the most rows worth one forward). Sequences
# refreshing every row share a forward while their padding costs less than a forward of its own. On a
# CPU (measured, bundled model, 1 thread) a forward's fixed cost is about that of 56 more rows, and past
# about 1280 rows (8 canvases of ~140) a forward costs more per row, not less. On an accelerator a
# forward's fixed cost (kernel launches) is far larger and more rows cost little: padding is allowed
# freely and nothing caps a forward (not measured here: no GPU was lent to these runs).
CPU_COSTS = (56, 1280)
ACCELERATOR_COSTS = (512, None)


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


class _Home:
    """The stacked tensors one group's forward runs on; `loops` (in slot order) view their own rows of it."""

    def __init__(self, loops: list[DenoisingLoop], state: CanvasState):
        self.loops, self.state = loops, state
        self.offsets = [state.length - loop.length for loop in loops]


class SlotBatch:
    """Single-sequence loops that step together; `step()` advances every loop by one denoising step.

    All loops must keep the same kinds of stores (layer inputs, queries): the server groups requests
    by cache method (each loop's cache settings and decoding options are its own). `tokens` (loops x
    the longest canvas) is the memory the batch accounts for.
    """

    def __init__(self, module):
        self.module = module
        self.loops: list[DenoisingLoop] = []
        self._joining: list[DenoisingLoop] = []
        self._gone: list[DenoisingLoop] = []  # finished at the last step; they are dropped at the next one
        self._homes: dict[int, _Home] = {}  # by id of the loop
        device = next(module.parameters()).device
        self.pad_rows, self.max_rows = CPU_COSTS if device.type == "cpu" else ACCELERATOR_COSTS
        self._scratch = Scratch()  # the layers' temporaries, for every forward of the batch (one at a time)

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
        if self.loops or self._joining:
            first = (self.loops + self._joining)[0]
            if _store_kind(first) != _store_kind(loop):
                raise ValueError("loops keeping different stores (layer inputs, queries) cannot share a batch")
        loop.begin()
        self._joining.append(loop)
        self._homes[id(loop)] = _Home([loop], loop.state)  # its own state until it shares a forward

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
        for loop in self._gone + done:
            self._homes.pop(id(loop), None)
        self.loops, self._joining, self._gone = staying, [], []
        if not self.loops:
            return done
        plans = [loop.policy.plan(loop.state, ctx) for loop, ctx in zip(self.loops, contexts)]
        outputs, scored = self._forward(plans)
        for loop, ctx, plan, out, own in zip(self.loops, contexts, plans, outputs, scored):
            loop.finish_step(ctx, plan, out, own)
        # Finished loops leave now (nothing to copy: their homes go when no loop views them).
        self._gone = [loop for loop in self.loops if not bool(loop.active.any())]
        return done + self._gone

    # -- the forward --------------------------------------------------------------------------------
    def _forward(self, plans: list) -> tuple[list[StepOutput], list[tuple[Tensor, Tensor] | None]]:
        """Each group of plans (`_groups`) as one forward on its home; a loop alone runs its policy's forward.
        Returns each loop's output and, where its group's loops score logits alike (`scoring_key`), its
        candidates and confidences, scored for the group at once."""
        outputs: list[StepOutput | None] = [None] * len(plans)
        scored: list[tuple[Tensor, Tensor] | None] = [None] * len(plans)
        for slots in self._groups(plans):
            members = [plans[k] for k in slots]
            loops = [self.loops[k] for k in slots]
            home = self._home(loops, fresh=all(self._full[k] for k in slots))
            if len(slots) == 1:
                outputs[slots[0]] = loops[0].policy.forward(loops[0].state, members[0])
                continue
            merged = self._merge(members, loops, home.offsets)
            out = run_plan(self.module, home.state, merged)
            key = loops[0].scoring_key()
            together = key is not None and all(loop.scoring_key() == key for loop in loops[1:])
            x0, conf = loops[0].score(out.logits) if together else (None, None)
            for row, (k, plan) in enumerate(zip(slots, members)):
                n = plan.logit_positions.size
                # its own rows, as it counts them alone: all of them at a layer that refreshed every row
                own_rows = [loops[row].length if r > merged.rows.size or self._full[k] else plan.rows.size for r in out.layer_rows]
                outputs[k] = StepOutput(out.logits[row : row + 1, :n], own_rows, out.refreshed_layers)
                if together:
                    scored[k] = (x0[row : row + 1, :n], conf[row : row + 1, :n])
        return outputs, scored

    def _groups(self, plans: list) -> list[list[int]]:
        """Slots whose plans share a forward: a merged plan computes every sequence's rows padded to the
        widest, so sequences refreshing all their rows and those computing a few go separately; so do
        plans whose layer hooks refresh differently (`refresh_next`, `refresh_from`). A plan that is not
        a `StepPlan` runs alone."""
        self._full = [isinstance(p, StepPlan) and p.rows.span == (0, loop.length) for p, loop in zip(plans, self.loops)]
        groups: dict[tuple, list[int]] = {}
        for k, p in enumerate(plans):
            if not isinstance(p, StepPlan):
                groups[("alone", k)] = [k]
                continue
            key = (self._full[k], p.layer_hook is not None and p.refresh_next, p.refresh_from)
            groups.setdefault(key, []).append(k)
        return [bucket for group in groups.values() for bucket in self._by_length(group)]

    def _by_length(self, slots: list[int]) -> list[list[int]]:
        """Split a group into forwards at the least cost: a forward costs `pad_rows` rows plus the rows
        it computes, and a sequence refreshing every row computes as many as the longest canvas of its
        forward, at most `max_rows` in all (one computing a few rows computes the widest plan's, padded
        keys are not counted)."""
        order = sorted(slots, key=lambda k: -self.loops[k].length)
        if not all(self._full[k] for k in order):
            return [sorted(order)]
        lengths = [self.loops[k].length for k in order]
        # best[j]: the least cost of the first j (longest) sequences; cut[j]: where its last forward starts
        best, cut = [0] + [None] * len(order), [0] * (len(order) + 1)
        for j in range(1, len(order) + 1):
            for i in range(j):
                if self.max_rows is not None and j - i > 1 and (j - i) * lengths[i] > self.max_rows:
                    continue
                cost = best[i] + self.pad_rows + (j - i) * lengths[i]
                if best[j] is None or cost < best[j]:
                    best[j], cut[j] = cost, i
        buckets, j = [], len(order)
        while j:
            buckets.append(sorted(order[cut[j] : j]))
            j = cut[j]
        return buckets[::-1]

    def _home(self, loops: list[DenoisingLoop], fresh: bool) -> _Home:
        """The stack `loops` run on: their home when it holds exactly them, a slice of it when they are a run
        of its slots (the others left or run elsewhere this step), else a new one they move to.
        `fresh`: the forward rewrites every row of the stores, so they are allocated, not copied."""
        home = self._homes[id(loops[0])]
        length = max(loop.length for loop in loops)
        if all(self._homes[id(loop)] is home for loop in loops[1:]):  # (a loop that moved on left a stale slot)
            if home.loops == loops:
                return home
            first = home.loops.index(loops[0])
            if home.loops[first : first + len(loops)] == loops and home.state.length - length <= self.pad_rows * (not fresh):
                return _Home(loops, _narrowed(home.state, first, len(loops)))
        owners = [loop.state for loop in loops]

        offsets = [length - loop.length for loop in loops]

        def stack(of, dim: int, fill, written: bool = False) -> Tensor:
            """Each owner's tensor right-aligned in one new tensor (one copy each; the padding filled)."""
            first = of(owners[0])
            shape = list(first.shape)
            shape[0], shape[dim] = len(owners), length
            out = first.new_empty(shape)
            if fresh and written:
                return out
            for slot, (own, off) in enumerate(zip(owners, offsets)):
                row = out[slot : slot + 1]
                row.narrow(dim, off, length - off).copy_(of(own))
                if off:
                    row.narrow(dim, 0, off).fill_(fill)
            return out

        pad = loops[0].special.pad
        kv = []
        for i, first in enumerate(owners[0].store.kv):
            k = stack(lambda s: s.store.kv[i].k, 2, 0.0, True)
            v = stack(lambda s: s.store.kv[i].v, 2, 0.0, True)
            q = None if first.q is None else stack(lambda s: s.store.kv[i].q, 2, 0.0, True)
            kv.append(LayerKV.of(k, v, q))
        inputs = None
        if owners[0].store.inputs is not None:
            inputs = [stack(lambda s: s.store.inputs[i], 1, 0.0, True) for i in range(len(kv))]
        state = CanvasState(
            canvas=stack(lambda s: s.canvas, 1, pad), valid=stack(lambda s: s.valid, 1, False),
            store=CanvasStore.of(kv, inputs), cos=stack(lambda s: s.cos, 1, 0.0), sin=stack(lambda s: s.sin, 1, 0.0),
            scratch=self._scratch,
        )
        if all(own.layer0 is not None for own in owners):  # reused while the home is (a group unchanged)
            state.layer0 = Layer0Rows(state.canvas)
        state.refresh_key_mask()
        home = _Home(loops, state)
        _stack_embeds(state, owners, home.offsets)
        for slot, (loop, off) in enumerate(zip(loops, home.offsets)):
            own = loop.state
            own.canvas = state.canvas[slot : slot + 1, off:]
            for mine, layer in zip(own.store.kv, kv):
                mine.point_to(layer.k[slot : slot + 1, :, off:], layer.v[slot : slot + 1, :, off:],
                              None if layer.q is None else layer.q[slot : slot + 1, :, off:])
            if inputs is not None:
                own.store.inputs = [x[slot : slot + 1, off:] for x in inputs]
            self._homes[id(loop)] = home
        return home

    def _merge(self, plans: list[StepPlan], loops: list[DenoisingLoop], offsets: list[int]) -> StepPlan:
        """One plan for a group of loops' plans (`_groups`: they agree on refresh_from and refresh_next)."""
        hooked = [p for p in plans if p.layer_hook is not None]
        probs = None
        if any(p.prob_positions is not None for p in plans):
            probs = _merge_positions(
                [p.prob_positions if p.prob_positions is not None else p.rows.index[:, :1] for p in plans], offsets
            )
        device = loops[0].state.canvas.device
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
            store_kv=all(p.store_kv for p in plans),
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


def _narrowed(state: CanvasState, start: int, n: int) -> CanvasState:
    """Sequences [start, start + n) of a stacked state, as views (no copy)."""
    cut = lambda x: None if x is None else x.narrow(0, start, n)  # noqa: E731
    kv = [LayerKV.of(cut(layer.k), cut(layer.v), cut(layer.q)) for layer in state.store.kv]
    inputs = None if state.store.inputs is None else [cut(x) for x in state.store.inputs]
    sub = CanvasState(canvas=cut(state.canvas), valid=cut(state.valid), store=CanvasStore.of(kv, inputs),
                      cos=cut(state.cos), sin=cut(state.sin), embeds=cut(state.embeds),
                      from_embeds=cut(state.from_embeds), embeds_end=state.embeds_end, scratch=state.scratch)
    sub.refresh_key_mask()
    return sub


def _store_kind(loop: DenoisingLoop) -> tuple[bool, bool]:
    store = loop.state.store
    return store.inputs is None, store.kv[0].q is None


def _stack_embeds(state: CanvasState, owners: list[CanvasState], offsets: list[int]) -> None:
    """Image-feature rows (LLaDA-V) side by side like the canvas; none when no member has any. They are
    read-only while a loop decodes, so each loop keeps its own copy and the stack a stacked one."""
    if all(own.embeds is None for own in owners):
        return
    d = next(own.embeds.shape[-1] for own in owners if own.embeds is not None)
    dtype, device = next((own.embeds.dtype, own.embeds.device) for own in owners if own.embeds is not None)
    embeds = torch.zeros(len(owners), state.length, d, dtype=dtype, device=device)
    from_embeds = torch.zeros(len(owners), state.length, dtype=torch.bool, device=device)
    end = 0
    for slot, (own, off) in enumerate(zip(owners, offsets)):
        if own.embeds is not None:
            embeds[slot, off:] = own.embeds[0]
            from_embeds[slot, off:] = own.from_embeds[0]
            end = max(end, off + own.embeds_end)
    state.embeds, state.from_embeds, state.embeds_end = embeds, from_embeds, end
