"""The public `generate` API: checks the call, runs the denoising loop (`engine.loop`), and
turns its canvas into a `GenerationResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from .caches.registry import resolve_cache
from .decoding.stops import first_stop
from .engine.loop import DenoisingLoop, StepTrace
from .engine.slots import SlotBatch
from .image_inputs import check_images, encode_text_prompts, image_lists, splice_prompts
from .models.model import LoadedModel
from .options import GenerationOptions

__all__ = ["GenerationResult", "StepTrace", "generate", "make_loop"]


@dataclass
class GenerationResult:
    token_ids: list[list[int]]  # per prompt, the generated region (EOS tail included)
    texts: list[str]
    nfe: list[int]  # forward calls while each prompt was still decoding
    seconds: list[float]  # wall time until each prompt finished
    answer_tokens: list[int]  # tokens before the first EOS/EOT
    prompt_ids: list[list[int]]
    refresh_fraction: float  # layer-steps that recomputed every row / all layer-steps
    row_fraction: float  # rows computed / rows a full forward computes, over all layer-steps
    trace: list[StepTrace] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return max(self.seconds) if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return sum(self.answer_tokens) / self.total_seconds if self.total_seconds else 0.0


class _PrefixReporter:
    """Calls `on_step(index, prefix_ids)` after a step that grew a sequence's committed prefix.

    Diffusion decoding commits out of order; the decoded run from the first generated position is
    what a streaming client can show. Masks a policy stopped decoding read as EOS, as in the result.
    """

    def __init__(self, callback: Callable[[int, list[int]], None], batch: int):
        self.callback = callback
        self.reported = [0] * batch

    def __call__(self, canvas: Tensor, pending: Tensor, decoded: Tensor, special) -> None:
        gen = readable(canvas, decoded, special)
        lengths = torch.where(pending.any(-1), pending.int().argmax(-1), gen.shape[1]).tolist()
        rows = None
        for i, n in enumerate(lengths):
            if n > self.reported[i]:
                rows = gen.tolist() if rows is None else rows  # one device transfer per step at most
                self.reported[i] = n
                self.callback(i, rows[i][:n])


def readable(gen: Tensor, decoded: Tensor, special) -> Tensor:
    """Generated ids [B, G] with the masks that were never decoded read as EOS.

    Elastic-Cache stops decoding the masks after the first EOS it decodes (they stay attention keys
    while it runs); the answer ends before them. A position decoded to the [MASK] id keeps it.
    """
    return torch.where((gen == special.mask) & ~decoded, torch.full_like(gen, special.eos), gen)


def result_of(loop: DenoisingLoop | list[DenoisingLoop], prompt_ids: list[list[int]]) -> GenerationResult:
    """The loop's canvas and accounts as the public result (for callers that drive a loop themselves too);
    several loops (one per prompt, in `prompt_ids`' order) give one result with their rows in turn."""
    loops = loop if isinstance(loop, list) else [loop]
    ids: list[list[int]] = []
    texts: list[str] = []
    first: list[int] = []
    for one in loops:
        g, special = one.gen_start, one.special
        gen = readable(one.state.canvas[:, g:], one.decoded[:, g:], special)
        stops = first_stop(gen, special.stop_ids).tolist()
        rows = gen.tolist()
        ids += rows
        texts += [one.model.tokenizer.decode(row[:n]) for row, n in zip(rows, stops)]
        first += stops
    layer_steps = sum(one.layer_steps for one in loops)
    return GenerationResult(
        token_ids=ids,
        texts=texts,
        nfe=[n for one in loops for n in one.nfe],
        seconds=[t for one in loops for t in one.seconds],
        answer_tokens=first,
        prompt_ids=prompt_ids,
        refresh_fraction=sum(one.refreshed_steps for one in loops) / (layer_steps or 1),
        # rows computed / rows full forwards would compute, over every layer-step
        row_fraction=sum(one.rows_computed for one in loops) / max(1.0, sum(one.layer_steps * one.length for one in loops)),
        trace=loops[0].trace if len(loops) == 1 else None,
    )


def generate(
    model: LoadedModel,
    prompts: list[str] | str | None = None,
    input_ids: list[list[int]] | None = None,
    images: list[list[Any]] | None = None,
    cache: str | dict | None = None,
    trace: bool = False,
    on_step: Callable[[int, list[int]], None] | None = None,
    cancelled: Callable[[int], bool] | None = None,
    **options: Any,
) -> GenerationResult:
    """Denoise `prompt ++ [MASK] * gen_length` for each prompt (batched, left-padded).

    `images` (LLaDA-V models): per prompt a list of images (PIL images, file paths or encoded
    bytes), one per `<image>` in its text or -200 in its `input_ids`; a text prompt with images
    and no `<image>` gets them before its text. Prompts without images take [].
    `cache` mirrors the Hydra group: None, "prefix", or {"name": "dllm", "kp": 50, ...}.
    `options` are the `generation.*` keys (gen_length, block_length, steps, threshold, ...).
    `on_step(index, prefix_ids)`, if given, is called after each denoising step that grew prompt
    `index`'s committed prefix (the decoded run from the first generated position, EOS included);
    the last call per prompt carries its full `token_ids`. Used for streaming.
    `cancelled(index)`, if given, is asked before each denoising step while prompt `index` runs;
    once it answers True that prompt takes no further steps (its open positions read as EOS) and
    the call returns as soon as no prompt runs. Used by the server to drop requests whose client left.
    """
    with torch.inference_mode():
        loop = make_loop(model, prompts=prompts, input_ids=input_ids, images=images, cache=cache, trace=trace, **options)
        if loop.state.batch > 1 and _own_loops(loop, trace, images):
            return _generate_as_slots(model, loop.prompt_ids, cache, options, on_step, cancelled)
        if on_step is not None:
            loop.prefix_hook = _PrefixReporter(on_step, loop.state.batch)
        loop.cancelled = cancelled
        loop.run()
        return result_of(loop, loop.prompt_ids)


def _own_loops(loop: DenoisingLoop, trace: bool, images) -> bool:
    """Whether the prompts of a batched call run as one loop each (`generation.batch_steps`): only greedy
    text prompts can (the slot batch scores them together), and `auto` picks it on CPU only: on an H100
    the shared batched loop was 4x faster at 16 prompts (fewer, larger kernels per step)."""
    if trace or images is not None or loop.scoring_key() is None:
        return False
    choice = loop.opts.batch_steps
    return choice == "own" or (choice == "auto" and loop.state.canvas.device.type == "cpu")


def _generate_as_slots(model: LoadedModel, prompt_ids: list[list[int]], cache, options: dict[str, Any],
                       on_step, cancelled) -> GenerationResult:
    """Several greedy prompts as one loop each, stepped together (`engine.slots`): a prompt takes only its
    own steps (in one batched loop every prompt computes until the slowest finishes each block) and
    stops computing once done, and the tokens are the ones each gets alone, as in the batched loop."""
    loops = [make_loop(model, input_ids=[ids], cache=cache, **options) for ids in prompt_ids]
    batch = SlotBatch(model.module)
    for i, loop in enumerate(loops):
        if on_step is not None:
            loop.prefix_hook = _PrefixReporter(lambda _, prefix, i=i: on_step(i, prefix), 1)
        if cancelled is not None:
            loop.cancelled = lambda _, i=i: cancelled(i)
        batch.add(loop)
    while len(batch):
        batch.step()
    return result_of(loops, prompt_ids)


def make_loop(
    model: LoadedModel,
    prompts: list[str] | str | None = None,
    input_ids: list[list[int]] | None = None,
    images: list[list[Any]] | None = None,
    cache: str | dict | None = None,
    trace: bool = False,
    **options: Any,
) -> DenoisingLoop:
    """The checked denoising loop `generate` runs (call under torch.inference_mode); the server's
    continuous batcher builds one per request and steps them together (`engine.slots`)."""
    policy_cls, settings = resolve_cache(cache)
    options = {**policy_cls.default_options(settings, model.cfg.family), **options}
    opts = GenerationOptions.build(model.cfg.family, **options)
    policy_cls.validate(settings, opts, model.cfg.family)
    if (prompts is None) == (input_ids is None):
        raise ValueError("pass exactly one of prompts=[...] or input_ids=[[...], ...]")
    if isinstance(prompts, str):
        prompts = [prompts]
    images = image_lists(images, len(prompts if prompts is not None else input_ids))
    if prompts is not None:
        prompt_ids = encode_text_prompts(model, prompts, images, opts.chat)
    else:
        prompt_ids = [list(map(int, p)) for p in input_ids]
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token")
    prompt_embeds = None
    if check_images(model, prompt_ids, images):
        prompt_ids, prompt_embeds = splice_prompts(model, prompt_ids, images)
    longest = max(len(p) for p in prompt_ids) + opts.gen_length
    if longest > model.cfg.max_position:
        raise ValueError(
            f"prompt ({longest - opts.gen_length} tokens) + generation.gen_length ({opts.gen_length}) exceeds "
            f"the model's maximum length of {model.cfg.max_position}"
        )
    return DenoisingLoop(model, opts, policy_cls, settings, prompt_ids, trace, prompt_embeds=prompt_embeds)
