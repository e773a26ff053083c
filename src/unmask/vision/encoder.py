"""Images -> LM-space feature sequences: tower, projector, anyres packing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .packing import pack_image_features
from .projector import MlpProjector
from .tower import SiglipConfig, SiglipVisionTower

if TYPE_CHECKING:
    from .processor import ImageProcessorConfig, ProcessedImage


class VisionEncoder(nn.Module):
    """The vision half of LLaDA-V; `processor` holds the image-processor settings it was built for."""

    def __init__(
        self, tower_cfg: SiglipConfig, lm_hidden: int, processor: "ImageProcessorConfig", post_layernorm: bool = True
    ):
        super().__init__()
        if processor.tile_size != tower_cfg.image_size:
            raise ValueError(
                f"image processor tile size {processor.tile_size} differs from the vision tower's input size {tower_cfg.image_size}"
            )
        self.tower = SiglipVisionTower(tower_cfg, post_layernorm=post_layernorm)
        self.projector = MlpProjector(tower_cfg.hidden_size, lm_hidden)
        # Initialised as the official training code does (std 1/sqrt(hidden)); loading overwrites it.
        self.image_newline = nn.Parameter(torch.randn(lm_hidden) * lm_hidden**-0.5)
        self.processor = processor

    @property
    def dtype(self) -> torch.dtype:
        return self.image_newline.dtype

    def encode(self, images: list["ProcessedImage"]) -> list[Tensor]:
        """Per image, its packed features [n_features, lm_hidden] in the model's dtype.

        All tiles of all images run through the tower in one batch (as the official code does)."""
        if not images:
            return []
        device = self.image_newline.device
        tiles = torch.cat([img.pixel_values for img in images]).to(device=device, dtype=self.dtype)
        projected = self.projector(self.tower(tiles))
        out, start = [], 0
        for img in images:
            n = img.pixel_values.shape[0]
            out.append(pack_image_features(projected[start : start + n], img, self.image_newline, self.processor))
            start += n
        return out
