"""unmask: fast inference and evaluation of diffusion language models.

`generate`, `GenerationResult` and `load` are imported on first use, so that `import unmask`
(and with it `unmask --help`) does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .generate import GenerationResult, generate
    from .models.checkpoint import load

__all__ = ["GenerationResult", "generate", "load"]
__version__ = "0.1.0"

_HOMES = {"generate": ".generate", "GenerationResult": ".generate", "load": ".models.checkpoint"}


class _Package(types.ModuleType):
    """The package object: resolves the public names lazily and keeps `unmask.generate` the
    function even though the submodule `unmask.generate` has the same name."""

    def __getattr__(self, name: str) -> Any:
        if name not in _HOMES:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(_HOMES[name], self.__name__), name)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "generate" and isinstance(value, types.ModuleType):
            return  # the import system binding the submodule: the function keeps the name
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
