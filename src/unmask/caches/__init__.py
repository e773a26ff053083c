"""Cache policies, one module per method; `resolve_cache` maps `cache=...` settings to one."""

from .base import CachePolicy, resolve_cache

__all__ = ["CachePolicy", "resolve_cache"]
