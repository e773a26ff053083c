"""unmask: fast inference and evaluation of diffusion language models."""

from .generate import GenerationResult, generate
from .models.checkpoint import load

__all__ = ["GenerationResult", "generate", "load"]
__version__ = "0.1.0"
