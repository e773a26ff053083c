"""The last layer projects queries only for the rows that give logits: same logits as the module's forward."""

from __future__ import annotations

import pytest
import torch

import unmask
from unmask.engine import Rows, StepPlan, make_state, run_plan
from unmask.models.layers import SUBSET_MIN_ROWS


@pytest.mark.parametrize("family", ["tiny", "llada"])
@pytest.mark.parametrize("store_kv", [True, False])
def test_kept_queries_give_the_module_forward_logits(family, store_kv, request, monkeypatch):
    model = unmask.load("tiny") if family == "tiny" else request.getfixturevalue(family)
    module = model.module
    canvas = torch.randint(4, module.cfg.vocab_size, (2, 100), generator=torch.Generator().manual_seed(5))
    valid = torch.ones_like(canvas, dtype=torch.bool)
    valid[1, :9] = False
    last = module.layers[-1]
    used = []
    real = last.kept_qkv
    monkeypatch.setattr(last, "kept_qkv", lambda *a: used.append(real(*a) is not None) or real(*a))
    with torch.inference_mode():
        want = module(canvas, attention_mask=valid.long())
        for start, width in ((40, SUBSET_MIN_ROWS), (60, 40), (50, 8)):
            state = make_state(module, canvas, valid)
            plan = StepPlan(rows=state.all_rows(), logit_positions=Rows.range(start, start + width, 2), store_kv=store_kv)
            got = run_plan(module, state, plan).logits
            assert torch.equal(got, want[:, start : start + width]), (start, width)
    assert used == [True, True, False]  # 8 kept rows: every query is projected (a short product may differ)
