"""A native SigLIP vision tower that returns the features LLaDA-V feeds its projector.

The official LLaDA-V tower drops the last encoder layer of the pretrained SigLIP and takes the
output of the remaining stack (the second-to-last layer of the full model): no post-layernorm,
no pooling head. Checkpoints therefore hold one layer fewer than the pretrained tower. The
post-layernorm weights are still stored in the checkpoint, so they are kept here (unused) to
load and save that layout exactly.

Parameter names follow the checkpoint's `vision_model.*` names so the mapping is a prefix.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class SiglipConfig:
    """Shapes of the tower as run: `num_layers` counts the layers actually used (and stored)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    image_size: int
    patch_size: int
    layer_norm_eps: float = 1e-6

    @property
    def patches_per_side(self) -> int:
        """Patches per side; the convolution drops a remainder (384-pixel tiles, 14-pixel patches: 27)."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.patches_per_side**2

    def validate(self, source: str) -> None:
        """Reject shapes the tower cannot build, naming where they came from."""
        for name in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "image_size", "patch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{source}: vision tower {name} must be a positive integer, found {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"{source}: vision hidden size {self.hidden_size} is not divisible by {self.num_heads} heads")
        if self.image_size < self.patch_size:
            raise ValueError(f"{source}: vision image size {self.image_size} is smaller than patch size {self.patch_size}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"{source}: vision layer_norm_eps must be positive, found {self.layer_norm_eps!r}")

    def to_hub_dict(self) -> dict:
        """A transformers-style SigLIP vision config for the full pretrained tower (one layer more)."""
        return {
            "model_type": "siglip_vision_model",
            "architectures": ["SiglipVisionModel"],
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers + 1,
            "num_attention_heads": self.num_heads,
            "num_channels": 3,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": "gelu_pytorch_tanh",
            "attention_dropout": 0.0,
        }

    @classmethod
    def from_hub_dict(cls, raw: dict, source: str) -> "SiglipConfig":
        """Read a tower folder's config.json (a SigLIP vision config, or a full SigLIP config with
        `vision_config`); the last layer is dropped as the official loader does."""
        if raw.get("model_type") == "siglip" and isinstance(raw.get("vision_config"), dict):
            raw = raw["vision_config"]
        act = raw.get("hidden_act", "gelu_pytorch_tanh")
        if act != "gelu_pytorch_tanh":
            raise ValueError(f"{source}: hidden_act {act!r} is not SigLIP's gelu_pytorch_tanh")
        if raw.get("num_channels", 3) != 3:
            raise ValueError(f"{source}: num_channels must be 3, found {raw.get('num_channels')!r}")
        missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                               "image_size", "patch_size") if k not in raw]
        if missing:
            raise ValueError(f"{source}: missing SigLIP config keys {missing}")
        layers = raw["num_hidden_layers"]
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 2:
            raise ValueError(f"{source}: num_hidden_layers must be an integer of at least 2 (the last is dropped), found {layers!r}")
        cfg = cls(
            hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            num_layers=layers - 1,
            num_heads=raw["num_attention_heads"],
            image_size=raw["image_size"],
            patch_size=raw["patch_size"],
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-6)),
        )
        cfg.validate(source)
        return cfg

    @classmethod
    def from_folder(cls, path: Path) -> "SiglipConfig":
        file = path / "config.json"
        try:
            raw = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{file}: not a readable SigLIP config ({exc})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{file}: expected a JSON object")
        return cls.from_hub_dict(raw, str(file))

    def as_dict(self) -> dict:
        return asdict(self)


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.hidden_size)

    def forward(self, pixel_values: Tensor) -> Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        return patches.flatten(2).transpose(1, 2) + self.position_embedding.weight


class SiglipAttention(nn.Module):
    """Eager attention as the official tower computes it: scores in the model dtype, softmax in
    float32 cast back, then the weighted sum (so bfloat16 features round as the official ones)."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.scale = (d // cfg.num_heads) ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        h = self.num_heads

        def heads(t: Tensor) -> Tensor:
            return t.view(b, n, h, d // h).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale
        probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipLayer(nn.Module):
    """Pre-norm encoder layer (LayerNorm with bias, attention, tanh-GELU MLP)."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipLayer(cfg) for _ in range(cfg.num_layers))


class SiglipVisionTower(nn.Module):
    """Tiles [n, 3, S, S] -> patch features [n, (S/p)^2, hidden] from the last stored layer."""

    def __init__(self, cfg: SiglipConfig, post_layernorm: bool = True):
        super().__init__()
        self.cfg = cfg
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        # Stored in LLaDA-V checkpoints but not applied to the features (see the module docstring);
        # `post_layernorm=False` for a checkpoint saved without it.
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if post_layernorm else None

    def forward(self, pixel_values: Tensor) -> Tensor:
        size = self.cfg.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(f"vision tower expects pixel values [n, 3, {size}, {size}], got {list(pixel_values.shape)}")
        h = self.embeddings(pixel_values)
        for layer in self.encoder.layers:
            h = layer(h)
        return h
