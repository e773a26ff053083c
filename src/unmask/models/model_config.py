"""Family-independent description of a diffusion LM, filled from a checkpoint's config.json."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids the denoising loop needs; per-family defaults fill what a checkpoint omits."""

    mask: int
    eos: int
    eot: int | None  # end of turn; None for a model without one (EOS alone ends answers)
    bos: int | None
    pad: int

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Ids that end an answer (EOS and end of turn)."""
        return (self.eos,) if self.eot in (None, self.eos) else (self.eos, self.eot)


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and numerics of one model; `family` decides parameter names and the logit shift."""

    family: str  # "llada" or "dream"
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    rope_theta: float
    rms_norm_eps: float
    max_position: int
    qkv_bias: bool
    shift_logits: bool

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def validate(self, source: str) -> None:
        """Reject shapes the modules cannot build, naming the file they came from."""
        if self.hidden_size % self.num_heads:
            raise ValueError(f"{source}: hidden size {self.hidden_size} is not divisible by {self.num_heads} heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"{source}: {self.num_heads} heads are not divisible by {self.num_kv_heads} KV heads")
        if self.head_dim % 2:
            raise ValueError(f"{source}: head dimension {self.head_dim} must be even for rotary embeddings")
