"""Continuous batching: requests join a running batch mid-decode and leave when done, and each gets
exactly the tokens it gets alone (greedy), for every cache method; the reference is `generate` on
one prompt, which never touches `engine.slots`."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch

import unmask
from unmask.engine.slots import SlotBatch
from unmask.generate import make_loop, result_of
from unmask.models.tokenizer import encode_prompts

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
    tokens and, per step, which requests ran it."""
    batch, owner, tokens, members = SlotBatch(model.module), {}, {}, []
    waiting, step = list(range(len(requests))), 0
    with torch.inference_mode():
        while waiting or len(batch):
            for i in [i for i in waiting if joins[i] <= step]:
                ids, options = requests[i]
                loop = make_loop(model, input_ids=[ids], cache=cache, **options)
                owner[id(loop)] = i
                batch.add(loop)
                waiting.remove(i)
            members.append(sorted(owner[id(loop)] for loop in batch.loops + batch._joining))
            for loop in batch.step():
                tokens[owner[id(loop)]] = result_of(loop, loop.prompt_ids).token_ids[0]
            step += 1
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


@pytest.mark.parametrize("cache", ["prefix", "elastic"])
def test_dream_joins_and_leaves_equal_alone(dream, cache):
    """Shifted logits (a Dream checkpoint): the same, on a random model."""
    requests = [([5, 6, 7, 8, 9], {"gen_length": 24, "block_length": 8}), ([11, 12], {"gen_length": 8, "block_length": 8}),
                ([13, 14, 15], {"gen_length": 16, "block_length": 8})]
    if cache == "elastic":
        for _, options in requests:
            options.pop("block_length")
    tokens, members = run_slots(dream, requests, cache, joins=[0, 1, 2])
    for i, (prompt, options) in enumerate(requests):
        assert tokens[i] == unmask.generate(dream, input_ids=[prompt], cache=cache, **options).token_ids[0]
    assert [0, 1, 2] in members and _left_early(members)


def _left_early(members: list[list[int]]) -> bool:
    """Some request left while two others went on decoding."""
    return any(len(b) >= 2 and set(b) < set(a) for a, b in zip(members, members[1:]))
