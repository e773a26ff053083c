"""Command-line plumbing shared by the two trainers (`unmask train`, `unmask train family=llada-v`):
`key=value` arguments onto a config dataclass, and a run that SIGTERM stops as Ctrl-C does (it saves)."""

from __future__ import annotations

import signal
import typing
from typing import Any, Callable, TypeVar

from .parsing import parse_value

Config = TypeVar("Config")


def parse_fields(cls: type[Config], argv: list[str], command: str) -> Config:
    """`key=value` arguments onto the dataclass `cls`, each read as its field's type (`unmask.parsing`)."""
    types = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for arg in argv:
        key, sep, raw = arg.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or key not in types:
            raise SystemExit(f"{command}: bad argument {arg!r}; expected key=value with key one of {sorted(types)}")
        try:
            values[key] = parse_value(key, raw, types[key])
        except ValueError as exc:
            raise SystemExit(f"unmask train: {exc}") from None
    return cls(**values)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_and_report(train: Callable[[Any], dict[str, Any]], cfg: Any, hidden: tuple[str, ...]) -> int:
    """Train, then print the summary without its `hidden` keys (modules); exit code 130 when interrupted.
    A background run (where SIGINT is ignored) stopped with `kill` saves like Ctrl-C does."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = train(cfg)
    finally:
        signal.signal(signal.SIGTERM, previous)
    for key in hidden:
        summary.pop(key)
    for key, value in summary.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 130 if summary["interrupted"] else 0
