"""Benchmark rows from a local file (`dataset.path=...`) or the `datasets` library's local cache.

unmask never downloads: the Hugging Face cache is read in offline mode, so a dataset is found
only if it was loaded once before (with network) or placed there. A local file is JSON lines
(`.jsonl`, `.jsonl.gz`) or a JSON list (`.json`) with the hub's field names. `dataset.path` may
name a file (the rows to evaluate) or a directory holding one file per split (`test.jsonl`,
`train.jsonl`, ...); few-shot examples come from the shot split's file (`train.jsonl` for GSM8K)
in that directory, or next to the named file.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SUFFIXES = (".jsonl", ".jsonl.gz", ".json")


class DatasetUnavailable(FileNotFoundError):
    """No data for a task; the message says how to supply it."""


@dataclass(frozen=True)
class HubDataset:
    """Where a benchmark lives on the Hugging Face hub (read from the local cache only)."""

    repo: str
    config: str | None = None

    def load_hint(self, split: str) -> str:
        config = f", {self.config!r}" if self.config else ""
        return f"python -c \"import datasets; datasets.load_dataset({self.repo!r}{config}, split={split!r})\""


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a `.jsonl`, `.jsonl.gz` or `.json` (a list, or {"data": [...]}) file."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        if path.name.endswith(".json"):
            data = json.load(f)
            rows = data.get("data") if isinstance(data, dict) else data
            if not isinstance(rows, list):
                raise ValueError(f"{path}: expected a JSON list of objects (or {{'data': [...]}})")
        else:
            rows = []
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {n} is not a JSON object")
    return rows


def split_file(directory: Path, split: str) -> Path | None:
    """`<split>.jsonl` (or .jsonl.gz / .json) in `directory`, if present."""
    for suffix in SUFFIXES:
        candidate = directory / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def local_rows(path: str | Path, split: str, *, evaluated: bool) -> list[dict[str, Any]] | None:
    """Rows of `split` under `dataset.path`: a file is the evaluated split itself; any other split
    (few-shot examples) is the `<split>.jsonl` beside it. None when that split has no file."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = split_file(path, split)
    elif path.is_file():
        found = path if evaluated else split_file(path.parent, split)
    else:
        raise DatasetUnavailable(f"dataset.path={str(path)!r} does not exist")
    return read_records(found) if found is not None else None


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Offline mode for `datasets` and `huggingface_hub` for the duration of one load.

    Both read HF_HUB_OFFLINE once at import, so setting the environment variable here would be
    too late; the module constants they consult at call time are switched and restored instead.
    """
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, getattr(datasets.config, "HF_DATASETS_OFFLINE", None), hub_constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = True
    datasets.config.HF_DATASETS_OFFLINE = True
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def hub_rows(hub: HubDataset, split: str) -> list[dict[str, Any]]:
    """Rows of one split from the `datasets` cache, never from the network."""
    try:
        import datasets
    except ImportError as exc:
        raise DatasetUnavailable(f"the `datasets` library is not installed ({exc})") from None
    try:
        with _offline():
            ds = datasets.load_dataset(hub.repo, hub.config, split=split, download_mode="reuse_dataset_if_exists")
    except Exception as exc:  # offline misses surface as ConnectionError, FileNotFoundError, ValueError ...
        raise DatasetUnavailable(f"{hub.repo} (split {split!r}) is not in the local datasets cache: {type(exc).__name__}: {exc}") from None
    return ds.to_list()


def missing_message(task: str, hub: HubDataset | None, split: str, fields: str, reason: str) -> str:
    """The error text: what is missing and both ways to supply it."""
    ways = []
    if hub is not None:
        ways.append(
            f"load it once with network access so the `datasets` cache holds it (unmask reads the cache offline and never "
            f"downloads): pip install datasets && {hub.load_hint(split)}"
        )
    ways.append(f"or pass a local file: dataset.path=/path/to/{split}.jsonl (JSON lines with the fields {fields})")
    return f"no {task} data for split {split!r}: {reason}. To supply it, " + "; ".join(ways)


def check_file_split(path: str | None, split: str | None) -> None:
    """A single file is one split: `dataset.split` may only name it (`test.jsonl` and split=test)."""
    if path is None or split is None or not Path(path).expanduser().is_file():
        return
    stem = Path(path).name
    for suffix in SUFFIXES:
        stem = stem.removesuffix(suffix)
    if stem != split:
        raise ValueError(
            f"dataset.split={split!r} cannot select a split of the single file dataset.path={path!r}; "
            f"point dataset.path at a directory holding {split}.jsonl, or leave dataset.split unset"
        )


def load_split(task: str, hub: HubDataset | None, path: str | None, split: str, fields: str, *, evaluated: bool = True) -> list[dict[str, Any]]:
    """Rows of `split` for `task` from `dataset.path` when given, else from the `datasets` cache.

    Raises DatasetUnavailable naming both ways to supply the data when neither has it.
    """
    if path is not None:
        rows = local_rows(path, split, evaluated=evaluated)
        if rows is None:
            where = Path(path) if Path(path).is_dir() else Path(path).parent
            raise DatasetUnavailable(
                missing_message(task, None, split, fields, f"no {split}.jsonl in {where} (needed for the {split!r} split)")
            )
        return rows
    if hub is None:
        raise DatasetUnavailable(missing_message(task, None, split, fields, "this task has no hub source"))
    try:
        return hub_rows(hub, split)
    except DatasetUnavailable as exc:
        raise DatasetUnavailable(missing_message(task, hub, split, fields, str(exc))) from None


def field(row: dict[str, Any], names: tuple[str, ...], where: str) -> Any:
    """The first of `names` present in `row` (tasks accept the hub's names and common variants)."""
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    raise ValueError(f"{where}: missing field {' / '.join(names)} (has: {', '.join(sorted(row)) or 'nothing'})")
