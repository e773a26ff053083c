"""The vision half of a LLaDA-V checkpoint: config keys, tower shape, tensor names.

LLaDA-V stores one LLaVA-style folder: the LM under LLaMA-style names, plus the projector
(`model.mm_projector.{0,2}`), `model.image_newline` and the fine-tuned tower under
`model.vision_tower.vision_tower.vision_model.*`. `mm_vision_tower` names the tower's hub id,
which unmask never downloads: the tower's shape comes from a local folder when the name points
to one (absolute, or relative to the checkpoint), otherwise from the weights plus the known
SigLIP settings (the head count cannot be read from weights).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

from ..vision.projector import PROJECTOR_TYPE
from ..vision.tower import SiglipConfig

log = logging.getLogger("unmask")

TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."
PROJECTOR_PREFIX = "model.mm_projector."
NEWLINE_NAME = "model.image_newline"
VISION_PREFIXES = (TOWER_PREFIX, PROJECTOR_PREFIX, NEWLINE_NAME)
TOWER_FOLDER = "siglip_tower"  # where `save_llada_v_checkpoint` puts a tower config it cannot name by hub id
DEFAULT_TOWER = "google/siglip2-so400m-patch14-384"

# Known SigLIP vision towers by hidden size: (attention heads, layers of the pretrained tower).
KNOWN_SIGLIP = {1152: (16, 27), 1024: (16, 24), 768: (12, 12)}
SIGLIP_LAYER_NORM_EPS = 1e-6


def is_vision_tensor(name: str) -> bool:
    return name.startswith(VISION_PREFIXES)


def vision_checkpoint_name(internal: str) -> str:
    """Checkpoint name of a `VisionEncoder` parameter name."""
    if internal.startswith("tower."):
        return TOWER_PREFIX + internal.removeprefix("tower.")
    if internal.startswith("projector."):
        return PROJECTOR_PREFIX + internal.removeprefix("projector.")
    if internal == "image_newline":
        return NEWLINE_NAME
    raise KeyError(f"no LLaDA-V checkpoint name for vision parameter {internal}")


def check_vision_keys(raw: dict, source: str) -> None:
    """Refuse LLaVA settings this implementation does not reproduce (instead of ignoring them)."""
    expected = {
        "mm_projector_type": (PROJECTOR_TYPE,),
        "mm_patch_merge_type": ("spatial_unpad",),
    }
    for key, allowed in expected.items():
        if raw.get(key) not in allowed:
            raise ValueError(f"{source}: {key} must be {allowed[0]!r} for LLaDA-V, found {raw.get(key)!r}")
    if raw.get("mm_vision_select_layer", -2) != -2:
        raise ValueError(f"{source}: mm_vision_select_layer must be -2 (LLaDA-V's SigLIP tower), found {raw['mm_vision_select_layer']!r}")
    if raw.get("mm_vision_select_feature", "patch") != "patch":
        raise ValueError(f"{source}: mm_vision_select_feature must be 'patch', found {raw['mm_vision_select_feature']!r}")
    if raw.get("mm_use_im_start_end"):
        raise ValueError(f"{source}: mm_use_im_start_end=true is not supported (LLaDA-V does not use image start/end tokens)")
    tower = raw.get("mm_vision_tower")
    if not isinstance(tower, str) or not tower:
        raise ValueError(f"{source}: missing config key 'mm_vision_tower' (the SigLIP tower's name or folder)")


def tower_folder(raw: dict, checkpoint: Path) -> Path | None:
    """The local folder `mm_vision_tower` points to (absolute, or relative to the checkpoint), if any."""
    name = Path(raw["mm_vision_tower"]).expanduser()
    for candidate in ([name] if name.is_absolute() else [checkpoint / name]):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def tower_from_weights(shapes: dict[str, tuple[int, ...]], source: str, tower_name: str, tile_size: int) -> SiglipConfig:
    """The tower's shape from its tensors, with the head count from the known SigLIP settings and
    the input size from the image processor's tile size (patches need not cover it exactly)."""
    def shape(suffix: str) -> tuple[int, ...]:
        name = TOWER_PREFIX + suffix
        if name not in shapes:
            raise ValueError(f"{source}: missing parameters ['{name}'] (needed to read the vision tower's shape)")
        return shapes[name]

    hidden, channels, patch, patch_w = shape("embeddings.patch_embedding.weight")
    positions = shape("embeddings.position_embedding.weight")[0]
    intermediate = shape("encoder.layers.0.mlp.fc1.weight")[0]
    layer_ids = {int(m.group(1)) for n in shapes if (m := re.match(re.escape(TOWER_PREFIX) + r"encoder\.layers\.(\d+)\.", n))}
    side = math.isqrt(positions)
    if channels != 3 or patch != patch_w or side * side != positions:
        raise ValueError(f"{source}: the vision tower's embedding tensors do not describe a SigLIP tower")
    if tile_size // patch != side:
        raise ValueError(
            f"{source}: image tiles of {tile_size} pixels give {tile_size // patch} patches per side, but the vision "
            f"tower's position embedding has {side}"
        )
    if hidden not in KNOWN_SIGLIP:
        raise ValueError(
            f"{source}: mm_vision_tower {tower_name!r} is not a local folder, and a SigLIP tower of hidden size {hidden} "
            f"is not a known setting (known: {sorted(KNOWN_SIGLIP)}), so its head count is unknown; point "
            "mm_vision_tower to a folder holding the tower's config.json"
        )
    heads, full_layers = KNOWN_SIGLIP[hidden]
    if len(layer_ids) >= full_layers:
        raise ValueError(
            f"{source}: the checkpoint holds {len(layer_ids)} vision tower layers; LLaDA-V stores the pretrained "
            f"tower without its last layer ({full_layers - 1} of {full_layers})"
        )
    cfg = SiglipConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_layers=len(layer_ids), num_heads=heads,
        image_size=tile_size, patch_size=patch, layer_norm_eps=SIGLIP_LAYER_NORM_EPS,
    )
    cfg.validate(source)
    return cfg


def resolve_tower(
    raw: dict, checkpoint: Path, shapes: dict[str, tuple[int, ...]], tile_size: int
) -> tuple[SiglipConfig, dict]:
    """The tower config and a record of where it came from (also logged)."""
    source = str(checkpoint / "config.json")
    folder = tower_folder(raw, checkpoint)
    if folder is not None:
        cfg = SiglipConfig.from_folder(folder)
        origin = {"source": "folder", "path": str(folder)}
        log.info("LLaDA-V vision tower shape from the local folder %s", folder)
    else:
        cfg = tower_from_weights(shapes, source, raw["mm_vision_tower"], tile_size)
        origin = {"source": "weights", "hub_id": raw["mm_vision_tower"]}
        log.info(
            "LLaDA-V vision tower %r is not a local folder: shape read from the weights with the known SigLIP settings",
            raw["mm_vision_tower"],
        )
    mm_hidden = raw.get("mm_hidden_size")
    if mm_hidden is not None and mm_hidden != cfg.hidden_size:
        raise ValueError(f"{source}: mm_hidden_size {mm_hidden} differs from the vision tower's hidden size {cfg.hidden_size}")
    return cfg, {**origin, **cfg.as_dict()}


def tower_name_for_save(config: dict, tower: SiglipConfig) -> str | None:
    """The hub id to keep in `mm_vision_tower` when the weights alone describe the tower, else None
    (then the saver writes a local tower folder)."""
    known = KNOWN_SIGLIP.get(tower.hidden_size)
    if known is None or known[0] != tower.num_heads or tower.layer_norm_eps != SIGLIP_LAYER_NORM_EPS:
        return None
    if tower.num_layers != known[1] - 1:
        return None
    name = config.get("mm_vision_tower", DEFAULT_TOWER)
    return name if isinstance(name, str) and "siglip" in name and name != TOWER_FOLDER else DEFAULT_TOWER
