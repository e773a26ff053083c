"""The diffusion LM module: embeddings, decoder layers, final norm and LM head.

LLaDA and Dream share this module; they differ in parameter names (see
`families.py`), q/k/v biases, GQA and whether logits are shifted by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .model_config import ModelConfig, SpecialTokens
from .layers import DecoderLayer, RMSNorm, RotaryTable


class DiffusionLM(nn.Module):
    def __init__(self, cfg: ModelConfig, tie_embeddings: bool = False):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.rotary = RotaryTable(cfg.head_dim, cfg.rope_theta, cfg.max_position, in_model_dtype=cfg.family == "llada-v")

    def head(self, hidden: Tensor) -> Tensor:
        """Logits for the given hidden rows only (the LM head is costly for large vocabularies)."""
        return self.lm_head(self.norm(hidden))

    def forward(
        self, input_ids: Tensor | None, attention_mask: Tensor | None = None, inputs_embeds: Tensor | None = None
    ) -> Tensor:
        """Full bidirectional forward over [B,T] ids, logits [B,T,V] (Dream's shift applied).

        `inputs_embeds` [B,T,d] (e.g. a prompt with image features spliced in) replaces the token
        embedding of every row; `input_ids` may then be None (or hold placeholders such as -200).
        Used for training and as the plain reference; generation goes through the engine.
        """
        if inputs_embeds is not None:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.cfg.hidden_size:
                raise ValueError(f"inputs_embeds must be [B, T, {self.cfg.hidden_size}], got {list(inputs_embeds.shape)}")
            if input_ids is not None and tuple(input_ids.shape) != tuple(inputs_embeds.shape[:2]):
                raise ValueError(f"input_ids {list(input_ids.shape)} and inputs_embeds {list(inputs_embeds.shape)} disagree")
            h = inputs_embeds.to(self.embed.weight.dtype)
        elif input_ids is None:
            raise ValueError("forward needs input_ids or inputs_embeds")
        else:
            h = self.embed(input_ids)
        positions, key_mask = positions_and_key_mask(attention_mask, h.shape[:2])
        cos, sin = self.rotary.lookup(positions.to(h.device))
        for layer in self.layers:
            h, _ = layer(h, cos, sin, key_mask=key_mask)
        logits = self.head(h)
        if self.cfg.shift_logits:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits


def positions_and_key_mask(attention_mask: Tensor | None, shape: torch.Size) -> tuple[Tensor, Tensor | None]:
    """Position ids `cumsum(mask) - 1` (so left padding does not move a prompt) and a [B,1,1,T] key mask."""
    b, t = shape
    if attention_mask is None:
        return torch.arange(t).expand(b, t), None
    mask = attention_mask.bool()
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    key_mask = None if bool(mask.all()) else mask[:, None, None, :]
    return positions, key_mask


@dataclass
class LoadedModel:
    """What `unmask.load` returns: the module plus everything generation needs to drive it."""

    module: DiffusionLM
    special: SpecialTokens
    tokenizer: Any  # unmask.models.tokenizer.Tokenizer
    path: str
    name: str = ""
    chat_template: str | None = None
    extra: dict = field(default_factory=dict)
    vision: Any = None  # unmask.vision.encoder.VisionEncoder for family "llada-v", else None

    @property
    def cfg(self) -> ModelConfig:
        return self.module.cfg

    @property
    def device(self) -> torch.device:
        return self.module.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.module.embed.weight.dtype
