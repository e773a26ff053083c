"""The registry behind `cache=<name>`: the method names, and settings checked against each method's `params`."""

from __future__ import annotations

from typing import Any

from .base import CachePolicy
from .d2cache import D2Cache
from .dllm import DLLMCache
from .elastic import ElasticCache
from .none import NoCache
from .prefix import PrefixCache

POLICIES: tuple[type[CachePolicy], ...] = (NoCache, PrefixCache, DLLMCache, D2Cache, ElasticCache)


def registry() -> dict[str, type[CachePolicy]]:
    """Every cache method by its `cache=` name."""
    return {cls.name: cls for cls in POLICIES}


def coerce(name: str, key: str, value: Any, default: Any) -> Any:
    """Coerce a (possibly string) setting to the type of its default, with an error naming the key."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "1")
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"cache.{key}={value!r} is not a valid {type(default).__name__} for cache={name}") from None
    return value


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
    settings = {key: coerce(name, key, cache.get(key, default), default) for key, default in cls.params.items()}
    return cls, settings
