"""Continuous batching: requests join a running batch mid-decode and leave when done, and each gets
exactly the tokens it gets alone (greedy), for every cache method; the reference is `generate` on
one prompt, which never touches `engine.slots`."""

from __future__ import annotations

import csv
import importlib
import json
import threading
import time
from importlib import resources

import pytest
import torch

import unmask
from unmask.engine import slots as slots_module
from unmask.engine.slots import SlotBatch
from unmask.generate import make_loop, result_of
from unmask.models.tokenizer import encode_prompts
from unmask.serve.batcher import Cancelled, Job
from unmask.serve.continuous import ContinuousBatcher

# Elastic-Cache at a high tau: at its default the bundled model answers in a step or two, too soon to join
CACHES = [None, "prefix", {"name": "prefix", "use_dual": True}, "dllm", "d2cache", {"name": "elastic", "tau": 0.999}]
CACHE_IDS = ["null", "prefix", "dual", "dllm", "d2cache", "elastic"]


def _questions(n: int) -> list[str]:
    path = resources.files("unmask") / "tasks" / "data" / "arith_eval.jsonl"
    return [json.loads(line)["question"] for line in path.read_text().splitlines()[:n]]


@pytest.fixture(scope="module")
def bundled():
    return unmask.load("tiny")


def run_slots(model, requests: list[tuple[list[int], dict]], cache, joins: list[int]):
    """Run requests through one SlotBatch, request i joining before step joins[i]; returns each one's
    tokens and, per step, which requests ran it. Asserts that some forward ran several of them."""
    batch, owner, tokens, members = SlotBatch(model.module), {}, {}, []
    waiting, step = list(range(len(requests))), 0
    merged, run_plan = [], slots_module.run_plan

    def counted(module, state, plan):
        merged.append(state.batch)
        return run_plan(module, state, plan)

    slots_module.run_plan = counted
    try:
        with torch.inference_mode():
            while waiting or len(batch):
                for i in [i for i in waiting if joins[i] <= step]:
                    ids, options, *images = requests[i]  # optional third item: the request's images
                    loop = make_loop(model, input_ids=[ids], images=[images] if images else None, cache=cache, **options)
                    owner[id(loop)] = i
                    batch.add(loop)
                    waiting.remove(i)
                members.append(sorted(owner[id(loop)] for loop in batch.members))
                for loop in batch.step():
                    tokens[owner[id(loop)]] = result_of(loop, loop.prompt_ids).token_ids[0]
                step += 1
    finally:
        slots_module.run_plan = run_plan
    if cache != "dllm":  # dLLM-Cache runs its own forward per request
        assert max(merged, default=0) >= 2, "no forward ran two requests together"
    return tokens, members


@pytest.mark.parametrize("cache", CACHES, ids=CACHE_IDS)
def test_join_mid_decode_and_leave_early_equal_alone(bundled, cache):
    """Request 0 (long) runs; 1 (short answer, longer prompt: the canvas widens) joins mid-decode and
    leaves first; 2 joins later, with other lengths; every request's tokens equal its run alone."""
    q = _questions(3)
    ids = encode_prompts(bundled, [q[0], q[1] + " " + q[2], q[2]], chat=True)
    requests = [(ids[0], {"gen_length": 48, "block_length": 16}), (ids[1], {"gen_length": 16, "block_length": 8, "threshold": 0.9}),
                (ids[2], {"gen_length": 32, "block_length": 16})]
    if cache == "d2cache" or isinstance(cache, dict) and cache["name"] == "elastic":
        for _, options in requests:
            options.pop("block_length")
            options.pop("threshold", None)
    tokens, members = run_slots(bundled, requests, cache, joins=[0, 2, 4])
    for i, (prompt, options) in enumerate(requests):
        alone = unmask.generate(bundled, input_ids=[prompt], cache=cache, **options).token_ids[0]
        assert tokens[i] == alone, f"request {i}"
    assert [0, 1] in members and [0, 1, 2] in members  # joined while request 0 was decoding
    assert _left_early(members)


@pytest.mark.parametrize("cache", CACHES, ids=CACHE_IDS)
def test_image_requests_join_and_leave_equal_alone(cache):
    """LLaDA-V: two picture questions start in one forward and a text one joins later; each gets
    exactly the tokens `generate` gives it alone (the batch stacks every member's image rows)."""
    from unmask.image_inputs import encode_text_prompts
    from unmask.tasks.arith_v_task import ArithVTask
    from unmask.vision.prompt import IMAGE_PLACEHOLDER

    model = unmask.load("tiny-v", dtype="float32")
    samples = [s for s in ArithVTask().load() if s.meta["count"] != 2][:2]  # a blank picture reads as 2
    requests = [(encode_text_prompts(model, [s.prompt], [list(s.images)], True)[0], {"gen_length": 32, "block_length": 16}, *s.images)
                for s in samples]
    requests.append((encode_prompts(model, [_questions(1)[0]], chat=True)[0], {"gen_length": 24, "block_length": 8}))
    assert all(IMAGE_PLACEHOLDER in ids for ids, *_ in requests[:2])
    alone = [
        unmask.generate(model, input_ids=[ids], images=[images] if images else None, cache=cache, **options).token_ids[0]
        for ids, options, *images in requests
    ]
    tokens, members = run_slots(model, requests, cache, joins=[0, 0, 2])  # the pictures refresh in one forward
    assert [tokens[i] for i in range(3)] == alone
    assert any(len(m) == 3 for m in members), "the three requests never ran together"


@pytest.mark.parametrize("cache", CACHES, ids=CACHE_IDS)
def test_dream_joins_and_leaves_equal_alone(dream, cache):
    """Shifted logits (a Dream checkpoint): the same, on a random model."""
    # Canvases of 29, 26 and 27 positions (one forward, offsets 0, 3, 2); request 1 takes half the steps.
    requests = [([5, 6, 7, 8, 9], {"gen_length": 24, "block_length": 8}),
                ([11, 12], {"gen_length": 24, "block_length": 8, "steps": 12}),
                ([13, 14, 15], {"gen_length": 24, "block_length": 8})]
    for _, options in requests:
        if isinstance(cache, dict) and cache["name"] == "elastic":
            options.pop("block_length")
            options.pop("steps", None)  # the threshold rule
        if cache == "d2cache":
            options["alg"] = "maskgit_plus"  # its certainty prior needs a probability confidence
    tokens, members = run_slots(dream, requests, cache, joins=[0, 1, 2])
    for i, (prompt, options) in enumerate(requests):
        assert tokens[i] == unmask.generate(dream, input_ids=[prompt], cache=cache, **options).token_ids[0]
    assert [0, 1, 2] in members and _left_early(members)


def test_running_requests_stores_stay_put_when_others_join_and_leave(bundled):
    """A and B decode in one forward; C joins (its forwards are full ones, never merged with A's cached
    steps) and leaves, and B leaves: A's stores are never copied or moved (its forwards run on the stack
    it shared with B, on its own slot once B is gone), and every request gets its tokens alone."""
    ids = encode_prompts(bundled, _questions(3), chat=True)
    specs = [("prefix", {"gen_length": 48, "block_length": 16}),  # a new block (a full refresh) every 16 steps
             ("prefix", {"gen_length": 16, "block_length": 16, "steps": 8}),  # done after 8 steps
             (None, {"gen_length": 8, "block_length": 8})]  # no cache: a full forward every step
    batch, loops, storage, members = SlotBatch(bundled.module), [], [], []
    with torch.inference_mode():
        for step in range(48):
            if step in (0, 3):
                for i in ([0, 1] if step == 0 else [2]):
                    cache, options = specs[i]
                    loops.append(make_loop(bundled, input_ids=[ids[i]], cache=cache, **options))
                    batch.add(loops[-1])
            members.append(sum(1 << loops.index(loop) for loop in batch.members))
            batch.step()
            storage.append(loops[0].state.store.kv[0].k.untyped_storage().data_ptr())
    assert members[3] == 0b111 and members[4] == 0b111 and members[15] == 0b001  # C joined, B and C left
    moved = [step for step in range(1, 48) if storage[step] != storage[step - 1]]
    assert moved == [], moved
    for loop, (cache, options), prompt in zip(loops, specs, ids):
        assert result_of(loop, [prompt]).token_ids[0] == unmask.generate(bundled, input_ids=[prompt], cache=cache, **options).token_ids[0]


def test_a_batch_of_prompts_takes_each_prompts_own_steps(bundled):
    """generate on several prompts: each prompt takes the forwards it takes alone (no waiting for the
    slowest in a block, no computing once done), with its tokens alone."""
    ids = encode_prompts(bundled, _questions(4), chat=True)
    options = {"cache": {"name": "prefix", "use_dual": True}, "gen_length": 64, "threshold": 0.9}
    together = unmask.generate(bundled, input_ids=ids, **options)
    alone = [unmask.generate(bundled, input_ids=[p], **options) for p in ids]
    assert together.token_ids == [r.token_ids[0] for r in alone]
    assert together.nfe == [r.nfe[0] for r in alone]
    assert len(set(together.nfe)) > 1  # the prompts do take different numbers of steps



def test_batch_steps_shared_runs_one_batched_loop_with_the_same_tokens(bundled, monkeypatch):
    """generation.batch_steps=shared (auto's choice on accelerators) steps the prompts as one batch: a
    prompt waits for the slowest in each block (more forwards) and the tokens equal the own-loop run."""
    ids = encode_prompts(bundled, _questions(4), chat=True)
    options = {"cache": {"name": "prefix", "use_dual": True}, "gen_length": 64, "threshold": 0.9}
    own = unmask.generate(bundled, input_ids=ids, batch_steps="own", **options)
    shared = unmask.generate(bundled, input_ids=ids, batch_steps="shared", **options)
    assert shared.token_ids == own.token_ids
    assert all(a >= b for a, b in zip(shared.nfe, own.nfe)) and sum(shared.nfe) > sum(own.nfe)  # waits for the slowest
    with pytest.raises(ValueError, match="batch_steps"):
        unmask.generate(bundled, input_ids=ids, batch_steps="each", **options)
    generate_module = importlib.import_module("unmask.generate")  # the module (unmask.generate is the function)

    seen = []
    monkeypatch.setattr(generate_module, "_generate_as_slots", lambda *a, **k: seen.append(1) or own)
    unmask.generate(bundled, input_ids=ids, **options)  # auto on CPU: own loops
    assert seen == [1]


def _left_early(members: list[list[int]]) -> bool:
    """Some request left while two others went on decoding."""
    return any(len(b) >= 2 and set(b) < set(a) for a, b in zip(members, members[1:]))


# -- the server's continuous batcher ---------------------------------------------------------------


def _job(ids, box: list, **options):
    options = {"gen_length": 16, "block_length": 8, **options}
    return Job(input_ids=ids, cache="prefix", options=options, key="k", group="prefix", on_done=box.append)


def _wait(boxes, timeout=60):
    deadline = time.monotonic() + timeout
    while not all(boxes) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(boxes)


@pytest.mark.parametrize("budget_of, workers", [(1, 1), (2, 2)])
def test_tiny_budget_makes_requests_wait_and_all_complete_once(bundled, budget_of, workers, monkeypatch):
    """With room for `budget_of` requests, no step holds more (over all engine threads); every request
    completes exactly once, with its tokens alone."""
    ids = encode_prompts(bundled, _questions(5), chat=True)
    budget = budget_of * (max(len(p) for p in ids) + 16)
    batcher = ContinuousBatcher(bundled, max_batch=8, max_queue=8, max_batch_tokens=budget, workers=workers)
    held, step = [], ContinuousBatcher._step

    def spy(self, worker, group, batch):
        with self._cond:
            held.append((self._running(), self._tokens()))
        return step(self, worker, group, batch)

    monkeypatch.setattr(ContinuousBatcher, "_step", spy)
    boxes = [[] for _ in ids]
    for p, box in zip(ids, boxes):
        batcher.submit(_job(p, box))
    batcher.start()
    try:
        _wait(boxes)
        time.sleep(0.05)  # a duplicate delivery would land now
    finally:
        batcher.close()
    assert [len(box) for box in boxes] == [1] * len(ids)
    assert max(n for n, _ in held) == budget_of and all(tokens <= budget for _, tokens in held)
    for p, box in zip(ids, boxes):
        assert box[0].token_ids == unmask.generate(bundled, input_ids=[p], cache="prefix", gen_length=16, block_length=8).token_ids[0]
    assert max(box[0].queue_seconds for box in boxes) > 0.0


def test_a_request_joins_a_running_batch_and_a_cancelled_one_leaves(bundled):
    """B arrives while A decodes and joins A's batch; C is cancelled mid-decode; A and B equal alone."""
    ids = encode_prompts(bundled, _questions(3), chat=True)
    batcher = ContinuousBatcher(bundled, max_batch=8)
    (a, b, c), started = [[], [], []], threading.Event()
    job_a = _job(ids[0], a, gen_length=64, block_length=8)
    job_a.on_prefix = lambda prefix: started.set()
    job_c = _job(ids[2], c, gen_length=64, block_length=8)
    batcher.start()
    try:
        batcher.submit(job_a)
        batcher.submit(job_c)
        assert started.wait(30)
        batcher.submit(_job(ids[1], b))
        batcher.cancel(job_c)
        _wait([a, b, c])
    finally:
        batcher.close()
    assert isinstance(c[0], Cancelled)
    assert a[0].batch_size >= 2 and b[0].batch_size >= 2  # B joined a running batch
    assert a[0].token_ids == unmask.generate(bundled, input_ids=[ids[0]], cache="prefix", gen_length=64, block_length=8).token_ids[0]
    assert b[0].token_ids == unmask.generate(bundled, input_ids=[ids[1]], cache="prefix", gen_length=16, block_length=8).token_ids[0]


# -- the load benchmark ------------------------------------------------------------------------------


def test_load_benchmark_short_form_writes_its_table_and_plot(tmp_path):
    """`unmask bench mode=serve` end to end: 2 clients x 2 requests against both servers."""
    from unmask.bench import main

    out = tmp_path / "serve"
    code = main(["mode=serve", "clients=2", "requests=2", "rate=50", "server=inprocess", "model=tiny", "cache=prefix",
                 "generation.threshold=0.9", f"output_dir={out}"])
    assert code == 0
    with open(out / "serve.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"clients", "continuous", "requests_per_s", "tokens_per_s", "p50_s", "p99_s", "ttft_s"} <= set(rows[0])
    assert [(r["clients"], r["continuous"]) for r in rows] == [("2", "true"), ("2", "false")]
    for r in rows:
        assert r["requests"] == "4" and r["errors"] == "0"
        assert float(r["tokens_per_s"]) > 0 and 0 < float(r["ttft_s"]) <= float(r["p50_s"]) <= float(r["p99_s"])
    assert (out / "serve.png").stat().st_size > 1000


@pytest.mark.parametrize("caches", [
    [{"name": "prefix"}, {"name": "prefix", "use_dual": True}, {"name": "prefix"}],
    [{"name": "elastic", "tau": 0.999}, {"name": "elastic", "tau": 0.999, "refresh_from": "trigger", "gamma": 0.5},
     {"name": "elastic", "tau": 0.95}],
], ids=["prefix-dual", "elastic"])
def test_one_batch_holds_different_cache_settings(bundled, caches):
    """Cache settings are per sequence: PrefixCache beside DualCache, and Elastic-Cache with other
    gamma, tau and refresh_from, share one batch, each with its tokens alone."""
    ids = encode_prompts(bundled, _questions(3), chat=True)
    batch, loops = SlotBatch(bundled.module), []
    with torch.inference_mode():
        for p, cache in zip(ids, caches):
            options = {"gen_length": 32} if cache["name"] == "elastic" else {"gen_length": 32, "block_length": 8}
            loops.append((make_loop(bundled, input_ids=[p], cache=cache, **options), p, cache, options))
            batch.add(loops[-1][0])
        sizes = []
        while len(batch):
            sizes.append(len(batch))
            batch.step()
    assert max(sizes) == 3
    for loop, p, cache, options in loops:
        assert result_of(loop, [p]).token_ids[0] == unmask.generate(bundled, input_ids=[p], cache=cache, **options).token_ids[0]


@pytest.mark.parametrize("args, message", [
    (["clients=0"], "clients=[0] must be one or more counts >= 1"),
    (["server=bogus"], "server='bogus'; valid choices"),
    (["continuous=true"], "continuous= is not a bench setting"),
    (["dataset.limit=3"], "only apply to evaluation runs"),
    (["mode=engine", "clients=4"], "clients= belongs to mode=serve"),
])
def test_bad_load_benchmark_input_fails_before_any_server_starts(args, message, tmp_path, capsys):
    from unmask.bench import main

    argv = args if args[0].startswith("mode=") else ["mode=serve", *args]
    assert main([*argv, f"output_dir={tmp_path / 'out'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_continuous_batching_has_its_own_defaults_and_the_command_line_wins():
    from unmask.serve import _settings

    assert (_settings({})["workers"], _settings({})["max_batch"]) == (1, 16)
    assert (_settings({"continuous": False})["workers"], _settings({"continuous": False})["max_batch"]) == (2, 8)
    assert _settings({"workers": 3, "max_batch": 4}) == {**_settings({}), "workers": 3, "max_batch": 4}
