"""Parallel-decoding rules and schedules on hand-made confidences."""

import math

import torch

from unmask.decoding import prior, schedule, selection

NEG = -math.inf


def test_threshold_commits_all_above_tau_and_at_least_one():
    conf = torch.tensor([[0.95, 0.5, 0.91, NEG], [0.2, 0.3, NEG, NEG], [NEG, NEG, NEG, NEG]], dtype=torch.float64)
    out = selection.select_threshold(conf, 0.9)
    assert out[0].tolist() == [True, False, True, False]
    assert out[1].tolist() == [False, True, False, False]  # none above tau: the single best
    assert not out[2].any()  # no candidates: nothing


def test_factor_rule_on_hand_made_confidences():
    # sorted: 0.99, 0.95, 0.9, 0.5 -> (n+1)(1-c_n): 0.04, 0.15, 0.4, 2.5
    conf = torch.tensor([[0.9, 0.99, 0.5, 0.95]], dtype=torch.float64)
    assert selection.select_factor(conf, 0.5)[0].tolist() == [True, True, False, True]
    assert selection.select_factor(conf, 0.1)[0].tolist() == [False, True, False, False]
    low = torch.tensor([[0.1, 0.2, NEG]], dtype=torch.float64)  # rule never holds: still the best one
    assert selection.select_factor(low, 0.5)[0].tolist() == [False, True, False]


def test_top_k_respects_per_row_k_and_ignores_non_candidates():
    conf = torch.tensor([[0.1, 0.9, 0.5, NEG], [0.3, NEG, NEG, NEG]], dtype=torch.float64)
    out = selection.select_top_k(conf, torch.tensor([2, 3]))
    assert out[0].tolist() == [False, True, True, False]
    assert out[1].tolist() == [True, False, False, False]


def test_linear_schedule_spreads_remainder_to_early_steps():
    counts = schedule.linear_counts(torch.tensor([10, 8]), 4)
    assert counts.tolist() == [[3, 3, 2, 2], [2, 2, 2, 2]]


def test_eps_schedule_commits_all_at_last_step():
    masks = torch.tensor([32])
    total, left = 0, 32
    for i in range(8):
        k = int(schedule.eps_count(torch.tensor([left]), i, 8, 1e-3))
        assert 0 <= k <= left
        total += k
        left -= k
    assert total == 32 and left == 0
    assert int(schedule.eps_count(masks, 7, 8, 1e-3)) == 32


def test_eps_schedule_uses_float32_like_dream():
    # Dream's code takes t = torch.linspace(1, eps, steps + 1) in float32 and truncates
    # n * (1 - t[i+1] / t[i]); here float32 gives 37 where float64 arithmetic gives 36.
    assert int(schedule.eps_count(torch.tensor([223]), 21, 27, 1e-3)) == 37
    assert int(schedule.eps_count(torch.tensor([186]), 22, 27, 1e-3)) == 36  # and 36 where float64 gives 37


def test_certainty_density_prefers_positions_next_to_decoded():
    decoded = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    d = prior.certainty_density(decoded, 1.0)[0]
    assert d[2] > d[4]  # next to decoded tokens
    assert d[6] > d[4]
    all_decoded = prior.certainty_density(torch.ones(1, 5, dtype=torch.bool), 1.0)
    assert torch.allclose(all_decoded[0, :3], torch.ones(3, dtype=torch.float64), atol=0.01)
