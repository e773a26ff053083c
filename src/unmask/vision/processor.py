"""LLaDA-V's "anyres" image preprocessing, written with Pillow and torch.

The official pipeline (LLaVA-OneVision's, which LLaDA-V's training and evaluation code reuse):

1. pick the grid pinpoint (a canvas size in pixels, a multiple of the tile size) that keeps the
   most of the image's resolution, ties going to the least wasted canvas area, earlier pinpoints
   first;
2. resize the image, keeping its aspect ratio, so that it fills the canvas on one side (the other
   side is rounded up and capped at the canvas), and paste it centred on a black canvas;
3. cut the canvas into tiles, row by row;
4. put in front of them the whole image squashed to one tile (no aspect ratio kept, no padding);
5. scale every tile to [0, 1] and normalize it with the SigLIP mean and std.

Both resizes use Pillow's bicubic filter (Pillow's default, which the official code relies on).
The N of "anyres_max_N" does not change the tiles: it limits the feature grid later, when the
model packs the tile features (see `ImageProcessorConfig.max_tiles`).
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .images import ImageError

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"

# The official SigLIP image processor's fixed settings (LLaDA-V builds it with its defaults).
SIGLIP_TILE_SIZE = 384
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
BICUBIC = 3
RESAMPLE_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}

_GRID_RANGE = re.compile(r"\((\d+)x(\d+)\)")
_ASPECT = re.compile(r"anyres(?:_max_(\d+))?")


class ImageConfigError(ValueError):
    """An image-processor setting that unmask cannot use; the message names the file and key."""


@dataclass(frozen=True)
class ImageProcessorConfig:
    """How images become tiles for the vision tower.

    `grid_pinpoints` are (height, width) canvases in pixels, in the checkpoint's order (the order
    breaks ties). `max_tiles` is the N of "anyres_max_N" (None for plain "anyres"); it is used when
    the tile features are packed, not here.
    """

    tile_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    grid_pinpoints: tuple[tuple[int, int], ...]
    max_tiles: int | None
    rescale_factor: float = 1 / 255
    resample: int = BICUBIC

    def __post_init__(self) -> None:
        if not isinstance(self.tile_size, int) or isinstance(self.tile_size, bool) or self.tile_size <= 0:
            raise ImageConfigError(f"tile_size must be a positive integer, got {self.tile_size!r}")
        object.__setattr__(self, "image_mean", _triple(self.image_mean, "image_mean"))
        object.__setattr__(self, "image_std", _triple(self.image_std, "image_std"))
        if any(s == 0 for s in self.image_std):
            raise ImageConfigError(f"image_std must not contain 0, got {self.image_std}")
        pinpoints = tuple(_pinpoint(p, self.tile_size) for p in self.grid_pinpoints)
        if not pinpoints:
            raise ImageConfigError("grid_pinpoints must name at least one (height, width) canvas")
        object.__setattr__(self, "grid_pinpoints", pinpoints)
        if self.max_tiles is not None and (not isinstance(self.max_tiles, int) or isinstance(self.max_tiles, bool) or self.max_tiles <= 0):
            raise ImageConfigError(f"max_tiles must be a positive integer or None, got {self.max_tiles!r}")
        if not isinstance(self.rescale_factor, (int, float)) or not math.isfinite(self.rescale_factor) or self.rescale_factor <= 0:
            raise ImageConfigError(f"rescale_factor must be a positive number, got {self.rescale_factor!r}")
        if self.resample not in RESAMPLE_FILTERS:
            raise ImageConfigError(f"resample must be a PIL filter number {sorted(RESAMPLE_FILTERS)}, got {self.resample!r}")

    @property
    def aspect_ratio(self) -> str:
        """The config.json spelling: "anyres_max_N" or "anyres"."""
        return "anyres" if self.max_tiles is None else f"anyres_max_{self.max_tiles}"

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "ImageProcessorConfig":
        """Read a LLaVA-style checkpoint folder: `config.json` (image_aspect_ratio,
        image_grid_pinpoints) and, when present, `preprocessor_config.json` (tile size, mean, std,
        rescale factor, filter). Without the latter the official SigLIP defaults apply (384-pixel
        tiles, mean = std = 0.5), which is what the official code uses in every case."""
        folder = Path(path).expanduser()
        config = _read_json(folder / CONFIG_FILE, required=True)
        pre = _read_json(folder / PREPROCESSOR_FILE, required=False)
        where = str(folder / PREPROCESSOR_FILE)
        settings: dict[str, Any] = {
            "tile_size": SIGLIP_TILE_SIZE, "image_mean": SIGLIP_MEAN, "image_std": SIGLIP_STD,
            "rescale_factor": 1 / 255, "resample": BICUBIC,
        }
        if pre is not None:
            settings.update(_preprocessor_settings(pre, where))
        tile = settings["tile_size"]
        cfg_where = str(folder / CONFIG_FILE)
        aspect = config.get("image_aspect_ratio")
        if aspect is None:
            raise ImageConfigError(f"{cfg_where}: missing key image_aspect_ratio (LLaDA-V uses 'anyres_max_4')")
        max_tiles = parse_aspect_ratio(aspect, f"{cfg_where}: image_aspect_ratio")
        if config.get("image_grid_pinpoints") is None:
            raise ImageConfigError(f"{cfg_where}: missing key image_grid_pinpoints (needed for image_aspect_ratio={aspect!r})")
        pinpoints = parse_grid_pinpoints(config["image_grid_pinpoints"], tile, f"{cfg_where}: image_grid_pinpoints")
        try:
            return cls(grid_pinpoints=pinpoints, max_tiles=max_tiles, **settings)
        except ImageConfigError as exc:
            raise ImageConfigError(f"{folder}: {exc}") from None

    def to_checkpoint(self, path: str | Path) -> None:
        """Write this config in the hub layout: the anyres keys into `config.json` (other keys kept)
        and a SigLIP `preprocessor_config.json`. Pinpoints are written as [width, height] lists, the
        official convention, so `from_checkpoint` reads back the same config."""
        folder = Path(path).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        config = _read_json(folder / CONFIG_FILE, required=False) or {}
        config["image_aspect_ratio"] = self.aspect_ratio
        config["image_grid_pinpoints"] = [[w, h] for h, w in self.grid_pinpoints]
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        pre = {
            "image_processor_type": "SiglipImageProcessor",
            "do_resize": True,
            "size": {"height": self.tile_size, "width": self.tile_size},
            "resample": self.resample,
            "do_rescale": True,
            "rescale_factor": self.rescale_factor,
            "do_normalize": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }
        (folder / PREPROCESSOR_FILE).write_text(json.dumps(pre, indent=2) + "\n")


@dataclass(frozen=True)
class ProcessedImage:
    """One image ready for the tower. Tile 0 is the whole image resized to one tile (the base);
    tiles 1.. are the canvas cut row by row into `grid` = (rows, cols) tiles."""

    pixel_values: torch.Tensor  # [1 + rows * cols, 3, tile, tile] float32
    image_size: tuple[int, int]  # original (height, width)
    grid: tuple[int, int]  # (rows, cols)


def parse_aspect_ratio(value: Any, where: str) -> int | None:
    """"anyres" -> None, "anyres_max_N" -> N; every other mode is refused by name."""
    match = _ASPECT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ImageConfigError(f"{where}={value!r} is not supported; unmask implements 'anyres' and 'anyres_max_N' (LLaDA-V uses 'anyres_max_4')")
    if match.group(1) is None:
        return None
    n = int(match.group(1))
    if n <= 0:
        raise ImageConfigError(f"{where}={value!r}: N must be positive")
    return n


def parse_grid_pinpoints(value: Any, tile_size: int, where: str) -> tuple[tuple[int, int], ...]:
    """(height, width) canvases from the config value, in its order.

    The official forms: a list of [width, height] pairs, its string repr, or a range string
    "(1x1),...,(6x6)": only the first and last "(AxB)" count, and (i, j) for i in A0..A1, j in
    B0..B1 (i outer) is the canvas i tiles wide and j tiles high.
    """
    if isinstance(value, str) and "x" in value:
        found = _GRID_RANGE.findall(value)
        if not found:
            raise ImageConfigError(f"{where}={value!r}: expected a range like '(1x1),...,(6x6)'")
        (a0, b0), (a1, b1) = (tuple(map(int, found[0])), tuple(map(int, found[-1])))
        pairs = [(i * tile_size, j * tile_size) for i in range(a0, a1 + 1) for j in range(b0, b1 + 1)]
        if not pairs:
            raise ImageConfigError(f"{where}={value!r}: the range is empty (its first entry exceeds its last)")
    else:
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ImageConfigError(f"{where}={value!r}: not a list of [width, height] pairs or a '(1x1),...,(6x6)' range") from None
        if not isinstance(value, (list, tuple)) or not value:
            raise ImageConfigError(f"{where}={value!r}: expected a non-empty list of [width, height] pairs")
        pairs = []
        for entry in value:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not all(_is_int(x) for x in entry):
                raise ImageConfigError(f"{where}: entry {entry!r} is not a [width, height] pair of integers")
            pairs.append((int(entry[0]), int(entry[1])))
    result = []
    for width, height in pairs:
        try:
            result.append(_pinpoint((height, width), tile_size))
        except ImageConfigError as exc:
            raise ImageConfigError(f"{where}: {exc}") from None
    return tuple(result)


def select_best_resolution(image_size: tuple[int, int], pinpoints: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The (height, width) pinpoint that keeps the most image pixels after a fitting downscale
    (never counting more than the image has), ties to the least canvas area, then the earliest.
    A sliver that keeps 0 pixels everywhere still gets the smallest canvas, as officially."""
    height, width = image_size
    best = pinpoints[0]
    best_effective, best_wasted = 0, math.inf
    for canvas_h, canvas_w in pinpoints:
        scale = min(canvas_w / width, canvas_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = canvas_w * canvas_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (canvas_h, canvas_w), effective, wasted
    return best


def fitted_size(image_size: tuple[int, int], canvas: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the image resized to fill the canvas on one side, aspect kept."""
    height, width = image_size
    canvas_h, canvas_w = canvas
    scale_w, scale_h = canvas_w / width, canvas_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), canvas_h), canvas_w
    return canvas_h, min(math.ceil(width * scale_h), canvas_w)


def process_image(image: Image.Image, cfg: ImageProcessorConfig) -> ProcessedImage:
    """Base tile + canvas tiles of one image, normalized, as the official anyres preprocessing."""
    if not isinstance(image, Image.Image):
        raise ImageError(f"process_image takes a PIL image (use load_image for paths and bytes), not {type(image).__name__}")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"the image has zero size ({width}x{height} pixels)")
    if image.mode != "RGB":
        image = image.convert("RGB")
    tile = cfg.tile_size
    canvas_h, canvas_w = select_best_resolution((height, width), cfg.grid_pinpoints)
    new_h, new_w = fitted_size((height, width), (canvas_h, canvas_w))
    canvas = Image.new("RGB", (canvas_w, canvas_h), (0, 0, 0))
    canvas.paste(image.resize((new_w, new_h), resample=cfg.resample), ((canvas_w - new_w) // 2, (canvas_h - new_h) // 2))
    rows, cols = canvas_h // tile, canvas_w // tile
    tiles = [image.resize((tile, tile), resample=cfg.resample)]
    tiles += [canvas.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows) for c in range(cols)]
    pixels = torch.stack([_to_tensor(t) for t in tiles])
    return ProcessedImage(pixel_values=normalize(pixels, cfg), image_size=(height, width), grid=(rows, cols))


def normalize(pixels: torch.Tensor, cfg: ImageProcessorConfig) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32, rescaled in float64 then normalized in float32 (the
    arithmetic of the official SigLIP processor, so values match it bit for bit)."""
    scaled = (pixels.to(torch.float64) * cfg.rescale_factor).to(torch.float32)
    mean = torch.tensor(cfg.image_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(cfg.image_std, dtype=torch.float32).view(3, 1, 1)
    return (scaled - mean) / std


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 [3, H, W] from an RGB PIL image (no numpy round trip needed)."""
    width, height = image.size
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(height, width, 3).permute(2, 0, 1)


def _preprocessor_settings(pre: dict[str, Any], where: str) -> dict[str, Any]:
    """Tile size, mean, std, rescale factor and filter from a SigLIP-style preprocessor_config."""
    settings: dict[str, Any] = {}
    for flag in ("do_rescale", "do_normalize"):
        if pre.get(flag) is False:
            raise ImageConfigError(f"{where}: {flag}=false is not supported (the official processor always rescales and normalizes)")
    sizes = {key: _square_side(pre[key], f"{where}: {key}") for key in ("size", "crop_size") if pre.get(key) is not None}
    if len(set(sizes.values())) > 1:
        raise ImageConfigError(f"{where}: size and crop_size disagree ({sizes}); the base tile and the canvas tiles must have one size")
    if sizes:
        settings["tile_size"] = next(iter(sizes.values()))
    for key in ("image_mean", "image_std"):
        if key in pre:
            value = pre[key]
            settings[key] = (value,) * 3 if _is_number(value) else value
            try:
                settings[key] = _triple(settings[key], key)
            except ImageConfigError as exc:
                raise ImageConfigError(f"{where}: {exc}") from None
    if "rescale_factor" in pre:
        settings["rescale_factor"] = pre["rescale_factor"]
    if "resample" in pre:
        settings["resample"] = pre["resample"]
    return settings


def _square_side(value: Any, where: str) -> int:
    if _is_int(value):
        return int(value)
    if isinstance(value, dict):
        if "height" in value or "width" in value:
            h, w = value.get("height"), value.get("width")
            if not (_is_int(h) and _is_int(w)) or h != w:
                raise ImageConfigError(f"{where}={value!r}: tiles must be square (height == width, both integers)")
            return int(h)
        if _is_int(value.get("shortest_edge")):
            return int(value["shortest_edge"])
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(x) for x in value) and value[0] == value[1]:
        return int(value[0])
    raise ImageConfigError(f"{where}={value!r}: expected an integer, {{'height': n, 'width': n}} or {{'shortest_edge': n}}")


def _pinpoint(entry: Any, tile_size: int) -> tuple[int, int]:
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not all(_is_int(x) for x in entry):
        raise ImageConfigError(f"grid pinpoint {entry!r} is not a (height, width) pair of integers")
    height, width = int(entry[0]), int(entry[1])
    if height <= 0 or width <= 0 or height % tile_size or width % tile_size:
        raise ImageConfigError(f"grid pinpoint {height}x{width} (height x width) is not a positive multiple of the tile size {tile_size}")
    return height, width


def _triple(value: Any, name: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_number(x) and math.isfinite(x) for x in value):
        raise ImageConfigError(f"{name} must be three finite numbers (one per RGB channel), got {value!r}")
    return tuple(float(x) for x in value)  # type: ignore[return-value]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _read_json(path: Path, *, required: bool) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise ImageConfigError(f"{path} not found (an LLaDA-V checkpoint folder holds config.json)")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ImageConfigError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ImageConfigError(f"{path}: expected a JSON object")
    return data
