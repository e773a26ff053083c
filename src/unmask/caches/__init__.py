"""Cache policies, one module per method; `resolve_cache` maps `cache=...` settings to one."""

from .base import CachePolicy
from .registry import resolve_cache

__all__ = ["CachePolicy", "resolve_cache"]
