"""One value parser for every command: the same spellings and the same error everywhere."""

from __future__ import annotations

import re

import pytest

import unmask.config as C
from unmask import bench
from unmask.caches.registry import resolve_cache
from unmask.parsing import parse_value
from unmask.train import parse_overrides


@pytest.mark.parametrize(
    "raw, kind, value",
    [
        ("yes", bool, True), ("No", bool, False), ("TRUE", bool, True), ("0", bool, False), (1, bool, True),
        ("3", int, 3), (3.0, int, 3), ("3.0", int, 3), ("2.5", float, 2.5), (2, float, 2.0),
        (7, str, "7"), ("a,,b", list, ["a", "b"]), ("32,64", list[int], [32, 64]),
        ("null", int | None, None), ("None", str | None, None), (None, float | None, None), ("4", int | None, 4),
    ],
)
def test_spellings(raw, kind, value):
    out = parse_value("k", raw, kind)
    assert out == value and type(out) is type(value)


@pytest.mark.parametrize(
    "raw, kind, message",
    [
        ("maybe", bool, "k='maybe' is not a valid bool"),
        (2, bool, "k=2 is not a valid bool"),
        ("x", int, "k='x' is not a valid int"),
        (1.5, int, "k=1.5 is not a valid int"),
        (True, int, "k=True is not a valid int"),
        (True, float, "k=True is not a valid float"),
        (True, str, "k=True is not a valid str"),
        ("high", float | None, "k='high' is not a valid float or null"),
        ("1,x", list[int], "k='1,x' is not a valid list of int"),
    ],
)
def test_one_error_format(raw, kind, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_value("k", raw, kind)


def test_every_command_reads_yes_and_no_alike():
    # Before one parser, only `unmask train` accepted yes/no: the run config, the cache registry and
    # bench/serve's own keys refused them, each with its own message.
    assert C.resolve_config(["allow_code_execution=yes"]).allow_code_execution is True
    assert C.resolve_config(["cache=prefix", "cache.use_dual=yes"]).cache["use_dual"] is True
    assert resolve_cache({"name": "prefix", "use_dual": "no"})[1]["use_dual"] is False
    assert C.split_overrides(["trace=YES"], bench.OWN_KEYS)[0] == {"trace": True}
    assert parse_overrides(["bf16=no"]).bf16 is False


def test_every_command_words_a_bad_value_alike():
    messages = []
    for call in (
        lambda: C.resolve_config(["batch_size=two"]),
        lambda: resolve_cache({"name": "dllm", "kp": "two"}),
        lambda: C.split_overrides(["threads=two"], bench.OWN_KEYS),
    ):
        with pytest.raises(ValueError) as info:
            call()
        messages.append(str(info.value))
    with pytest.raises(SystemExit) as info:
        parse_overrides(["n_layers=two"])
    messages.append(str(info.value))
    assert messages == [
        "batch_size='two' is not a valid int",
        "cache.kp='two' is not a valid int",
        "threads='two' is not a valid int",
        "unmask train: n_layers='two' is not a valid int",
    ]
