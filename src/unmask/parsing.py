"""One reading of `key=value` settings for every command: the same spellings, the same error.

A value is either command-line text (`"true"`, `"50"`, `"a,b"`) or one already typed (a YAML
default, a Hydra-parsed override, a Python argument). `parse_value` turns either into the
type a setting declares, so `unmask eval`, `bench`, `serve`, `train` and the cache registry
accept the same words:

- bool: true/false, yes/no, 1/0 (any case), or a bool (or the ints 0 and 1);
- int: a whole number (`"3"`, `3`, `3.0`), never a bool;
- float: any number, never a bool;
- str: text, or a number (as its text);
- list / list[T]: comma-separated text (empty parts dropped), each part read as T;
- T | None: null/none (any case) or None, else T.

Anything else is a ValueError `KEY=VALUE is not a valid TYPE`.
"""

from __future__ import annotations

import types
import typing
from typing import Any

TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")
NULL_WORDS = ("null", "none")


class _Invalid(Exception):
    """A value that does not read as the wanted type (turned into the one error format)."""


def type_name(kind: Any) -> str:
    """How an error names a type: int, float or null, list of int, ..."""
    if kind is type(None):
        return "null"
    options = _union_options(kind)
    if options is not None:
        return " or ".join(type_name(o) for o in sorted(options, key=lambda o: o is type(None)))
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind) or (str,)
        return f"list of {type_name(item)}"
    return getattr(kind, "__name__", str(kind))


def parse_value(key: str, value: Any, kind: Any) -> Any:
    """`value` as `kind` (see the module docstring); ValueError `key=value is not a valid kind`."""
    try:
        return _read(value, kind)
    except _Invalid:
        raise ValueError(f"{key}={value!r} is not a valid {type_name(kind)}") from None


def _union_options(kind: Any) -> tuple | None:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return None


def _read(value: Any, kind: Any) -> Any:
    options = _union_options(kind)
    if options is not None:
        if type(None) in options and (value is None or (isinstance(value, str) and value.lower() in NULL_WORDS)):
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _read(value, option)
            except _Invalid:
                pass
        raise _Invalid
    if kind is list or typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind) or (Any,)
        parts = [p for p in value.split(",") if p] if isinstance(value, str) else value
        if not isinstance(parts, (list, tuple)):
            raise _Invalid
        return [p if item is Any else _read(p, item) for p in parts]
    if kind is bool:
        return _read_bool(value)
    if kind is int:
        return _read_int(value)
    if kind is float:
        return _read_float(value)
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Invalid
    if kind is type(None):
        if value is None:
            return None
        raise _Invalid
    return value  # an unchecked setting (Any): kept as given


def _read_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise _Invalid


def _read_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Invalid
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            value = _read_float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Invalid


def _read_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _Invalid
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise _Invalid from None
    raise _Invalid
