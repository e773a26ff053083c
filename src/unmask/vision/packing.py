"""LLaVA-OneVision "anyres" packing of per-tile features into one sequence per image.

Order, as in the official LLaDA-V (`spatial_unpad` with `anyres_max_N`): the base tile's
features first (no newline), then the grid tiles stitched into one feature map, cropped back to
the image's aspect ratio (`unpad`), bilinearly shrunk when larger than N tiles' worth, and a
learned newline vector appended after every row.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .processor import ImageProcessorConfig, ProcessedImage

# Shrink only when the map exceeds the budget by more than this factor (official threshold).
SHRINK_TOLERANCE = 1.1


def unpad_features(feature_map: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Crop a [C, H, W] map to the part covered by the image (height, width) after its
    aspect-preserving resize and centred padding. Truncates like the official code (`int`)."""
    orig_h, orig_w = image_size
    cur_h, cur_w = feature_map.shape[1:]
    if orig_w / orig_h > cur_w / cur_h:
        kept = int(orig_h * (cur_w / orig_w))
        pad = (cur_h - kept) // 2
        return feature_map[:, pad : cur_h - pad, :]
    kept = int(orig_w * (cur_h / orig_h))
    pad = (cur_w - kept) // 2
    return feature_map[:, :, pad : cur_w - pad]


def pack_image_features(
    features: Tensor, image: "ProcessedImage", newline: Tensor, cfg: "ImageProcessorConfig"
) -> Tensor:
    """features [n_tiles, side*side, d] (tile 0 = base) -> [n_features, d] for one image."""
    n_tiles, n_patches, dim = features.shape
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(f"tile features have {n_patches} patches, not a square grid")
    rows, cols = image.grid
    if n_tiles == 1:
        # A single tile (no grid): its features and one newline, as the official single-image path.
        return torch.cat([features[0], newline[None].to(features.dtype)], dim=0)
    if n_tiles != 1 + rows * cols:
        raise ValueError(f"image has {n_tiles} tiles, but its grid {rows}x{cols} needs {1 + rows * cols} (base + grid)")
    base = features[0]
    grid = features[1:].view(rows, cols, side, side, dim)
    # [rows, cols, y, x, d] -> [d, rows*y, cols*x]: one feature map over the whole padded image.
    fmap = grid.permute(4, 0, 2, 1, 3).reshape(dim, rows * side, cols * side)
    fmap = unpad_features(fmap, tuple(image.image_size))
    if cfg.max_tiles is not None:
        h, w = fmap.shape[1:]
        times = math.sqrt(h * w / (cfg.max_tiles * side**2))
        if times > SHRINK_TOLERANCE:
            fmap = F.interpolate(fmap[None], [int(h // times), int(w // times)], mode="bilinear")[0]
    row_ends = newline.to(fmap.dtype)[:, None, None].expand(dim, fmap.shape[1], 1)
    fmap = torch.cat([fmap, row_ends], dim=-1)
    return torch.cat([base, fmap.flatten(1, 2).transpose(0, 1)], dim=0)
