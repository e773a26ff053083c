"""Full forwards that keep layer 0's Q/K/V between calls give the same bits as recomputing every row."""

from __future__ import annotations

import pytest
import torch

import unmask
from unmask.engine import Rows, StepPlan, make_state, run_plan
from unmask.engine.layer0 import MIN_ROWS, Layer0Rows

# Positions changed before each forward: none (the first), one row, rows at both ends, none, rows far
# apart, most rows, two neighbours; and how many rows layer 0 must then project (full: 120).
EDITS = [([], 120), ([70], MIN_ROWS), ([0, 119], 120), ([], 0), ([5, 64, 110], 120), (list(range(10, 110)), 120), ([71, 72], MIN_ROWS)]


def _spy_projected_rows(module, monkeypatch) -> list[int]:
    """Rows layer 0 projects, one entry per call."""
    layer, seen = module.layers[0], []
    real = layer.qkv

    def spy(normed, *rest):
        seen.append(normed.shape[1])
        return real(normed, *rest)

    monkeypatch.setattr(layer, "qkv", spy)
    return seen


@pytest.mark.parametrize("family", ["tiny", "dream"])
def test_layer0_reuse_equals_full_recompute(family, request, monkeypatch):
    model = unmask.load("tiny") if family == "tiny" else request.getfixturevalue(family)
    module = model.module
    g = torch.Generator().manual_seed(0)
    vocab = module.cfg.vocab_size
    canvas = torch.randint(4, vocab, (2, 120), generator=g)
    valid = torch.ones_like(canvas, dtype=torch.bool)
    valid[1, :7] = False  # a left-padded second sequence
    kept = make_state(module, canvas.clone(), valid, reuse_layer0=True)
    assert kept.layer0 is not None
    logits_rows = Rows.range(60, 92, 2)
    seen = _spy_projected_rows(module, monkeypatch)
    with torch.inference_mode():
        for edit, rows in EDITS:
            for pos in edit:
                kept.canvas[:, pos] = (kept.canvas[:, pos] + 1 + pos) % vocab
            fresh = make_state(module, kept.canvas.clone(), valid)
            ref = run_plan(module, fresh, StepPlan(rows=fresh.all_rows(), logit_positions=logits_rows)).logits
            before = len(seen)
            out = run_plan(module, kept, StepPlan(rows=kept.all_rows(), logit_positions=logits_rows)).logits
            assert sum(seen[before:]) == rows, f"rows projected after changing {edit}"
            assert torch.equal(out, ref), f"logits differ after changing rows {edit}"
            for a, b in zip(kept.store.kv, fresh.store.kv):
                assert torch.equal(a.k, b.k) and torch.equal(a.v, b.v)


def test_generation_with_layer0_reuse_commits_the_same_tokens(monkeypatch):
    """The baseline loop with reuse commits the tokens of forwards that project every row each step."""
    model = unmask.load("tiny")
    opts = dict(gen_length=64, block_length=32, steps=64, stop_until_eos=False)
    prompt = [[1, 40, 50, 60, 70, 80]]
    seen = _spy_projected_rows(model.module, monkeypatch)
    with_reuse = unmask.generate(model, input_ids=prompt, **opts).token_ids
    assert seen[0] == 70 and set(seen[1:]) == {MIN_ROWS}
    seen.clear()
    monkeypatch.setattr(Layer0Rows, "supported", staticmethod(lambda device, dtype, shape: False))
    without = unmask.generate(model, input_ids=prompt, **opts).token_ids
    assert set(seen) == {70} and len(seen) == 64
    assert with_reuse == without


@pytest.mark.parametrize("width", [128, 1024])
def test_min_rows_products_match_the_full_product_rows(width):
    """The premise of the reuse (and of the last layer's kept queries): in float32 on CPU a product over
    MIN_ROWS (or more) rows, or over some of the weight's rows, gives the same bits as that part of the
    full product (a product of one row or a few may not, and neither path runs one)."""
    g = torch.Generator().manual_seed(1)
    if width == 128:
        layer = unmask.load("tiny").module.layers[0]
        weight = torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight])
    else:
        weight = torch.randn(3 * width, width, generator=g) * 0.03
    x = torch.randn(300, width, generator=g)
    shape = tuple(weight.shape)
    assert Layer0Rows.supported(x.device, x.dtype, shape) and not Layer0Rows.supported(x.device, torch.bfloat16, shape)
    with torch.inference_mode():
        full = torch.mm(x, weight.t())
        for rows in (MIN_ROWS, MIN_ROWS + 5, 2 * MIN_ROWS):
            for start in range(0, 300 - rows, 37):
                assert torch.equal(torch.mm(x[start : start + rows], weight.t()), full[start : start + rows])
        assert torch.equal(torch.mm(x, weight[width:].t()), full[:, width:])
        assert torch.equal(torch.mm(x[40 : 40 + MIN_ROWS], weight[:width].t()), full[40 : 40 + MIN_ROWS, :width])


def test_a_machine_whose_subset_products_differ_projects_every_row(monkeypatch):
    """Where the once-per-shape probe finds that a row span's product differs from the full product's
    rows (another BLAS or processor), neither row-subset path runs: every forward projects every row."""
    from unmask.models import layers

    real_mm = torch.mm

    def mm_off_by_ulp_below_full(a, b, *args, **kwargs):  # a BLAS whose short products round differently
        out = real_mm(a, b, *args, **kwargs)
        return torch.nextafter(out, torch.full_like(out, float("inf"))) if a.shape[0] < 100 else out

    layers._subset_products_agree.cache_clear()
    monkeypatch.setattr(torch, "mm", mm_off_by_ulp_below_full)
    try:
        assert not layers.subset_rows_exact(torch.device("cpu"), torch.float32, MIN_ROWS, (96, 32))
    finally:
        monkeypatch.undo()
        layers._subset_products_agree.cache_clear()
    assert layers.subset_rows_exact(torch.device("cpu"), torch.float32, MIN_ROWS, (96, 32))
    model = unmask.load("tiny")
    monkeypatch.setattr(layers, "_subset_products_agree", lambda out_features, in_features: False)
    canvas = torch.randint(4, 100, (1, 80))
    state = make_state(model.module, canvas, torch.ones_like(canvas, dtype=torch.bool), reuse_layer0=True)
    assert state.layer0 is None
