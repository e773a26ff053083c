"""Images in prompts: placeholders in text and ids, loading and encoding, splicing into embeddings.

A prompt names where each image goes with `<image>` (text) or the official placeholder id -200
(`input_ids`). Text is laid out by the chat template first, then cut at each `<image>` and each
piece tokenized alone, as the official `tokenizer_image_token` does; the engine then takes the
image features as those rows' input (`CanvasState.embeds`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .models.model import LoadedModel
from .models.tokenizer import encode_prompts
from .vision.prompt import IMAGE_PLACEHOLDER, IMAGE_TEXT


def vision_of(model: LoadedModel):
    """The model's vision encoder, or None for a text-only model."""
    return getattr(model, "vision", None)


def with_image_marks(text: str, count: int) -> str:
    """A text prompt with `count` images and no `<image>` gets them before its text (the LLaVA convention)."""
    if count == 0 or IMAGE_TEXT in text:
        return text
    return " ".join([IMAGE_TEXT] * count) + "\n" + text


def encode_with_images(model: LoadedModel, text: str, chat: bool) -> list[int]:
    """Token ids of a text prompt, -200 where each `<image>` stands (template applied first)."""
    if chat and model.chat_template:
        return ids_with_placeholders(model, model.chat_template.format(content=text))
    bos = [model.special.bos] if model.special.bos is not None else []
    return bos + ids_with_placeholders(model, text)


def ids_with_placeholders(model: LoadedModel, text: str) -> list[int]:
    """Token ids of laid-out text: each piece between `<image>` marks tokenized alone, -200 between."""
    ids: list[int] = []
    for i, piece in enumerate(text.split(IMAGE_TEXT)):
        if i:
            ids.append(IMAGE_PLACEHOLDER)
        ids.extend(model.tokenizer.encode(piece))
    return ids


def image_lists(images: Any, count: int) -> list[list[Any]] | None:
    """`images` checked as one list of images per prompt (a prompt without images has [])."""
    if images is None:
        return None
    if not isinstance(images, (list, tuple)) or not all(isinstance(x, (list, tuple)) for x in images):
        raise ValueError("images must hold one list of images per prompt, e.g. images=[[image]] for one prompt")
    if len(images) != count:
        raise ValueError(f"images has {len(images)} entries for {count} prompts (one list of images per prompt)")
    return [list(x) for x in images]


def encode_text_prompts(model: LoadedModel, prompts: list[str], images: list[list[Any]] | None, chat: bool) -> list[list[int]]:
    """Prompt ids for text prompts: plain tokenization, or with -200 placeholders for a vision model."""
    if vision_of(model) is None:
        return encode_prompts(model, prompts, chat)
    counts = [len(x) for x in images] if images is not None else [0] * len(prompts)
    return [encode_with_images(model, with_image_marks(text, n), chat) for text, n in zip(prompts, counts)]


def check_images(model: LoadedModel, prompt_ids: list[list[int]], images: list[list[Any]] | None) -> bool:
    """Whether this call has images; ValueError for images a model cannot take or that miss their placeholders."""
    placeholders = [sum(1 for t in ids if t == IMAGE_PLACEHOLDER) for ids in prompt_ids]
    given = images is not None and any(len(x) for x in images)
    if vision_of(model) is None:
        if given:
            raise ValueError(f"images were given, but model '{model.name or model.path}' (family {model.cfg.family}) "
                             "is text-only; use a LLaDA-V checkpoint")
        if any(placeholders):
            raise ValueError(f"input_ids contain the image placeholder {IMAGE_PLACEHOLDER}, but model "
                             f"'{model.name or model.path}' is text-only")
        return False
    for i, n in enumerate(placeholders):
        m = len(images[i]) if images is not None else 0
        if n != m:
            raise ValueError(f"prompt {i} has {n} image placeholder(s) ('{IMAGE_TEXT}' in text, {IMAGE_PLACEHOLDER} in "
                             f"input_ids) but {m} image(s) were given")
    return any(placeholders)


def splice_prompts(
    model: LoadedModel, prompt_ids: list[list[int]], images: list[Sequence[Any]]
) -> tuple[list[list[int]], list[tuple[Tensor, Tensor] | None]]:
    """Load, preprocess and encode each prompt's images, then splice their features at its
    placeholders: (ids with the pad id at image rows, per prompt (embeds [L, d], from_image [L])
    or None for a prompt without images)."""
    from .vision.images import ImageError, load_image
    from .vision.processor import ProcessedImage, process_image
    from .vision.prompt import splice_images

    vision = vision_of(model)
    ids_out: list[list[int]] = []
    embeds: list[tuple[Tensor, Tensor] | None] = []
    for i, (ids, sources) in enumerate(zip(prompt_ids, images)):
        if not sources:
            ids_out.append(ids)
            embeds.append(None)
            continue
        processed = []
        for j, source in enumerate(sources):
            if isinstance(source, ProcessedImage):  # already preprocessed (the server does it before queueing)
                processed.append(source)
                continue
            try:
                processed.append(process_image(load_image(source), vision.processor))
            except ImageError as exc:
                raise ImageError(f"image {j} of prompt {i}: {exc}") from None
        with torch.inference_mode():
            # One tower call per prompt: a prompt's features never depend on the rest of its batch.
            spliced = splice_images(ids, vision.encode(processed), model.module.embed, fill_id=model.special.pad)
        ids_out.append(list(spliced.ids))
        embeds.append((spliced.embeds, spliced.from_image))
    return ids_out, embeds


def feature_count(vision, image) -> int:
    """Rows a preprocessed image takes in the prompt, without running the tower: the packing is
    applied to one-channel zero features of the tower's shape (cheap, and always the real count)."""
    from .vision.packing import pack_image_features

    dummy = torch.zeros(image.pixel_values.shape[0], vision.tower.cfg.num_patches, 1)
    return pack_image_features(dummy, image, torch.zeros(1), vision.processor).shape[0]
