"""Baseline denoising: schedule, determinism, batching, validation errors."""

import pytest

import unmask


def test_schedule_commits_spec_counts_per_step(llada):
    r = unmask.generate(llada, input_ids=[[5, 6, 7]], gen_length=16, block_length=8, steps=6, trace=True)
    counts = [len(s.committed[0]) for s in r.trace]
    assert counts == [3, 3, 2, 3, 3, 2]  # 8 masks over 3 steps per block, remainder first
    assert r.nfe == [6]
    assert all(0 <= off < 8 for s in r.trace[:3] for off in s.committed[0])  # block 1 first
    assert all(8 <= off < 16 for s in r.trace[3:] for off in s.committed[0])
    mask = llada.special.mask
    assert mask not in r.token_ids[0]


def test_greedy_is_deterministic_and_seed_reproducible(llada):
    a = unmask.generate(llada, input_ids=[[5, 6, 7]], gen_length=8, block_length=8)
    b = unmask.generate(llada, input_ids=[[5, 6, 7]], gen_length=8, block_length=8)
    assert a.token_ids == b.token_ids
    s1 = unmask.generate(llada, input_ids=[[5, 6, 7]], gen_length=16, block_length=8, temperature=1.0, seed=3)
    s2 = unmask.generate(llada, input_ids=[[5, 6, 7]], gen_length=16, block_length=8, temperature=1.0, seed=3)
    s3 = unmask.generate(llada, input_ids=[[5, 6, 7]], gen_length=16, block_length=8, temperature=1.0, seed=4)
    assert s1.token_ids == s2.token_ids
    assert s1.token_ids != s3.token_ids


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_batch_invariance_with_mixed_prompt_lengths(family, request):
    model = request.getfixturevalue(family)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    batch = unmask.generate(model, input_ids=prompts, gen_length=16, block_length=8)
    for i, p in enumerate(prompts):
        alone = unmask.generate(model, input_ids=[p], gen_length=16, block_length=8)
        assert alone.token_ids[0] == batch.token_ids[i]


def test_dream_algorithms_run_and_commit_everything(dream):
    for alg in ["maskgit_plus", "topk_margin", "entropy", "origin"]:
        r = unmask.generate(dream, input_ids=[[5, 6]], gen_length=8, block_length=8, steps=4, alg=alg, seed=0)
        assert dream.special.mask not in r.token_ids[0]
    r = unmask.generate(dream, input_ids=[[5, 6]], gen_length=8, steps=8, block_length=8, alg="maskgit_plus",
                        temperature=0.5, top_p=0.9, top_k=5, seed=0)
    assert len(r.token_ids[0]) == 8


def test_cfg_counts_two_forwards_per_step(llada):
    r = unmask.generate(llada, input_ids=[[5, 6, 7]], gen_length=8, block_length=8, steps=4, cfg_scale=1.0)
    assert r.nfe == [8]


def test_eos_options_keep_eos_out(llada):
    r = unmask.generate(llada, input_ids=[[5, 6, 7]], gen_length=16, block_length=8,
                        logits_eos_inf=True, confidence_eos_eot_inf=True)
    assert llada.special.eos not in r.token_ids[0]


def test_stop_until_eos_fills_tail_and_finishes_early(llada):
    eos = llada.special.eos
    base = unmask.generate(llada, input_ids=[[5, 6, 7]], gen_length=32, block_length=8)
    stopped = unmask.generate(llada, input_ids=[[5, 6, 7]], gen_length=32, block_length=8, stop_until_eos=True)
    first = base.answer_tokens[0]
    assert stopped.answer_tokens[0] <= 32
    if first < 32:  # an EOS/EOT was produced: the tail is EOS and fewer forwards ran
        tail = stopped.token_ids[0][stopped.answer_tokens[0] + 1 :]
        assert all(t == eos for t in tail)


def test_text_prompts_use_chat_template(llada):
    r = unmask.generate(llada, prompts=["a b c"], gen_length=8, block_length=8)
    ids = r.prompt_ids[0]
    assert ids[0] == llada.special.bos  # <|startoftext|> from the template
    assert llada.tokenizer.token_to_id("<|start_header_id|>") in ids


@pytest.mark.parametrize(
    "options, message",
    [
        ({"gen_length": 30, "block_length": 8}, "multiple of generation.block_length"),
        ({"gen_length": 16, "block_length": 8, "steps": 3}, "multiple of the number of blocks"),
        ({"alg": "greedy"}, "valid choices"),
        ({"remasking": "entropy"}, "valid choices"),
        ({"threshold": 0.9, "factor": 1.0}, "not both"),
        ({"threshold": 0.9, "steps": 16, "gen_length": 16, "block_length": 16}, "leave steps unset"),
        ({"top_p": 0.9}, "apply to the Dream algorithms"),
        ({"sigma": 1.0, "alg": "random"}, "probability confidence"),
        ({"bogus": 1}, "unknown generation option"),
        ({"gen_length": 600, "block_length": 600}, "maximum length"),
    ],
)
def test_bad_options_fail_with_clear_message(llada, options, message):
    with pytest.raises(ValueError, match=message):
        unmask.generate(llada, input_ids=[[5, 6]], **options)


def test_bad_prompt_arguments(llada):
    with pytest.raises(ValueError, match="exactly one"):
        unmask.generate(llada)
    with pytest.raises(ValueError, match="at least one token"):
        unmask.generate(llada, input_ids=[[]])


@pytest.mark.parametrize(
    "options, says",
    [
        ({"sigma": 1e308}, "sigma=1e+308 must be in [0, 10000]"),
        ({"eps": 0.0}, "eps=0.0 must be in (0, 1)"),
        ({"alg_temp": -1.0}, "alg_temp=-1.0 must be >= 0"),
        ({"temperature": float("inf")}, "temperature=inf must be a finite number"),
        ({"cfg_scale": float("nan")}, "cfg_scale=nan must be a finite number"),
        ({"factor": float("inf")}, "factor=inf must be a finite number"),
        ({"top_p": 0.0, "alg": "entropy"}, "top_p=0.0 must be in (0, 1]"),
        ({"top_k": -1, "alg": "entropy"}, "top_k=-1 must be a whole number >= 0"),
    ],
)
def test_out_of_range_options_are_refused_by_name(llada, options, says):
    with pytest.raises(ValueError) as err:
        unmask.generate(llada, prompts=["a b"], gen_length=8, block_length=8, **options)
    assert says in str(err.value)
