"""Turning a user's image (a path, raw bytes or a PIL image) into a decoded RGB PIL image.

Every image that reaches the model passes through `load_image`, so the limits live here: the
byte size is checked before reading, and the pixel count is read from the file header before
any pixels are decoded (a small file can declare a huge canvas: a decompression bomb). Every
failure is an `ImageError` that names the source, so the CLI, the server (HTTP 400) and the
eval tasks can report it as the user's input problem.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 50 * 2**20

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Image.Image]


class ImageError(ValueError):
    """An image that cannot be used: unreadable, empty, zero-size or over a size limit."""


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> Image.Image:
    """The image as a fully decoded RGB PIL image (a new object; the input is not modified).

    `max_bytes` bounds an encoded file or byte string, `max_pixels` the width x height of any
    image; both are checked before decoding. Alpha is dropped by a plain RGB conversion (no
    compositing onto a background), as the official LLaDA-V evaluation converts its images.
    """
    if max_pixels <= 0 or max_bytes <= 0:
        raise ValueError(f"max_pixels and max_bytes must be positive, got {max_pixels} and {max_bytes}")
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels, "the given PIL image")
        try:  # a lazily opened image decodes here
            return source.convert("RGB")
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"the given PIL image is not readable: decoding failed ({type(exc).__name__}: {exc})") from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_bytes(len(data), max_bytes, "the image data")
        return _decode(data, max_pixels, "the image data")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        label = f"image file {str(path)!r}"
        if not path.exists():
            raise ImageError(f"{label} does not exist")
        if not path.is_file():
            raise ImageError(f"{label} is not a regular file")
        _check_bytes(path.stat().st_size, max_bytes, label)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{label} cannot be read: {exc}") from None
        _check_bytes(len(data), max_bytes, label)  # the file may have grown since stat
        return _decode(data, max_pixels, label)
    raise ImageError(f"an image must be a file path, bytes or a PIL image, not {type(source).__name__}")


def _check_bytes(size: int, max_bytes: int, label: str) -> None:
    if size == 0:
        raise ImageError(f"{label} is empty (0 bytes)")
    if size > max_bytes:
        raise ImageError(f"{label} is too large: {size} bytes, the limit is {max_bytes} bytes")


def _check_size(size: tuple[int, int], max_pixels: int, label: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{label} has zero size ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise ImageError(f"{label} is too large: {width}x{height} = {width * height} pixels, the limit is {max_pixels} pixels")


def _decode(data: bytes, max_pixels: int, label: str) -> Image.Image:
    """Header first (Image.open is lazy), size check, then the pixels."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning; our limit is checked right below and is the one that applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{label} is too large (decompression bomb guard): {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label} is not a readable image ({type(exc).__name__}: {exc})") from None
    with image:
        _check_size(image.size, max_pixels, label)
        try:
            image.load()
            return image.convert("RGB")
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{label} is not a readable image: decoding failed ({type(exc).__name__}: {exc})") from None
