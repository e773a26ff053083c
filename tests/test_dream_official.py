"""Dream's defaults against token ids recorded from the official codes (see tests/data/*.json "about").

- cache=null: the hub's `diffusion_generate` as users call it (no top_k passed, so the top_k=50
  it inherits from the model config applies). The hub code has no blocks: block_length=None.
- cache=prefix (use_dual false / true): Fast-dLLM's Dream block loop as its eval script calls it;
  with cache.dream_start=query, the seed framework's (d2Cache repository) PrefixCache on Dream.
Only the options the official call also names are passed; every other value is unmask's default.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import unmask
from conftest import make_checkpoint
from unmask.caches.prefix import PrefixCache
from unmask.caches.base import StepContext
from unmask.caches.registry import resolve_cache
from unmask.decoding import block_start
from unmask.engine import make_state
from unmask.options import GenerationOptions

RECORDED = json.loads((Path(__file__).parent / "data" / "dream_official_tokens.json").read_text())
PROMPTS = RECORDED["prompts"]


@pytest.fixture(scope="module")
def dream_peaked(tmp_path_factory):
    return unmask.load(make_checkpoint(tmp_path_factory.mktemp("dream4"), "dream", head_scale=4.0), dtype="float32")


def _generate_each(model, **options) -> list[list[int]]:
    return [unmask.generate(model, input_ids=[p], chat=False, gen_length=64, **options).token_ids[0] for p in PROMPTS]


@pytest.mark.parametrize("config", ["entropy/32", "entropy/64", "maskgit_plus/32", "topk_margin/64"])
def test_hub_diffusion_generate_defaults(dream, config):
    alg, steps = config.split("/")
    options = {} if alg == "entropy" else {"alg": alg}  # entropy is unmask's Dream default
    got = _generate_each(dream, block_length=None, steps=int(steps), **options)
    assert got == RECORDED["hub"][config]


@pytest.mark.parametrize("dual", [False, True])
@pytest.mark.parametrize("mode", ["threshold0.9", "entropy64"])
def test_fast_dllm_dream_block_loop_defaults(dream_peaked, dual, mode):
    options = {"threshold": 0.9} if mode == "threshold0.9" else {"steps": 64}
    cache = {"name": "prefix", "use_dual": dual}
    got = _generate_each(dream_peaked, cache=cache, block_length=32, **options)
    assert got == RECORDED["fast"][f"{'dual' if dual else 'prefix'}/{mode}"]


@pytest.mark.parametrize("dual", [False, True])
@pytest.mark.parametrize("mode", ["threshold0.9", "entropy1"])
def test_seed_framework_dream_prefix_cache(dream_peaked, dual, mode):
    # one token per step by entropy is the seed framework's num_transfer_tokens=1
    options = {"threshold": 0.9} if mode == "threshold0.9" else {"alg": "entropy", "schedule": "linear", "steps": 64}
    cache = {"name": "prefix", "use_dual": dual, "dream_start": "query"}
    got = _generate_each(dream_peaked, cache=cache, block_length=32, **options)
    assert got == RECORDED["seed"][f"{'dual' if dual else 'prefix'}/{mode}"]


# -- the block-start rule and the defaults, unit by unit -------------------------------------


def test_first_mask_picks_each_rows_leftmost_candidate():
    candidate = torch.tensor([[False, True, True, False], [False, False, False, True], [False] * 4])
    assert block_start.first_mask(candidate).tolist() == [
        [False, True, False, False],
        [False, False, False, True],
        [False] * 4,
    ]


@pytest.mark.parametrize("options", [{"threshold": 0.9}, {"steps": 16}])
def test_dream_prefix_refresh_step_commits_only_the_block_start(dream, options):
    r = unmask.generate(dream, input_ids=[[5, 6, 7]], cache="prefix", gen_length=32, block_length=16, trace=True, **options)
    firsts = {}  # block index -> offsets committed by that block's first step
    for step in r.trace:
        if step.committed[0]:
            firsts.setdefault(step.committed[0][0] // 16, step.committed[0])
    assert firsts == {0: [0], 1: [16]}
    assert dream.special.mask not in r.token_ids[0]


def test_dream_prefix_plans_rows_per_reading(dream):
    canvas = torch.full((1, 40), dream.special.mask)
    state = make_state(dream.module, canvas, torch.ones(1, 40, dtype=torch.bool))
    ctx = StepContext(step=1, block_step=1, block=(8, 24), gen_start=8, masked=canvas == dream.special.mask)
    plans = {}
    for dual in (False, True):
        for start in ("commit", "query"):
            _, settings = resolve_cache({"name": "prefix", "use_dual": dual, "dream_start": start})
            opts = GenerationOptions.build("dream", gen_length=32, block_length=16)
            plan = PrefixCache(settings, dream.module, opts, dream.special).plan(state, ctx)
            plans[dual, start] = (plan.rows.span, plan.logit_positions.span)
    assert plans[False, "commit"] == ((8, 40), (9, 24))  # Fast-dLLM: x[:, s:], position s already committed
    assert plans[True, "commit"] == ((8, 24), (9, 24))
    assert plans[False, "query"] == ((7, 39), (8, 24))  # seed framework: query rows shifted left by one
    assert plans[True, "query"] == ((7, 23), (8, 24))


def test_dream_start_is_checked(llada):
    with pytest.raises(ValueError, match="valid choices"):
        unmask.generate(llada, input_ids=[[5]], cache={"name": "prefix", "dream_start": "both"}, gen_length=8, block_length=8)
    with pytest.raises(ValueError, match="applies to Dream"):
        unmask.generate(llada, input_ids=[[5]], cache={"name": "prefix", "dream_start": "query"}, gen_length=8, block_length=8)


def test_top_k_defaults_and_validation(dream, llada):
    dream_opts = lambda **kw: GenerationOptions.build("dream", **kw)  # noqa: E731
    assert dream_opts().top_k == 50  # the hub call's inherited value
    assert dream_opts(top_k=7).top_k == 7
    assert dream_opts(top_k=0).top_k is None  # 0 = no filter
    assert dream_opts(alg="low_confidence").top_k is None  # LLaDA's rule on Dream: no Dream default
    assert GenerationOptions.build("llada").top_k is None
    with pytest.raises(ValueError, match="top_k=-1 must be a whole number"):
        dream_opts(top_k=-1)
    with pytest.raises(ValueError, match="apply to the Dream algorithms"):
        GenerationOptions.build("llada", top_k=5)
    # Fast-dLLM's Dream code is called with top_k=None: cache=prefix turns the default filter off
    assert PrefixCache.default_options({}, "dream") == {"top_k": 0}
    assert PrefixCache.default_options({}, "llada") == {}


def test_dream_threshold_defaults_to_probability_confidence():
    assert GenerationOptions.build("dream", threshold=0.9).alg == "maskgit_plus"
    assert GenerationOptions.build("dream").alg == "entropy"
    with pytest.raises(ValueError, match="alg=entropy scores by negative entropy"):
        GenerationOptions.build("dream", threshold=0.9, alg="entropy")
