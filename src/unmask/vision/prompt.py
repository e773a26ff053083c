"""Splicing image features into a prompt at the official placeholder id (-200)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

IMAGE_PLACEHOLDER = -200  # the official IMAGE_TOKEN_INDEX, as it appears in input_ids
IMAGE_TEXT = "<image>"  # where an image goes in a text prompt


@dataclass
class SplicedPrompt:
    ids: list[int]  # image rows carry `fill_id` (the pad id; never the mask id)
    embeds: Tensor  # [len(ids), lm_hidden]
    from_image: Tensor  # [len(ids)] bool


def splice_images(ids: list[int], features: list[Tensor], embed: nn.Embedding, fill_id: int) -> SplicedPrompt:
    """Replace each -200 in `ids` by the rows of the next image's features (in order).

    Text rows are embedded with `embed`; image rows keep their features (cast to its dtype)."""
    slots = [i for i, t in enumerate(ids) if t == IMAGE_PLACEHOLDER]
    if len(slots) != len(features):
        raise ValueError(
            f"the prompt has {len(slots)} image placeholder(s) ({IMAGE_TEXT} / id {IMAGE_PLACEHOLDER}) "
            f"but {len(features)} image(s) were given"
        )
    weight = embed.weight
    bad = [t for t in ids if t != IMAGE_PLACEHOLDER and not 0 <= t < weight.shape[0]]
    if bad:
        raise ValueError(f"token id {bad[0]} is outside the vocabulary of {weight.shape[0]}")
    out_ids: list[int] = []
    parts: list[Tensor] = []
    flags: list[Tensor] = []
    start = 0
    for slot, feat in zip(slots + [len(ids)], features + [None]):
        text = ids[start:slot]
        if text:
            parts.append(embed(torch.tensor(text, device=weight.device)))
            flags.append(torch.zeros(len(text), dtype=torch.bool))
            out_ids.extend(text)
        if feat is not None:
            if feat.dim() != 2 or feat.shape[1] != weight.shape[1]:
                raise ValueError(f"image features must be [n, {weight.shape[1]}], got {list(feat.shape)}")
            parts.append(feat.to(device=weight.device, dtype=weight.dtype))
            flags.append(torch.ones(feat.shape[0], dtype=torch.bool))
            out_ids.extend([fill_id] * feat.shape[0])
        start = slot + 1
    embeds = torch.cat(parts) if parts else weight.new_zeros(0, weight.shape[1])
    from_image = torch.cat(flags) if flags else torch.zeros(0, dtype=torch.bool)
    return SplicedPrompt(ids=out_ids, embeds=embeds, from_image=from_image.to(weight.device))
