"""The commit rule alone, on hand-made confidences: each rule of "which positions this step commits".

One canvas of 8 generated positions (gen_start 0, one block) unless a test says otherwise.
"""

import math

import torch

from unmask.decoding.commit import CommitContext, CommitRule
from unmask.options import GenerationOptions

NEG = -math.inf
T = 8


def make_rule(family="llada", padding=None, seed=None, gen_length=T, **options) -> CommitRule:
    opts = GenerationOptions.build(family, gen_length=gen_length, block_length=gen_length, **options)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return CommitRule(opts, padding, generator)


def bools(*rows) -> torch.Tensor:
    return torch.tensor([[bool(c) for c in row] for row in rows])


def confs(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def ctx(masked, block_step=0, span=None, first_mask_only=False) -> CommitContext:
    return CommitContext(block=(0, masked.shape[1]), block_step=block_step, gen_start=0, masked=masked,
                         span=span or (0, masked.shape[1]), first_mask_only=first_mask_only)


def committed(rule, conf, candidates, **context) -> list[list[int]]:
    out = rule.commit(conf, candidates, ctx(candidates, **context))
    return [row.nonzero().flatten().tolist() for row in out]


def test_linear_schedule_gives_the_remainder_to_the_first_steps():
    rule = make_rule(steps=2)
    rule.start_block(torch.tensor([5]))  # 5 masks over 2 steps: 3 then 2
    conf = confs([0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.9, 0.9])
    masked = bools([1, 1, 1, 1, 1, 0, 0, 0])
    assert committed(rule, conf, masked) == [[2, 3, 4]]
    assert committed(rule, conf, bools([1, 1, 0, 0, 0, 0, 0, 0]), block_step=1) == [[0, 1]]


def test_linear_schedule_counts_are_fixed_at_the_block_start():
    rule = make_rule(steps=4)
    rule.start_block(torch.tensor([2]))  # 1, 1, 0, 0
    conf = confs([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    everything = bools([1] * T)
    assert committed(rule, conf, everything, block_step=1) == [[7]]  # not recounted from the 8 masks
    assert committed(rule, conf, everything, block_step=2) == [[]]  # a zero count before the last step: nothing


def test_linear_schedule_keeps_making_progress_at_and_past_the_budget():
    rule = make_rule(steps=2)
    rule.start_block(torch.tensor([1]))  # 1, 0
    conf = confs([0.1, 0.6, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1])
    masked = bools([1, 1, 1, 0, 0, 0, 0, 0])
    assert committed(rule, conf, masked, block_step=1) == [[1]]  # last step: at least one
    assert committed(rule, conf, masked, block_step=5) == [[1]]  # past the budget: one per step


def test_top_k_takes_each_rows_own_count():
    rule = make_rule(steps=2)
    rule.start_block(torch.tensor([4, 2]))  # row 0: 2 per step, row 1: 1 per step
    conf = confs([0.1, 0.9, 0.5, 0.7, NEG, NEG, NEG, NEG], [0.3, 0.8, 0.2, 0.9, NEG, NEG, NEG, NEG])
    masked = bools([1, 1, 1, 1, 0, 0, 0, 0], [0, 1, 0, 1, 0, 0, 0, 0])
    assert committed(rule, conf, masked) == [[1, 3], [3]]


def test_candidates_forced_to_minus_inf_are_selectable_last():
    rule = make_rule(steps=2)
    rule.start_block(torch.tensor([3]))  # 2, 1
    conf = confs([NEG, 0.3, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9])
    candidates = bools([1, 1, 1, 0, 0, 0, 0, 0])  # the 0.9s are not candidates
    assert committed(rule, conf, candidates) == [[1, 2]]
    assert committed(rule, conf, bools([1, 0, 0, 0, 0, 0, 0, 0]), block_step=1) == [[0]]
    threshold = make_rule(threshold=0.5)
    assert committed(threshold, confs([NEG] * T), bools([0, 1, 1, 0, 0, 0, 0, 0])) == [[1]]  # still one


def test_eps_schedule_counts_truncate_the_float32_ratio_and_end_with_all():
    rule = make_rule("dream", steps=4)
    rule.start_block(torch.tensor([T]))
    conf = confs([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    everything = bools([1] * T)
    # t = linspace(1, 1e-3, 5): 8 * (1 - t[i+1] / t[i]) = 1.998, 2.66, 3.99 -> 1, 2, 3; the last step commits all.
    assert committed(rule, conf, everything) == [[7]]
    assert committed(rule, conf, everything, block_step=1) == [[6, 7]]
    assert committed(rule, conf, everything, block_step=2) == [[5, 6, 7]]
    assert committed(rule, conf, everything, block_step=3) == [list(range(T))]
    assert committed(rule, conf, everything, block_step=6) == [list(range(T))]  # past the budget: as the last


def test_origin_commits_each_candidate_with_the_schedule_ratio_from_the_request_generator():
    candidates = bools([1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1])
    conf = torch.zeros(2, T, dtype=torch.float64)
    rule = make_rule("dream", seed=7, alg="origin", steps=2)
    rule.start_block(candidates.sum(-1))
    u = torch.rand((2, T), dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    expected = candidates & (u < 1 - 0.5005)  # t = linspace(1, 1e-3, 3): 1 - t[1] / t[0]
    assert committed(rule, conf, candidates) == [row.nonzero().flatten().tolist() for row in expected]
    assert committed(rule, conf, candidates, block_step=1) == [[0, 1, 2, 3, 4, 5], list(range(T))]


def test_threshold_commits_every_candidate_at_or_above_it_and_at_least_the_best():
    rule = make_rule(threshold=0.9)
    conf = confs([0.95, 0.5, 0.9, 0.99, 0.1, 0.1, 0.1, 0.1], [0.2, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    candidates = bools([1, 1, 1, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1])
    assert committed(rule, conf, candidates) == [[0, 2], [1]]


def test_factor_commits_the_longest_sorted_prefix_the_rule_allows_among_candidates():
    rule = make_rule(factor=0.5)
    # candidates sorted 0.97, 0.9, 0.8, 0.6: (n + 1)(1 - c_n) = 0.06, 0.3, 0.8, 2.0 -> the first two;
    # counting the non-candidate 0.999 would give 0.002, 0.09, 0.4, 1.0 -> three.
    conf = confs([0.8, 0.97, 0.6, 0.9, 0.1, 0.1, 0.1, 0.999])
    candidates = bools([1, 1, 1, 1, 1, 1, 1, 0])
    assert committed(rule, conf, candidates) == [[1, 3]]
    low = confs([0.1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert committed(rule, low, candidates) == [[1]]  # the rule never holds: still the best


def test_alg_temp_draws_the_scheduled_count_from_the_softmax_of_confidences():
    candidates = bools([1, 1, 1, 1, 1, 1, 0, 0])
    peaked = confs([0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 1.0, 1.0])
    rule = make_rule("dream", seed=0, alg_temp=0.01, steps=2)
    rule.start_block(torch.tensor([6]))  # eps: int(6 * 0.4995) = 2
    assert committed(rule, peaked, candidates) == [[0, 3]]
    flat = confs([0.5] * T)
    drawn = set()
    for seed in range(10):
        rule = make_rule("dream", seed=seed, alg_temp=1.0, steps=2)
        rule.start_block(torch.tensor([6]))
        picks = committed(rule, flat, candidates)[0]
        assert len(picks) == 2 and max(picks) < 6
        drawn.add(tuple(picks))
    assert len(drawn) > 1  # drawn, not ranked


def test_first_mask_rule_commits_only_the_first_candidate_whatever_its_confidence():
    rule = make_rule("dream", threshold=0.9)
    conf = confs([0.99, 0.99, 0.1, 0.95, 0.99, 0.99, 0.99, 0.99], [0.99, 0.99, 0.99, 0.1, 0.2, 0.3, 0.99, 0.99])
    candidates = bools([0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 0, 0])
    assert committed(rule, conf, candidates, first_mask_only=True) == [[2], [3]]
    assert committed(rule, conf, candidates) == [[3, 4, 5, 6, 7], [5]]


def test_span_limits_what_is_ranked():
    rule = make_rule(threshold=0.9)
    conf = confs([0.1, 0.1, 0.99, 0.1, 0.1, 0.95, 0.1, 0.1])
    assert committed(rule, conf, bools([1] * T), span=(4, T)) == [[5]]


def test_a_left_padded_row_is_ranked_as_when_it_decodes_alone():
    # Exact ties: which of the tied candidates top-k returns depends on the vector it ranks.
    pad, row = 4, [1.0] * 12 + [0.5] * 4
    conf = confs([NEG] * pad + row, [1.0] * 20)
    candidates = torch.isfinite(conf)
    batch = make_rule(padding=[pad, 0], gen_length=20, steps=4)
    batch.start_block(candidates.sum(-1))
    alone = make_rule(gen_length=16, steps=4)
    alone.start_block(torch.tensor([16]))
    assert committed(batch, conf, candidates)[0] == [p + pad for p in committed(alone, confs(row), candidates[:1, pad:])[0]]


def test_certainty_prior_favours_masks_next_to_decoded_tokens_and_leaves_the_input_alone():
    masked = bools([0, 0, 1, 1, 1, 1, 1, 1])  # positions 0 and 1 are decoded
    conf = confs([NEG, NEG, 0.5, 0.4, 0.4, 0.4, 0.4, 0.55])
    before = conf.clone()
    plain = make_rule()
    plain.start_block(torch.tensor([6]))
    assert committed(plain, conf, masked) == [[7]]
    rule = make_rule(sigma=1.0)
    rule.start_block(torch.tensor([6]))
    assert committed(rule, conf, masked) == [[2]]  # position 7 has no decoded neighbour: density 0
    assert torch.equal(conf, before)
