"""Cache policies, one module per method; `resolve_cache` maps `cache=...` settings to one."""

from .base import CachePolicy
from .registry import registry, resolve_cache

__all__ = ["CachePolicy", "registry", "resolve_cache"]
