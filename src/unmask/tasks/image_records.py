"""Benchmark rows that carry images (MathVista, MathVerse): reading them and finding their pictures.

Rows come from `dataset.path` (a `.parquet`, `.jsonl`, `.jsonl.gz` or `.json` file, or a
directory holding `<split>.<suffix>` or hub-style `<split>-00000-of-00001.parquet` shards) or from
the `datasets` cache, read offline (see loading.py). An image inside a row may be a PIL image,
raw bytes, a `{"bytes": ..., "path": ...}` dict (how parquet files and `datasets` store images;
in JSON files the bytes are base64 text),
or a file name, resolved beside the data file (`images/1.jpg` next to `testmini.json`).

Images are opened lazily (header only), so a thousand-row split holds the encoded bytes, not
decoded pixels; `vision.images.load_image` decodes each one, with its size limits, when the
sample is generated.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from ..vision.images import ImageError
from . import loading

DATA_SUFFIXES = (".parquet", *loading.SUFFIXES)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of one data file; a `.json` may also be an object of records keyed by id (MathVista's
    own release keys `testmini.json` by pid)."""
    if path.name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise loading.DatasetUnavailable(f"{path}: reading parquet files needs pyarrow (pip install pyarrow)") from None
        return pq.read_table(path).to_pylist()
    if path.name.endswith(".json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "data" not in data and data and all(isinstance(v, dict) for v in data.values()):
            return list(data.values())
    return loading.read_records(path)


def split_files(directory: Path, split: str) -> list[Path]:
    """The files of `split` under `directory`: `<split>.<suffix>` there, else parquet shards named
    `<split>.parquet` or `<split>-*.parquet` anywhere below it (the hub's `data/` layout)."""
    for suffix in DATA_SUFFIXES:
        candidate = directory / f"{split}{suffix}"
        if candidate.is_file():
            return [candidate]
    shards = {p for pattern in (f"{split}.parquet", f"{split}-*.parquet") for p in directory.rglob(pattern) if p.is_file()}
    return sorted(shards)


def load_rows(task: str, hub: loading.HubDataset | None, path: str | None, split: str, fields: str) -> tuple[list[dict[str, Any]], list[Path]]:
    """Rows of `split` and the folders where relative image file names are looked up.

    With `dataset.path` naming a file, that file is the split. Raises DatasetUnavailable saying
    how to supply the data when neither source has it.
    """
    if path is not None:
        given = Path(path).expanduser()
        if given.is_file():
            return read_rows(given), [given.parent]
        if not given.is_dir():
            raise loading.DatasetUnavailable(f"dataset.path={str(given)!r} does not exist")
        files = split_files(given, split)
        if not files:
            reason = f"no {split}.parquet / {split}.jsonl / {split}.json or {split}-*.parquet under {given}"
            raise loading.DatasetUnavailable(loading.missing_message(task, None, split, fields, reason))
        rows = [row for f in files for row in read_rows(f)]
        return rows, list(dict.fromkeys([files[0].parent, given]))
    if hub is None:
        raise loading.DatasetUnavailable(loading.missing_message(task, None, split, fields, "this task has no hub source"))
    try:
        return loading.hub_rows(hub, split), []
    except loading.DatasetUnavailable as exc:
        raise loading.DatasetUnavailable(loading.missing_message(task, hub, split, fields, str(exc))) from None


def record_image(value: Any, folders: list[Path], where: str) -> Image.Image | str | None:
    """The image a row field holds (a lazily opened PIL image or an existing file's path), or None
    when the field is empty. Unreadable bytes and missing files raise ImageError naming the row."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        data = value.get("bytes")
        if isinstance(data, str) and data:  # JSON files carry the bytes as base64 text
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise ImageError(f"{where}: the image's 'bytes' text is not valid base64") from None
        if data:
            return open_lazily(bytes(data), where)
        return record_image(value.get("path"), folders, where)
    if isinstance(value, (bytes, bytearray)):
        return open_lazily(bytes(value), where) if value else None
    if isinstance(value, str):
        name = Path(value).expanduser()
        candidates = [name] if name.is_absolute() else [folder / name for folder in folders]
        for candidate in candidates:
            if candidate.is_file():
                return str(candidate)
        tried = ", ".join(str(c) for c in candidates) or value
        raise ImageError(f"{where}: image file {value!r} not found (looked at {tried}); put the images beside the data file")
    raise ImageError(f"{where}: the image field holds a {type(value).__name__}, not an image, bytes or a file name")


def open_lazily(data: bytes, where: str) -> Image.Image:
    """A PIL image over `data` with only its header read (pixels are decoded by load_image)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{where}: the image is too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{where}: the image is not readable ({type(exc).__name__}: {exc})") from None


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
