"""Images in chat requests: inline base64 data URLs only, checked and preprocessed before queueing.

The server never fetches anything: a remote URL or a file path is refused with a 400. An image
over MAX_IMAGE_BYTES is refused with a 413 before it is decoded; an unreadable, empty or huge
(pixel count) image is a 400 naming the message and part.
"""

from __future__ import annotations

import base64
import binascii
import re

from ..image_inputs import feature_count, vision_of
from ..models.model import LoadedModel
from .schemas import APIError, Message

MAX_IMAGE_BYTES = 20 * 2**20  # per image, decoded
MAX_IMAGES = 16  # per request
_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*?);base64,(?P<data>.*)", re.S)
_SCHEME = re.compile(r"[A-Za-z][\w+.-]*:")
_SPACE = re.compile(r"\s+")


def decode_data_url(url: str, where: str) -> bytes:
    """The bytes of a `data:image/...;base64,...` URL; APIError for anything else."""
    hint = "send the image inline as a base64 data URL (data:image/png;base64,...)"
    if not url.startswith("data:"):
        what = "remote image URLs are never fetched" if _SCHEME.match(url) else "file paths are not read"
        raise APIError(400, f"{where}: {what}; {hint}", param="messages", code="invalid_image_url")
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise APIError(400, f"{where}: only base64 data URLs are accepted; {hint}", param="messages", code="invalid_image_url")
    mime = match["mime"].strip().lower()
    if mime and not mime.startswith("image/"):
        raise APIError(400, f"{where}: the data URL holds {mime!r}, not an image", param="messages", code="invalid_image_url")
    data = _SPACE.sub("", match["data"])
    if len(data) // 4 * 3 > MAX_IMAGE_BYTES + 2:
        raise APIError(413, f"{where}: the image is over {MAX_IMAGE_BYTES} bytes", param="messages", code="image_too_large")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{where}: the data URL is not valid base64", param="messages", code="invalid_image_url") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise APIError(413, f"{where}: the image is {len(raw)} bytes, over the limit of {MAX_IMAGE_BYTES}",
                       param="messages", code="image_too_large")
    return raw


def request_images(model: LoadedModel, messages: list[Message]) -> list:
    """The request's images, in prompt order, loaded and preprocessed (vision.processor.ProcessedImage)."""
    located = [(m, p, url) for m, message in enumerate(messages) for p, url in enumerate(message.image_urls())]
    if not located:
        return []
    vision = vision_of(model)
    if vision is None:
        raise APIError(400, f"model '{model.name or model.path}' is text-only and takes no image parts", param="messages")
    if len(located) > MAX_IMAGES:
        raise APIError(400, f"{len(located)} images; at most {MAX_IMAGES} per request", param="messages")
    for m, message in enumerate(messages):
        if message.role != "user" and message.image_urls():
            raise APIError(400, f"messages[{m}]: only user messages may hold images", param="messages")
    from ..vision.images import ImageError, load_image
    from ..vision.processor import process_image

    images = []
    for m, p, url in located:
        where = f"messages[{m}] image {p}"
        try:
            images.append(process_image(load_image(decode_data_url(url, where)), vision.processor))
        except ImageError as exc:
            raise APIError(400, f"{where}: {exc}", param="messages", code="invalid_image") from None
    return images


def spliced_length(model: LoadedModel, ids: list[int], images: list) -> int:
    """Canvas rows of a prompt once each image placeholder becomes its features."""
    return len(ids) - len(images) + sum(feature_count(vision_of(model), image) for image in images)
