"""Prompts whose rows come from embeddings (LLaDA-V image features): the engine path, every cache
policy on such canvases, images through unmask.generate, and LLaDA-V's generation rules."""

from __future__ import annotations

import pytest
import torch

import unmask
from unmask.caches import resolve_cache
from unmask.engine.loop import DenoisingLoop
from unmask.generate import result_of
from unmask.options import GenerationOptions

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
GREEDY = dict(gen_length=16, block_length=8, logits_eos_inf=True, confidence_eos_eot_inf=True)

# Every policy at its own default settings (partial recomputation included), with decoding that suits it.
POLICIES = [
    (None, {}),
    ({"name": "prefix"}, {}),
    ({"name": "prefix", "use_dual": True}, {}),
    ({"name": "dllm", "kp": 4, "kr": 2}, {}),
    ({"name": "d2cache"}, {"block_length": 8}),
    ({"name": "elastic"}, {"block_length": 16}),
]


def _run(model, prompt_ids, cache, options, prompt_embeds=None):
    policy_cls, settings = resolve_cache(cache)
    options = {**policy_cls.default_options(settings, model.cfg.family), **GREEDY, **options}
    opts = GenerationOptions.build(model.cfg.family, **options)
    with torch.inference_mode():
        loop = DenoisingLoop(model, opts, policy_cls, settings, prompt_ids, False, prompt_embeds=prompt_embeds)
        loop.run()
        return result_of(loop, prompt_ids)


@pytest.mark.parametrize("cache, options", POLICIES)
def test_rows_from_token_embeddings_give_the_text_tokens(llada, cache, options):
    """Canvas ids are the pad id (as at image rows) and the rows' input is the real tokens' embedding:
    every policy must decode exactly what it decodes from the real ids (an engine that ignored the
    embeddings would decode from pad ids instead)."""
    pad = llada.special.pad
    text = _run(llada, PROMPTS, cache, options)
    filled = [[ids[0]] + [pad] * (len(ids) - 1) for ids in PROMPTS]  # first token stays an id row
    with torch.inference_mode():
        embeds = [
            (llada.module.embed(torch.tensor(ids)), torch.tensor([False] + [True] * (len(ids) - 1)))
            for ids in PROMPTS
        ]
    spliced = _run(llada, filled, cache, options, prompt_embeds=embeds)
    assert spliced.token_ids == text.token_ids
    ignored = _run(llada, filled, cache, options)
    assert ignored.token_ids != text.token_ids  # the check above can fail: pad rows decode differently
