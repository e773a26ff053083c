"""Elastic-Cache: the default reproduces the official code's tokens; its mechanics; the named options."""

import json
from pathlib import Path

import pytest

import unmask
import unmask.caches.elastic as elastic_module
from unmask.engine.loop import DenoisingLoop
from unmask.generate import result_of
from unmask.options import GenerationOptions

from conftest import make_checkpoint

RECORDS = json.loads((Path(__file__).parent / "data" / "elastic_official.json").read_text())
BUNDLED = Path(unmask.__file__).parent / "assets" / "tiny"
OFFICIAL_ARGS = dict(gen_length=128)


@pytest.fixture(scope="module")
def bundled():
    return unmask.load(BUNDLED, dtype="float32")


@pytest.fixture(scope="module")
def llada4(tmp_path_factory):
    """The random 4-layer checkpoint the recorded tokens were taken on (see the records' `checkpoints`)."""
    spec = RECORDS["checkpoints"]["llada4"]
    return unmask.load(make_checkpoint(tmp_path_factory.mktemp("llada4"), "llada", **spec), dtype="float32")


def _cases():
    for checkpoint in ("bundled", "llada4"):
        for gamma, rows in RECORDS[checkpoint].items():
            for row in rows:
                yield pytest.param(checkpoint, float(gamma), row, id=f"{checkpoint}-gamma{gamma}-{row['id']}")


@pytest.mark.parametrize("checkpoint, gamma, row", list(_cases()))
def test_default_reproduces_the_official_tokens(checkpoint, gamma, row, request):
    model = request.getfixturevalue(checkpoint)
    r = unmask.generate(model, input_ids=[row["prompt"]], cache={"name": "elastic", "gamma": gamma}, **OFFICIAL_ARGS)
    assert r.token_ids[0] == row["official"]


def _request(model, prompt, cache, gen_length=128):
    policy_cls, settings = unmask.caches.resolve_cache(cache)
    options = {**policy_cls.default_options(settings, model.cfg.family), "gen_length": gen_length}
    opts = GenerationOptions.build(model.cfg.family, **options)
    return DenoisingLoop(model, opts, policy_cls, settings, [prompt], trace=True)


def _spy_steps(req):
    """Per step: the canvas positions it queries (its plan's rows)."""
    steps, plan = [], req.policy.plan

    def spy(state, ctx):
        out = plan(state, ctx)
        steps.append(set(out.rows.index[0].tolist()))
        return out

    req.policy.plan = spy
    return steps


def test_masks_after_the_first_eos_stay_keys_and_can_be_tracked(llada4):
    """The EOS cut stops decoding the masks after it, but they stay attention keys and may be tracked."""
    row = RECORDS["llada4"]["0.9"][0]
    req = _request(llada4, row["prompt"], {"name": "elastic"})
    queried = _spy_steps(req)
    req.run()
    st, gen_start = req.state, len(row["prompt"])
    assert bool(st.valid.all()) and st.key_mask is None  # no key was dropped
    committed = {gen_start + p for tr in req.trace for p in tr.committed[0]}
    never = {p for p in range(gen_start, st.length) if p not in committed}
    assert never and all(int(st.canvas[0, p]) == llada4.special.mask for p in never), "masks after the cut stay masks"
    # A never-decoded mask is outside every window, so only tracking brings it into a step's query rows.
    assert any(rows & never for rows in queried[1:]), "a mask past the cut is tracked at some step"
    result = result_of(req, [row["prompt"]]).token_ids[0]  # read as EOS, after the answer
    assert all(result[p - gen_start] == llada4.special.eos for p in never)


def test_layer0_is_drift_tested(bundled):
    """At gamma = 1 layer 0 triggers (its attention rows change as keys are decoded): layer 0 computes only
    the query rows and every deeper layer all rows; it is not the exact baseline."""
    row = RECORDS["bundled"]["1.0"][0]
    r = unmask.generate(bundled, input_ids=[row["prompt"]], cache={"name": "elastic", "gamma": 1.0}, trace=True, **OFFICIAL_ARGS)
    length = len(row["prompt"]) + OFFICIAL_ARGS["gen_length"]
    for tr in r.trace[1:]:
        assert tr.layer_rows[0] < length
        assert tr.refreshed[0] == 0.0 and all(f == 1.0 for f in tr.refreshed[1:])
        assert all(n == length for n in tr.layer_rows[1:])


def test_union_of_tracked_tokens_is_tested_at_every_layer(llada4, monkeypatch):
    calls = []
    drift = elastic_module.attention_drift

    def spy(*args):
        calls.append(args)
        return drift(*args)

    monkeypatch.setattr(elastic_module, "attention_drift", spy)
    row = RECORDS["llada4"]["0.9"][0]
    req = _request(llada4, row["prompt"], {"name": "elastic", "gamma": 0.0}, gen_length=32)
    picks = []
    after_forward = req.policy.after_forward

    def record(*args):
        after_forward(*args)
        picks.append({int(p) for layer in getattr(req.policy, "picks", []) for p in layer[0]})

    req.policy.after_forward = record
    req.run()
    layers = len(llada4.module.layers)
    assert len(calls) == layers * (len(picks) - 1)  # every layer, layer 0 included, at every step but the first
    assert max(len(u) for u in picks) > 1, "the layers track different tokens at some step"
    for step, union in enumerate(picks[:-1]):
        for now, _, tokens, _, _ in calls[step * layers : (step + 1) * layers]:
            assert now.shape[2] == len(union) and int(tokens.sum()) == len(union)


def test_a_new_tracked_token_is_tested_at_once_by_default_and_from_its_next_step_as_an_option(llada4, monkeypatch):
    counts = {}
    drift = elastic_module.attention_drift

    def spy(now, before, tokens, keys, axis):
        counts[key].append((now.shape[2], int(tokens.sum())))
        return drift(now, before, tokens, keys, axis)

    monkeypatch.setattr(elastic_module, "attention_drift", spy)
    prompt = RECORDS["llada4"]["0.9"][0]["prompt"]
    for key in ("now", "next_step"):
        counts[key] = []
        unmask.generate(llada4, input_ids=[prompt], cache={"name": "elastic", "gamma": 0.0, "new_token_test": key}, gen_length=32)
    assert all(n == u for n, u in counts["now"])
    assert [n for n, _ in counts["next_step"]] == [n for n, _ in counts["now"]]
    assert any(u < n for n, u in counts["next_step"]), "some tracked token is new and waits a step"


@pytest.mark.parametrize("refresh_from", ["next", "trigger"])
def test_a_trigger_refreshes_the_deeper_layers(llada4, refresh_from):
    prompt = RECORDS["llada4"]["0.9"][0]["prompt"]
    cache = {"name": "elastic", "gamma": 0.9999, "window": 4, "refresh_from": refresh_from}
    r = unmask.generate(llada4, input_ids=[prompt], cache=cache, gen_length=16, trace=True)
    length = len(prompt) + 16
    triggered = 0
    for tr in r.trace[1:]:
        first = next((i for i, f in enumerate(tr.refreshed) if f), None)
        if first is None:
            continue
        triggered += 1
        assert all(f == 1.0 for f in tr.refreshed[first:]) and all(n == length for n in tr.layer_rows[first:])
        assert all(n < length for n in tr.layer_rows[:first])
        if refresh_from == "next":
            assert first >= 1  # the triggering layer keeps its query-rows result
    assert triggered, "a near-1 gamma must trigger"
    total = sum(len(tr.refreshed) for tr in r.trace)
    assert r.refresh_fraction == pytest.approx(sum(sum(tr.refreshed) for tr in r.trace) / total)
    never = unmask.generate(llada4, input_ids=[prompt], cache={**cache, "gamma": 0.0}, gen_length=16, trace=True)
    assert all(f == 0.0 for tr in never.trace[1:] for f in tr.refreshed)


def test_exact_gamma1_option_is_the_baseline(llada4):
    prompt = RECORDS["llada4"]["1.0"][0]["prompt"]
    base = unmask.generate(llada4, input_ids=[prompt], threshold=0.9, block_length=16, gen_length=16)
    cache = {"name": "elastic", "gamma": 1.0, "exact_gamma1": True, "suppress_mask": True}
    exact = unmask.generate(llada4, input_ids=[prompt], cache=cache, gen_length=16)
    default = unmask.generate(llada4, input_ids=[prompt], cache={"name": "elastic", "gamma": 1.0}, gen_length=16)
    assert exact.token_ids == base.token_ids
    assert exact.refresh_fraction == 1.0 and default.refresh_fraction < 1.0


def test_mask_logit_is_left_alone_by_default_and_suppressed_as_an_option(llada4):
    """The official code may commit the [MASK] id (this record does); cache.suppress_mask=true never does."""
    row = next(r for r in RECORDS["llada4"]["1.0"] if llada4.special.mask in r["official"])
    cache = {"name": "elastic", "gamma": 1.0}
    default = unmask.generate(llada4, input_ids=[row["prompt"]], cache=cache, **OFFICIAL_ARGS)
    suppressed = unmask.generate(llada4, input_ids=[row["prompt"]], cache={**cache, "suppress_mask": True}, **OFFICIAL_ARGS)
    assert llada4.special.mask in default.token_ids[0]
    assert llada4.special.mask not in suppressed.token_ids[0]


def test_option_variants_batch_like_single_prompts(llada4):
    prompts = [r["prompt"] for r in RECORDS["llada4"]["0.9"][:2]] + [[7, 8, 9]]
    cache = {"name": "elastic", "drift_axis": "rows", "refresh_from": "trigger", "new_token_test": "next_step"}
    batch = unmask.generate(llada4, input_ids=prompts, cache=cache, gen_length=24)
    for i, p in enumerate(prompts):
        assert unmask.generate(llada4, input_ids=[p], cache=cache, gen_length=24).token_ids[0] == batch.token_ids[i]


@pytest.mark.parametrize(
    "key, value", [("drift_axis", "cols"), ("refresh_from", "layer"), ("new_token_test", "later")]
)
def test_bad_option_values_name_the_key(bundled, key, value):
    with pytest.raises(ValueError, match=rf"cache.{key}='{value}'; valid choices"):
        unmask.generate(bundled, input_ids=[[5]], cache={"name": "elastic", key: value}, gen_length=8)
