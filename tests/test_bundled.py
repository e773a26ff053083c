"""The shipped model: it loads by default and its accuracy matches its model card."""

import json
import math
from pathlib import Path

import unmask
from unmask.tasks import answers, arith

CARD = Path(unmask.__file__).parent / "assets" / "tiny" / "card.json"


def test_bundled_model_loads_by_default_in_llada_format():
    model = unmask.load("tiny")
    assert model.cfg.family == "llada"
    config = json.loads((Path(model.path) / "config.json").read_text())
    assert config["architectures"] == ["LLaDAModelLM"] and "d_model" in config
    assert model.tokenizer.token_to_id("<|mdm_mask|>") == model.special.mask


def test_bundled_model_accuracy_matches_its_card():
    """Baseline decoding (blocks of 32, one token per step) on 20 eval problems vs the card's accuracy."""
    card = json.loads(CARD.read_text())
    expected = card["baseline_accuracy"]
    model = unmask.load("tiny")
    problems = arith.eval_split()[:20]
    result = unmask.generate(model, prompts=[p["question"] for p in problems], gen_length=256, block_length=32,
                             stop_until_eos=True)
    correct = sum(answers.is_correct(t, p["answer"]) for t, p in zip(result.texts, problems))
    # Three standard deviations of a 20-sample estimate, plus a little slack for the split's first 20.
    tolerance = 3 * math.sqrt(max(expected * (1 - expected), 0.01) / 20) + 0.05
    assert abs(correct / 20 - expected) <= tolerance, (correct, expected)
    assert all(model.special.mask not in row for row in result.token_ids)
