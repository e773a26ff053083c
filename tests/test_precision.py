"""Each loop's confidence precision, and the commit order it implies under exact ties.

LLaDA's generate.py takes the softmax in the logits' own dtype, so near-certain tokens tie at
exactly 1.0 and torch.topk's order among ties decides which position is committed; Fast-dLLM's
loops take it in float64. The reference order below was recorded from LLaDA's official
generate.py and dLLM-Cache's generate on the bundled model (tests/data/llada_official_order.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import unmask
from unmask.decoding import selection
from unmask.decoding.sampling import llada_candidates

RECORD = json.loads((Path(__file__).parent / "data" / "llada_official_order.json").read_text())


@pytest.fixture(scope="module")
def tiny():
    return unmask.load("tiny")


def _order(result) -> list[list[int]]:
    return [step.committed[0] for step in result.trace]


def test_baseline_commits_in_llada_official_order(tiny):
    for case in RECORD["cases"]:
        result = unmask.generate(tiny, input_ids=[case["prompt_ids"]], trace=True, **RECORD["settings"])
        assert result.token_ids[0] == case["tokens"]
        assert _order(result) == case["order"]


def test_float64_confidence_changes_the_order_under_ties(tiny):
    """The former float64 softmax breaks the float32 ties differently: the option is honoured."""
    case = RECORD["cases"][0]
    result = unmask.generate(
        tiny, input_ids=[case["prompt_ids"]], trace=True, confidence_dtype="float64", **RECORD["settings"]
    )
    assert _order(result) != case["order"]


def test_logits_precision_ties_where_float64_does_not():
    logits = torch.tensor([[[0.0, 20.0, 0.0], [0.0, 22.0, 0.0]]], dtype=torch.float32)
    _, conf32 = llada_candidates(logits, 0.0, "low_confidence", None, "logits")
    _, conf64 = llada_candidates(logits, 0.0, "low_confidence", None, "float64")
    assert conf32.dtype == torch.float64  # widened exactly: ties stay ties
    assert conf32[0, 0] == conf32[0, 1] == 1.0
    assert conf64[0, 0] < conf64[0, 1] < 1.0


def test_top_k_ranks_each_row_with_its_own_k():
    """Rows with different k are ranked as the reference loops rank them: one topk per row."""
    conf = torch.ones(2, 64, dtype=torch.float64)
    k = torch.tensor([1, 3])
    out = selection.select_top_k(conf, k)
    assert out.sum(-1).tolist() == [1, 3]
    assert out[0].nonzero().flatten().tolist() == torch.topk(conf[0], 1).indices.tolist()
    assert sorted(out[1].nonzero().flatten().tolist()) == sorted(torch.topk(conf[1], 3).indices.tolist())


def test_confidence_dtype_is_validated(tiny):
    with pytest.raises(ValueError, match="confidence_dtype='half'.*valid choices"):
        unmask.generate(tiny, prompts=["1 + 1"], gen_length=32, confidence_dtype="half")
    with pytest.raises(ValueError, match="applies to alg=low_confidence"):
        unmask.generate(tiny, prompts=["1 + 1"], gen_length=32, alg="random", confidence_dtype="float64")


def test_ties_break_the_same_in_a_left_padded_batch(tiny):
    """A padded row is ranked over the vector it has alone: the order does not depend on the batch.

    Two commits per step, so torch.topk's order among tied confidences matters (with one per
    step it does not show).
    """
    prompts = [case["prompt_ids"] for case in RECORD["cases"]]
    assert len({len(p) for p in prompts}) > 1  # the batch pads
    settings = {**RECORD["settings"], "steps": 32}
    batched = unmask.generate(tiny, input_ids=prompts, trace=True, **settings)
    for i, prompt in enumerate(prompts):
        alone = unmask.generate(tiny, input_ids=[prompt], trace=True, **settings)
        assert batched.token_ids[i] == alone.token_ids[0]
        assert [step.committed[i] for step in batched.trace] == _order(alone)


def test_dllm_cache_commits_in_its_official_order(tiny):
    """dLLM-Cache's loop ranks the generated region in the logits' dtype; two commits per step."""
    record = RECORD["dllm"]
    for run in record["runs"]:
        for case, expected in zip(RECORD["cases"], run["results"]):
            result = unmask.generate(
                tiny, input_ids=[case["prompt_ids"]], cache=run["cache"], trace=True, **record["settings"]
            )
            assert result.token_ids[0] == expected["tokens"]
            assert _order(result) == expected["order"], run["cache"]


def test_confidence_eos_eot_inf_hides_the_stop_logits_as_llada_does(tiny):
    """LLaDA's option sets the stop logits to -inf before the confidence softmax (EoT always, EOS too at
    temperature 0): stop candidates score 0 and every other confidence renormalises without their mass."""
    record = RECORD["confidence_eos_eot_inf"]
    for run in record["runs"]:
        for case, expected in zip(RECORD["cases"], run["results"]):
            result = unmask.generate(
                tiny, input_ids=[case["prompt_ids"]], trace=True, confidence_eos_eot_inf=True, **run["settings"]
            )
            assert result.token_ids[0] == expected["tokens"]
            assert _order(result) == expected["order"]


def test_hidden_ids_score_zero_and_the_rest_renormalise():
    logits = torch.log(torch.tensor([[[0.5, 0.1, 0.4], [0.2, 0.7, 0.1]]], dtype=torch.float64))
    x0, conf = llada_candidates(logits, 0.0, "low_confidence", None, "float64", hidden_ids=(0,))
    assert x0.tolist() == [[0, 1]]  # x0 is chosen before the stop logit is hidden
    assert conf[0, 0] == 0.0
    assert conf[0, 1].item() == pytest.approx(0.7 / 0.8)
