"""An evaluation run's directory: the resolved config, per-sample JSON lines, the summary.

Resume rests on three rules: a record is one JSON line appended and flushed as soon as its
sample is scored; reading repairs only a torn last line (a killed write) and stops at any other
bad line, naming file and line, so finished work is never dropped; and a directory is only
resumed by a run whose result-relevant config matches.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

CONFIG_JSON = "config.json"
CONFIG_YAML = "config.yaml"
SAMPLES = "samples.jsonl"
SUMMARY = "summary.json"
RANK_GLOB = "samples.rank*.jsonl"

# Keys that do not change any sample's result: a run may resume with other values for them.
RESULT_NEUTRAL = ("output_dir", "dataset.limit", "allow_code_execution", "explicit")


def rank_file(out_dir: str | Path, rank: int, world: int) -> Path:
    """Where one process appends its records (samples.jsonl itself when there is one process)."""
    out = Path(out_dir)
    return out / SAMPLES if world == 1 else out / f"samples.rank{rank}.jsonl"


def flatten(data: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; a None group stays one key."""
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def result_config(config: dict) -> dict:
    """The flattened config without the result-neutral keys."""
    flat = flatten(config)
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in RESULT_NEUTRAL)}


def config_differences(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ in a way that changes results, as 'key: old -> new'."""
    a, b = result_config(old), result_config(new)
    return [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>")]


def default_output_dir(config: dict, root: str | Path = "outputs") -> str:
    """outputs/<task>/<model>/<cache>/<gen length>-<hash of the result-relevant config>: stable, so
    re-running the same command resumes the same directory."""
    cache = config.get("cache") or {"name": "null"}
    label = cache["name"] + ("-dual" if cache.get("use_dual") else "")
    blob = json.dumps(result_config(config), sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    model = str(config["model"]["name"]).replace(os.sep, "_")
    name = f"gen{config['generation']['gen_length']}-{digest}"
    return str(Path(root) / config["dataset"]["name"] / model / label / name)


def check_config(out_dir: str | Path, config: dict) -> bool:
    """True when the directory already holds a run with this config; raise when it holds another."""
    path = Path(out_dir) / CONFIG_JSON
    if not path.exists():
        return False
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc}); remove it or choose another output_dir") from None
    diffs = config_differences(old, config)
    if diffs:
        raise ValueError(
            f"{out_dir} holds a run with a different config, refusing to resume into it: {'; '.join(diffs)}. "
            "Use the same settings or choose another output_dir=..."
        )
    return True


def check_prompts(out_dir: str | Path, done: dict[str, dict], samples: Iterable) -> None:
    """Raise when a finished record's prompt is not its sample's prompt (the data changed under the same ids)."""
    for sample in samples:
        rec = done.get(sample.id)
        if rec is not None and rec.get("prompt") != sample.prompt:
            raise ValueError(
                f"{out_dir} holds a record of {sample.id} made for another prompt (the dataset changed), refusing "
                "to resume into it; choose another output_dir=... or remove the directory"
            )


def write_config(out_dir: str | Path, config: dict) -> None:
    from omegaconf import OmegaConf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / CONFIG_YAML, OmegaConf.to_yaml(OmegaConf.create(config)))
    write_atomic(out / CONFIG_JSON, json.dumps(config, indent=2) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# The keys resume and the summary read; a line without them is not a finished record.
REQUIRED_KEYS = ("id", "prompt", "correct", "tokens", "nfe", "seconds", "batch", "peak_memory_mb")


def _record_problem(line: bytes) -> tuple[dict | None, str | None]:
    """(record, None) for a valid record line, else (None, what is wrong with it)."""
    try:
        rec = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(rec, dict):
        return None, f"a JSON {type(rec).__name__}, not a record object"
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        return None, f"a record without {missing}"
    if not isinstance(rec["id"], str):
        return None, f"a record whose id {rec['id']!r} is not a string"
    return rec, None


def split_tail(data: bytes) -> tuple[list[bytes], bytes]:
    """Newline-terminated lines and the unterminated rest (b"" when the file ends with a newline)."""
    *lines, tail = data.split(b"\n")
    return lines, tail


def parse_lines(path: Path) -> list[dict]:
    """The records of a JSON-lines file, in file order.

    A last line without its newline is a write cut short by a kill: kept when it is a whole
    record, skipped otherwise (the sample runs again). Any other line that is not a record
    raises, naming the file and line: dropping it would silently delete finished work."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines, tail = split_tail(data)
    good: list[dict] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        rec, problem = _record_problem(line)
        if problem is not None:
            raise ValueError(
                f"{path}:{number}: {problem}. Records are never dropped silently: repair or delete that line "
                "(or move the file aside), or choose another output_dir=..."
            )
        good.append(rec)
    if tail.strip():
        rec, _ = _record_problem(tail)
        if rec is not None:
            good.append(rec)
    return good


def sample_files(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    return [p for p in [out / SAMPLES, *sorted(out.glob(RANK_GLOB))] if p.exists()]


def read_records(out_dir: str | Path) -> dict[str, dict]:
    """Every finished sample of the directory, first record per id; raises on a bad line, and on
    two different records of one id (which of them is the result is not for resume to guess)."""
    found: dict[str, dict] = {}
    where: dict[str, Path] = {}
    for path in sample_files(out_dir):
        for rec in parse_lines(path):
            sid = rec["id"]
            if sid not in found:
                found[sid], where[sid] = rec, path
            elif _without_rank(found[sid]) != _without_rank(rec):
                raise ValueError(
                    f"{path}: holds a record of {sid} that differs from the one in {where[sid]}; "
                    "keep one of them (edit the files) or choose another output_dir=..."
                )
    return found


def _without_rank(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k != "rank"}


def consolidate(out_dir: str | Path, order: Iterable[str] = ()) -> dict[str, dict]:
    """Merge samples.jsonl and any per-rank files into one clean samples.jsonl (sample order
    first, then any other ids), dropping only a torn last line and exact duplicates; remove the
    rank files."""
    out = Path(out_dir)
    found = read_records(out)
    rank_files = sorted(out.glob(RANK_GLOB))
    position = {sid: i for i, sid in enumerate(order)}
    ids = sorted(found, key=lambda sid: (position.get(sid, len(position)), sid))
    text = "".join(json.dumps(found[sid], ensure_ascii=False) + "\n" for sid in ids)
    current = (out / SAMPLES).read_text(errors="replace") if (out / SAMPLES).exists() else None
    if current != text or rank_files:
        write_atomic(out / SAMPLES, text)
    for path in rank_files:
        path.unlink()
    return {sid: found[sid] for sid in ids}


def repair_tail(path: Path) -> None:
    """Make the file end at a line break before appending: a whole record that only lacks its
    newline gets one; a partial line (a process killed mid-write) is cut."""
    if not path.exists():
        return
    data = path.read_bytes()
    _, tail = split_tail(data)
    if not tail:
        return
    rec, _ = _record_problem(tail)
    with open(path, "r+b") as f:
        if rec is not None:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            f.truncate(len(data) - len(tail))


class RecordWriter:
    """Appends one JSON line per record and flushes it to disk at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_summary(out_dir: str | Path, summary: dict) -> None:
    write_atomic(Path(out_dir) / SUMMARY, json.dumps(summary, indent=2) + "\n")
