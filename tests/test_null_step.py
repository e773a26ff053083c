"""The baseline's step (cache=null) attends to its fresh K/V without storing them: same logits as storing."""

from __future__ import annotations

import pytest
import torch

import unmask
from unmask.engine import Rows, StepPlan, make_state, run_plan


@pytest.mark.parametrize("family", ["tiny", "dream"])
def test_unstored_kv_step_equals_the_storing_step(family, request):
    model = unmask.load("tiny") if family == "tiny" else request.getfixturevalue(family)
    module = model.module
    canvas = torch.randint(4, module.cfg.vocab_size, (2, 90), generator=torch.Generator().manual_seed(3))
    valid = torch.ones_like(canvas, dtype=torch.bool)
    valid[0, :5] = False
    logits_rows = Rows.range(40, 72, 2)
    with torch.inference_mode():
        stored = make_state(module, canvas, valid)
        want = run_plan(module, stored, StepPlan(rows=stored.all_rows(), logit_positions=logits_rows)).logits
        fresh = make_state(module, canvas, valid)
        got = run_plan(module, fresh, StepPlan(rows=fresh.all_rows(), logit_positions=logits_rows, store_kv=False)).logits
    assert torch.equal(got, want)
    assert all(not bool(kv.k.any()) for kv in fresh.store.kv)  # nothing was written


def test_null_policy_plans_no_store_and_partial_rows_are_refused(llada):
    from unmask.caches.null import NullCache
    from unmask.engine.plan import StepContext
    from unmask.options import GenerationOptions

    opts = GenerationOptions.build("llada", gen_length=8, block_length=8)
    policy = NullCache({}, llada.module, opts, llada.special)
    state = make_state(llada.module, torch.tensor([[5, 6, 7] + [llada.special.mask] * 8]), torch.ones(1, 11, dtype=torch.bool))
    plan = policy.plan(state, StepContext(0, 0, (3, 11), 3, state.canvas == llada.special.mask))
    assert plan.store_kv is False and plan.rows.span == (0, 11)
    with pytest.raises(ValueError, match="every row"):
        run_plan(llada.module, state, StepPlan(rows=Rows.range(3, 11, 1), logit_positions=Rows.range(3, 11, 1), store_kv=False))
