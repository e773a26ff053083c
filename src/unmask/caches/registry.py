"""The registry behind `cache=<name>`: the method names, and settings checked against each method's `params`."""

from __future__ import annotations

from typing import Any

from ..parsing import parse_value
from .base import CachePolicy
from .d2cache import D2Cache
from .dllm import DLLMCache
from .elastic import ElasticCache
from .null import NullCache
from .prefix import PrefixCache

POLICIES: tuple[type[CachePolicy], ...] = (NullCache, PrefixCache, DLLMCache, D2Cache, ElasticCache)


def registry() -> dict[str, type[CachePolicy]]:
    """Every cache method by its `cache=` name."""
    return {cls.name: cls for cls in POLICIES}


def resolve_cache(cache: str | dict | None) -> tuple[type[CachePolicy], dict[str, Any]]:
    """`None` | "prefix" | {"name": "dllm", "kp": 50, ...} -> (policy class, full settings)."""
    if cache is None:
        cache = {"name": "null"}
    elif isinstance(cache, str):
        cache = {"name": cache}
    elif not isinstance(cache, dict):
        raise TypeError(f"cache must be None, a name or a dict with 'name', not {type(cache).__name__}")
    cache = dict(cache)
    name = str(cache.pop("name", "null"))
    name = "null" if name.lower() in ("none", "null") else name
    policies = registry()
    if name not in policies:
        raise ValueError(f"unknown cache '{name}'; valid choices: {sorted(policies)}")
    cls = policies[name]
    unknown = sorted(set(cache) - set(cls.params))
    if unknown:
        valid = sorted(cls.params) or "none"
        raise ValueError(f"unknown parameter(s) {unknown} for cache={name}; valid parameters: {valid}")
    # Each setting reads as its default's type (command-line text included), as every command reads values.
    settings = {key: parse_value(f"cache.{key}", cache.get(key, default), type(default)) for key, default in cls.params.items()}
    return cls, settings
