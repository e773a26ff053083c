"""LLaDA's Monte-Carlo log-likelihood (`unmask.lmeval.likelihood`) on the bundled model: exact
where the estimator has no randomness, centred on the exact expectation where it has little,
reproducible under a seed, tighter with more samples, and good enough that the gold answer of an
arith problem outscores wrong ones (directly and through lm-eval's multiple-choice scoring)."""

from __future__ import annotations

import statistics
import textwrap

import pytest
import torch

import unmask
from unmask.lmeval.likelihood import greedy_matches, mask_counts, mc_loglikelihood
from unmask.tasks import arith


@pytest.fixture(scope="module")
def tiny():
    return unmask.load("tiny", device="cpu")


@pytest.fixture(scope="module")
def problems():
    return arith.eval_split()[:12]


def _ids(tiny, problem):
    prefix = tiny.tokenizer.encode(tiny.chat_template.format(content=problem["question"]))
    return prefix, tiny.tokenizer.encode(problem["answer"])


def _estimate(tiny, prefix, target, seed, mc_num=32, batch_size=32, cfg_scale=0.0):
    generator = torch.Generator().manual_seed(seed)
    return mc_loglikelihood(tiny.module, prefix, target, tiny.special.mask, generator, mc_num, batch_size, cfg_scale)


def _log_probs(tiny, ids):
    with torch.inference_mode():
        return torch.log_softmax(tiny.module(torch.tensor([ids])).float(), -1)[0]


# LLaDA's get_log_likelihood.py (ML-GSAI/LLaDA b7e6c35) run on the bundled model (its module's
# logits), CPU, after torch.manual_seed(seed): the prefix is arith problem i's chat prompt and the
# target its gold answer. (problem, mc_num, batch_size, cfg_scale, seed, official estimate)
OFFICIAL = [
    (0, 8, 4, 0.0, 0, -0.25630633858963847),
    (1, 16, 16, 0.0, 1, -0.12920188903808594),
    (2, 12, 3, 0.5, 2, -1.4062805912690237),
    (3, 4, 1, 0.0, 3, -0.003911874578989227),
]


@pytest.mark.parametrize("problem, mc_num, batch_size, cfg_scale, seed, official", OFFICIAL)
def test_estimate_reproduces_llada_get_log_likelihood(tiny, problem, mc_num, batch_size, cfg_scale, seed, official):
    """Same seed, same draws: the masks come from a CPU generator in the official order
    (mask-count offset, then one permutation per row), so the numbers agree to float rounding."""
    prefix, target = _ids(tiny, arith.eval_split()[problem])
    estimate = _estimate(tiny, prefix, target, seed=seed, mc_num=mc_num, batch_size=batch_size, cfg_scale=cfg_scale)
    assert estimate == pytest.approx(official, rel=1e-6)


def test_mask_counts_are_stratified_over_one_period():
    for seed in range(5):
        counts = mask_counts(8, 4, torch.Generator().manual_seed(seed)).tolist()
        assert all(1 <= c <= 8 for c in counts)
        assert sorted((c - counts[0]) % 8 for c in counts) == [0, 2, 4, 6]


def test_one_token_target_is_scored_exactly(tiny, problems):
    prefix, target = _ids(tiny, problems[0])
    token = target[0]
    exact = _log_probs(tiny, prefix + [tiny.special.mask])[len(prefix), token].item()
    assert _estimate(tiny, prefix, [token], seed=3, mc_num=8, batch_size=4) == pytest.approx(exact, rel=1e-5)


def test_dream_predicts_each_position_from_the_row_before(dream):
    """Dream's logits are shifted by one (row i - 1 predicts token i); the estimate follows the
    module's own full forward, which applies that shift."""
    prefix, token = [5, 9, 12], 20
    exact = _log_probs(dream, prefix + [dream.special.mask])[len(prefix), token].item()
    assert _estimate(dream, prefix, [token], seed=0, mc_num=2, batch_size=2) == pytest.approx(exact, rel=1e-5)


def test_two_token_target_is_centred_on_the_exact_expectation(tiny, problems):
    """With L=2 and mini-batches of 2 the counts are always {1, 2}; only which token stays visible
    in the one-mask sample is random, so each mini-batch is one of two values, equally likely."""
    prefix, target = _ids(tiny, problems[0])
    a, b = target[:2]
    mask, n = tiny.special.mask, len(prefix)
    both = _log_probs(tiny, prefix + [mask, mask])
    only_a = _log_probs(tiny, prefix + [mask, b])[n, a].item()
    only_b = _log_probs(tiny, prefix + [a, mask])[n + 1, b].item()
    both_masked = both[n, a].item() + both[n + 1, b].item()
    values = [(2 * only_a + both_masked) / 2, (2 * only_b + both_masked) / 2]
    estimate = _estimate(tiny, prefix, [a, b], seed=0, mc_num=512, batch_size=2)
    assert min(values) <= estimate <= max(values)
    assert estimate == pytest.approx(sum(values) / 2, abs=0.2 * abs(values[0] - values[1]) + 1e-6)


def test_fixed_seed_is_reproducible_and_seeds_differ(tiny, problems):
    prefix, target = _ids(tiny, problems[1])
    first = _estimate(tiny, prefix, target, seed=11)
    assert _estimate(tiny, prefix, target, seed=11) == first
    assert _estimate(tiny, prefix, target, seed=12) != first


def test_variance_shrinks_as_mc_num_grows(tiny, problems):
    prefix, target = _ids(tiny, problems[2])
    few = [_estimate(tiny, prefix, target, seed=s, mc_num=2, batch_size=2) for s in range(12)]
    many = [_estimate(tiny, prefix, target, seed=s, mc_num=32, batch_size=2) for s in range(12)]
    assert statistics.variance(many) < statistics.variance(few) / 4


def test_guidance_changes_the_score_and_zero_guidance_does_not(tiny, problems):
    prefix, target = _ids(tiny, problems[3])
    plain = _estimate(tiny, prefix, target, seed=5)
    assert _estimate(tiny, prefix, target, seed=5, cfg_scale=0.0) == plain
    assert _estimate(tiny, prefix, target, seed=5, cfg_scale=1.0) != plain


def _wrong_answers(problem, other):
    """The gold solution with its final result off by one, and another problem's solution."""
    gold = problem["answer"]
    final = gold.rsplit("#### ", 1)[1]
    off = str(int(final) + 1)
    shifted = gold[: gold.rindex(final + ".")] + off + "." + gold[gold.rindex(final + ".") + len(final) + 1 : gold.rindex("#### ")] + "#### " + off
    return [shifted, other["answer"]]


def test_gold_answers_outscore_wrong_ones_on_most_problems(tiny, problems):
    wins = 0
    for i, problem in enumerate(problems):
        prefix, gold = _ids(tiny, problem)
        wrong = [tiny.tokenizer.encode(text) for text in _wrong_answers(problem, problems[(i + 1) % len(problems)])]
        gold_score = _estimate(tiny, prefix, gold, seed=i, mc_num=8, batch_size=8)
        wins += all(gold_score > _estimate(tiny, prefix, w, seed=i, mc_num=8, batch_size=8) for w in wrong)
    assert wins >= 0.75 * len(problems)


def test_greedy_check_agrees_with_one_token_per_step_decoding(tiny, problems):
    prefix, _ = _ids(tiny, problems[0])
    decoded = unmask.generate(tiny, input_ids=[prefix], gen_length=8, block_length=8, steps=8).token_ids[0]
    assert greedy_matches(tiny.module, prefix, decoded, tiny.special.mask)
    changed = decoded[:-1] + [(decoded[-1] + 1) % tiny.cfg.vocab_size]
    assert not greedy_matches(tiny.module, prefix, changed, tiny.special.mask)


def test_multiple_choice_task_through_lm_eval(tmp_path, problems):
    """A multiple-choice arith task (gold first among three) scored by lm-eval with --model unmask.

    The answer's first word is the assistant's prefix (lm-eval's gen_prefix, so the context ends in
    a word): a context ending in the template's "\n\n" would hand that newline to every choice, as
    lm-eval moves a context's trailing whitespace into the continuation, and the Monte-Carlo
    weighting (L / masked count) makes a masked template newline a loud, choice-independent noise."""
    pytest.importorskip("lm_eval")
    from lm_eval import simple_evaluate

    from unmask.lmeval import task_manager
    from unmask.lmeval.model import UnmaskLM

    (tmp_path / "arith_choice.yaml").write_text(textwrap.dedent("""\
        task: arith_choice
        custom_dataset: !function choice_utils.load
        output_type: multiple_choice
        test_split: test
        doc_to_text: "{{question}}"
        doc_to_choice: choices
        doc_to_target: 0
        target_delimiter: ""
        gen_prefix: "{{lead}}"
        metric_list:
          - metric: acc
        """))
    def lead_and_rest(text):
        lead, rest = text.split(" ", 1)
        return lead, " " + rest

    docs = []
    for i, p in enumerate(problems[:6]):
        answers = [p["answer"], *_wrong_answers(p, problems[(i + 1) % len(problems)])]
        docs.append({"question": p["question"], "lead": lead_and_rest(p["answer"])[0], "choices": [lead_and_rest(a)[1] for a in answers]})
    (tmp_path / "choice_utils.py").write_text(
        "import datasets\n\n\ndef load(**_):\n"
        f"    return datasets.DatasetDict({{'test': datasets.Dataset.from_list({docs!r})}})\n"
    )
    lm = UnmaskLM(model="tiny", device="cpu", mc_num=8, mc_batch_size=8)
    manager = task_manager(include_path=str(tmp_path), include_defaults=False)
    results = simple_evaluate(model=lm, tasks=["arith_choice"], task_manager=manager, apply_chat_template=True)
    assert results["results"]["arith_choice"]["acc,none"] >= 0.75
    assert results["config"]["unmask"]["loglikelihood"]["requests"] == 3 * len(docs)
