"""Cache policies: exact-equivalence configurations, method-specific behaviour, batching, errors."""

import pytest
import torch

import unmask
from unmask.caches.d2cache import inflate, rollout_importance, top_mass
from unmask.engine import make_state, run_plan, Rows, StepPlan

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
GREEDY = dict(gen_length=16, block_length=8, logits_eos_inf=True, confidence_eos_eot_inf=True)


def _same(model, cache, **options):
    opts = {**GREEDY, **options}
    base = unmask.generate(model, input_ids=PROMPTS, **opts)
    other = unmask.generate(model, input_ids=PROMPTS, cache=cache, **opts)
    return base.token_ids, other.token_ids


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize(
    "cache, options",
    [
        ({"name": "prefix"}, {"steps": 2}),  # one step per block: every step is a refresh step
        ({"name": "prefix", "use_dual": True}, {"steps": 2}),
        ({"name": "dllm", "kp": 1, "kr": 1}, {}),
        ({"name": "d2cache", "current_k": 16, "rollout_p": 1.0}, {"block_length": 8, "sigma": 0.0}),
        ({"name": "elastic", "gamma": 1.0, "window": 16, "exact_gamma1": True, "suppress_mask": True}, {"block_length": 16}),
    ],
)
def test_recompute_everything_matches_baseline(family, cache, options, request):
    model = request.getfixturevalue(family)
    if cache["name"] == "d2cache" and family == "dream":
        options = {**options, "alg": "maskgit_plus"}
    if cache["name"] == "prefix" and family == "dream":
        # Fast-dLLM's Dream loop (the default) changes the decoding itself (block start, top_k);
        # the seed framework's reading with one step per block only re-plans rows.
        cache, options = {**cache, "dream_start": "query"}, {**options, "top_k": 0}
    if cache["name"] == "elastic":
        base = unmask.generate(model, input_ids=PROMPTS, threshold=0.9, **{**GREEDY, **options})
        other = unmask.generate(model, input_ids=PROMPTS, cache=cache, **{**GREEDY, **options})
        assert base.token_ids == other.token_ids
        return
    base, other = _same(model, cache, **options)
    assert base == other


def test_dual_equals_prefix_with_one_block(llada):
    opts = dict(gen_length=16, block_length=16, logits_eos_inf=True)
    prefix = unmask.generate(llada, input_ids=PROMPTS, cache="prefix", **opts)
    dual = unmask.generate(llada, input_ids=PROMPTS, cache={"name": "prefix", "use_dual": True}, **opts)
    assert prefix.token_ids == dual.token_ids
    assert prefix.row_fraction == pytest.approx(dual.row_fraction)  # one block: the same rows


def test_prefix_cached_kv_equals_fresh_forward_at_block_start(llada):
    """Mid-block, the cached prefix K/V equal a fresh full forward over the canvas as it was at the block start."""
    from unmask.caches.prefix import PrefixCache
    from unmask.engine.loop import DenoisingLoop
    from unmask.options import GenerationOptions

    opts = GenerationOptions.build("llada", gen_length=24, block_length=8, logits_eos_inf=True)
    _, settings = unmask.caches.resolve_cache("prefix")
    req = DenoisingLoop(llada, opts, PrefixCache, settings, [[5, 6, 7]], trace=False)
    seen = {}
    plan = req.policy.plan

    def spy(state, ctx):
        if ctx.block_step == 0:
            seen["canvas"] = state.canvas.clone()
        elif ctx.block_step == 2 and ctx.block[0] == 3 + 16:  # inside the third block
            seen["kv"] = [(kv.k[:, :, : ctx.block[0]].clone(), kv.v[:, :, : ctx.block[0]].clone()) for kv in state.store.kv]
            seen["start"], seen["block_canvas"] = ctx.block[0], seen["canvas"]
        return plan(state, ctx)

    req.policy.plan = spy
    req.run()
    start, canvas = seen["start"], seen["block_canvas"]
    fresh = make_state(llada.module, canvas, torch.ones_like(canvas, dtype=torch.bool))
    run_plan(llada.module, fresh, StepPlan(rows=fresh.all_rows(), logit_positions=Rows.range(start, start + 8, 1)))
    for (k, v), ref in zip(seen["kv"], fresh.store.kv):
        assert torch.allclose(k, ref.k[:, :, :start], atol=1e-5)
        assert torch.allclose(v, ref.v[:, :, :start], atol=1e-5)


def test_prefix_recomputes_block_and_suffix_dual_only_block(llada):
    opts = dict(gen_length=32, block_length=8, logits_eos_inf=True, trace=True)
    p = unmask.generate(llada, input_ids=[[5, 6, 7]], cache="prefix", **opts)
    d = unmask.generate(llada, input_ids=[[5, 6, 7]], cache={"name": "prefix", "use_dual": True}, **opts)
    length = 3 + 32
    # step 0 of block 0 is a refresh; step 1 of block 0 recomputes [3, 35) (prefix) or [3, 11) (dual)
    assert p.trace[0].layer_rows[0] == length and p.trace[1].layer_rows[0] == 32
    assert d.trace[1].layer_rows[0] == 8
    assert p.trace[8].layer_rows[0] == length  # block 1 starts with a refresh
    assert p.trace[9].layer_rows[0] == 24


def test_dllm_schedule_and_adaptive_rows(llada):
    r = unmask.generate(llada, input_ids=[[5, 6, 7]], cache={"name": "dllm", "kp": 4, "kr": 2, "rou": 0.25},
                        gen_length=16, block_length=8, trace=True)
    length, response = 3 + 16, 16
    for step, tr in enumerate(r.trace):
        if step % 4 == 0:
            assert tr.layer_rows == [length] * 2 and tr.refreshed == [1.0, 1.0]
        elif step % 2 == 0:
            assert tr.layer_rows == [response] * 2 and tr.refreshed == [0.0, 0.0]
        else:  # adaptive: layer 0 all response rows, deeper layers int(rou * R) rows
            assert tr.layer_rows == [response, int(0.25 * response)]


def test_d2cache_rollout_reaches_mass_and_picks_at_least_one():
    torch.manual_seed(0)
    t = 12
    rows = torch.tensor([[2, 5, 5, 9]])  # a padded repeat counts once
    probs = [torch.softmax(torch.randn(1, 4, t), -1) for _ in range(3)]
    imp = rollout_importance(probs, rows, t)
    assert imp.shape == (1, t) and torch.isclose(imp.sum(), torch.tensor(float(t)), atol=1e-4)
    eligible = torch.ones(1, t, dtype=torch.bool)
    eligible[0, 0] = False
    for p in (1e-6, 0.1, 0.5, 1.0):
        chosen = top_mass(imp, eligible, p)
        share = imp[chosen].sum() / imp[eligible].sum()
        assert chosen.sum() >= 1 and share >= p - 1e-6 and not chosen[0, 0]
        # smallest such set: dropping the least important chosen row falls below p
        if chosen.sum() > 1:
            assert share - imp[chosen].min() / imp[eligible].sum() < p


def test_d2cache_inflate_fills_short_gaps_only():
    chosen = torch.tensor([[1, 0, 0, 1, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    out = inflate(chosen, 2, torch.ones_like(chosen))
    assert out[0].tolist() == [True] * 4 + [False] * 5 + [True]


def test_d2cache_confidences_follow_fresh_steps(llada):
    from unmask.caches.d2cache import D2Cache
    from unmask.engine.loop import DenoisingLoop
    from unmask.options import GenerationOptions

    opts = GenerationOptions.build("llada", gen_length=16, block_length=None, sigma=10.0)
    _, settings = unmask.caches.resolve_cache({"name": "d2cache", "current_k": 4})
    req = DenoisingLoop(llada, opts, D2Cache, settings, [[5, 6, 7]], trace=False)
    seen = []
    original = req.policy.on_step_end

    def spy(state, ctx, committed, conf):
        original(state, ctx, committed, conf)
        seen.append(req.policy.conf.clone())

    req.policy.on_step_end = spy
    req.run()
    masked_after_first = seen[0] != seen[1]
    assert bool(masked_after_first.any()), "cached confidences must change after step 0 (no freeze bug)"


def test_elastic_never_queries_masks_past_the_window(llada):
    r = unmask.generate(llada, input_ids=[[5, 6, 7]], cache={"name": "elastic", "gamma": 0.0, "window": 4},
                        gen_length=32, trace=True, logits_eos_inf=True, confidence_eos_eot_inf=True)
    for tr in r.trace[1:]:
        # window (4) + decoded last step (<= 4) + tracked tokens (one per layer)
        assert tr.layer_rows[0] <= 4 + 4 + 2
        assert all(len(c) <= 4 for c in tr.committed)


@pytest.mark.parametrize(
    "cache",
    ["prefix", {"name": "prefix", "use_dual": True}, "dllm", {"name": "d2cache", "current_k": 8}, "elastic"],
)
@pytest.mark.parametrize("family", ["llada", "dream"])
def test_batch_invariance_per_policy(family, cache, request):
    model = request.getfixturevalue(family)
    extra = {"alg": "maskgit_plus"} if family == "dream" and "d2cache" in str(cache) else {}
    batch = unmask.generate(model, input_ids=PROMPTS, cache=cache, gen_length=16, block_length=8, **extra)
    for i, p in enumerate(PROMPTS):
        alone = unmask.generate(model, input_ids=[p], cache=cache, gen_length=16, block_length=8, **extra)
        assert alone.token_ids[0] == batch.token_ids[i]


def test_two_requests_do_not_share_state(llada):
    a1 = unmask.generate(llada, input_ids=[[5, 6, 7]], cache="dllm", gen_length=16, block_length=8)
    unmask.generate(llada, input_ids=[[9, 9]], cache="dllm", gen_length=16, block_length=8)
    a2 = unmask.generate(llada, input_ids=[[5, 6, 7]], cache="dllm", gen_length=16, block_length=8)
    assert a1.token_ids == a2.token_ids


@pytest.mark.parametrize(
    "cache, message",
    [
        ("bogus", "valid choices"),
        ({"name": "dllm", "kq": 3}, "valid parameters"),
        ({"name": "dllm", "kp": "x"}, "not a valid int"),
        ({"name": "dllm", "rou": 2.0}, "rou"),
        ({"name": "elastic", "drift_axis": "cols"}, "valid choices"),
        ({"name": "d2cache", "rollout_p": 0}, "rollout_p"),
    ],
)
def test_bad_cache_settings(llada, cache, message):
    with pytest.raises(ValueError, match=message):
        unmask.generate(llada, input_ids=[[5]], cache=cache, gen_length=8, block_length=8)


def test_unsupported_combinations_say_so(llada):
    with pytest.raises(ValueError, match="cfg_scale"):
        unmask.generate(llada, input_ids=[[5]], cache="prefix", gen_length=8, block_length=8, cfg_scale=1.0)
    with pytest.raises(ValueError, match="factor"):
        unmask.generate(llada, input_ids=[[5]], cache="elastic", gen_length=8, factor=1.0, threshold=None)
    with pytest.raises(ValueError, match="conflicts with cache.tau"):
        unmask.generate(llada, input_ids=[[5]], cache="elastic", gen_length=8, threshold=0.5)


@pytest.mark.parametrize(
    "cache, family, options, message",
    [
        ("prefix", "llada", {"cfg_scale": 1.0}, "cfg_scale"),
        ({"name": "prefix", "dream_start": "query"}, "llada", {}, "applies to Dream"),
        ({"name": "prefix", "dream_start": "query"}, "dream", {}, None),
        ({"name": "elastic", "tau": 0.8}, "llada", {"threshold": 0.5, "block_length": None}, "conflicts with cache.tau=0.8"),
        ({"name": "elastic", "tau": 0.8}, "llada", {"threshold": 0.8, "block_length": None}, None),
        ({"name": "dllm", "kr": 0}, "llada", {}, "must be >= 1"),
        (None, "llada", {"cfg_scale": 1.0}, None),
    ],
)
def test_validation_is_a_class_function_of_settings_options_and_family(cache, family, options, message):
    """The config layer and the server check a request with no model and no policy instance."""
    from unmask.options import GenerationOptions

    cls, settings = unmask.caches.resolve_cache(cache)
    opts = GenerationOptions.build(family, gen_length=32, **options)
    if message is None:
        cls.validate(settings, opts, family)
    else:
        with pytest.raises(ValueError, match=message):
            cls.validate(settings, opts, family)


@pytest.mark.parametrize("cache", [None, "prefix", {"name": "prefix", "use_dual": True}, "dllm", "d2cache", "elastic"])
def test_parallel_decoding_works_with_every_policy(llada, cache):
    opts = {} if cache == "elastic" else {"threshold": 0.5}
    r = unmask.generate(llada, input_ids=PROMPTS, cache=cache, gen_length=16, block_length=8, stop_until_eos=True, **opts)
    assert all(llada.special.mask not in row for row in r.token_ids)
