"""LLaDA-V checkpoints: the hub layout round-trips, the tower shape is found without the hub,
and every bad input gets one clear error."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import unmask
from conftest import LLADA_SPECIALS, write_tokenizer
from unmask.models.checkpoint import save_llada_v_checkpoint
from unmask.models.model import DiffusionLM
from unmask.models.model_config import ModelConfig
from unmask.vision.encoder import VisionEncoder
from unmask.vision.processor import ImageProcessorConfig, process_image
from unmask.vision.prompt import IMAGE_PLACEHOLDER, splice_images
from unmask.vision.tower import SiglipConfig

TILE = 28
TOWER = SiglipConfig(hidden_size=24, intermediate_size=40, num_layers=2, num_heads=3, image_size=TILE, patch_size=7)
PROCESSOR = ImageProcessorConfig(
    tile_size=TILE, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
    grid_pinpoints=tuple((TILE * r, TILE * c) for r in (1, 2, 3) for c in (1, 2, 3)), max_tiles=4,
)
LM = ModelConfig(
    family="llada-v", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=64,
    vocab_size=64, rope_theta=500000.0, rms_norm_eps=1e-5, max_position=512, qkv_bias=False, shift_logits=False,
)
# The official config's LLaMA-3 BOS id: outside LLaDA's vocabulary, unused by the official code.
HUB_KEYS = {"bos_token_id": 128000, "eos_token_id": 0, "image_grid_pinpoints": "(1x1),...,(3x3)"}


def _modules(seed: int = 0) -> tuple[DiffusionLM, VisionEncoder]:
    torch.manual_seed(seed)
    lm = DiffusionLM(LM)
    vision = VisionEncoder(TOWER, LM.hidden_size, PROCESSOR)
    with torch.no_grad():
        for p in [*lm.parameters(), *vision.parameters()]:
            p.normal_(0, 0.3)
    return lm.eval(), vision.eval()


def _save(path: Path, lm: DiffusionLM, vision: VisionEncoder, **kw) -> Path:
    save_llada_v_checkpoint(lm, vision, path, dict(HUB_KEYS), **kw)
    write_tokenizer(path, LLADA_SPECIALS)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    lm, vision = _modules()
    path = _save(tmp_path_factory.mktemp("llada_v"), lm, vision, max_shard_bytes=20_000)
    return path, lm, vision


def _copy(saved, tmp_path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(saved[0], dst)
    return dst


def _image(h: int, w: int, seed: int):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy())


def _logits(lm: DiffusionLM, vision: VisionEncoder, images) -> torch.Tensor:
    ids = [1, 7, IMAGE_PLACEHOLDER, 8, 9, IMAGE_PLACEHOLDER, 10, 2, 2]
    feats = vision.encode([process_image(im, vision.processor) for im in images])
    spliced = splice_images(ids, feats, lm.embed, fill_id=0)
    return lm(None, inputs_embeds=spliced.embeds[None])


def _edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        if v is ...:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (path / "config.json").write_text(json.dumps(cfg))


def _error(path, expected=ValueError) -> str:
    with pytest.raises(Exception) as info:
        unmask.load(path)
    assert isinstance(info.value, expected), f"{type(info.value).__name__}: {info.value}"
    return str(info.value)


# -- layout and round trip ------------------------------------------------------------------------


def test_saved_layout_is_the_hub_layout(saved):
    path = saved[0]
    index = json.loads((path / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((path / s).exists() for s in shards)
    assert all(s.startswith("model-") and s.endswith(f"-of-{len(shards):05d}.safetensors") for s in shards)
    for name in ("model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight", "model.layers.0.mlp.gate_proj.weight",
                 "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                 "model.norm.weight", "lm_head.weight", "model.mm_projector.0.weight", "model.mm_projector.2.bias",
                 "model.image_newline", "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
                 "model.vision_tower.vision_tower.vision_model.encoder.layers.1.self_attn.out_proj.weight",
                 "model.vision_tower.vision_tower.vision_model.post_layernorm.bias"):
        assert name in names, name
    assert not any("encoder.layers.2." in n or ".head." in n for n in names)  # last tower layer and pooling head dropped
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaLLaDAModelLM"] and cfg["model_type"] == "llava_llada"
    assert (cfg["mm_projector_type"], cfg["mm_patch_merge_type"], cfg["mm_vision_select_layer"]) == ("mlp2x_gelu", "spatial_unpad", -2)
    assert cfg["image_aspect_ratio"] == "anyres_max_4" and cfg["mm_hidden_size"] == TOWER.hidden_size
    tower = json.loads((path / cfg["mm_vision_tower"] / "config.json").read_text())
    assert tower["num_hidden_layers"] == TOWER.num_layers + 1  # the pretrained tower, before its last layer is dropped
    assert (path / "preprocessor_config.json").exists()


def test_round_trip_gives_the_in_memory_logits(saved, caplog):
    path, lm, vision = saved
    with caplog.at_level(logging.INFO, logger="unmask"):
        model = unmask.load(path)
    assert model.cfg.family == "llada-v" and model.vision is not None
    assert model.extra["vision_tower"]["source"] == "folder"
    assert "local folder" in caplog.text
    assert model.extra["ignored_config_ids"] == {"bos_token_id": 128000}
    assert model.special.bos == LLADA_SPECIALS.index("<|startoftext|>")
    assert model.vision.processor == PROCESSOR
    assert model.vision.tower.cfg == TOWER
    images = [_image(40, 90, 1), _image(70, 30, 2)]
    with torch.no_grad():
        want = _logits(lm, vision, images)
        got = _logits(model.module, model.vision, images)
    assert torch.equal(got, want)
    assert not any(p.requires_grad for p in model.vision.parameters())


def test_single_file_checkpoint_loads(saved, tmp_path):
    path = _copy(saved, tmp_path)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    tensors = {}
    for shard in set(index["weight_map"].values()):
        tensors.update(load_file(str(path / shard)))
        (path / shard).unlink()
    (path / "model.safetensors.index.json").unlink()
    save_file(tensors, str(path / "model.safetensors"))
    model = unmask.load(path)
    assert torch.equal(model.vision.image_newline, saved[2].image_newline)


def test_bfloat16_load_keeps_vision_in_the_lm_dtype(saved):
    model = unmask.load(saved[0], dtype="bfloat16")
    assert model.vision.dtype == torch.bfloat16
    feats = model.vision.encode([process_image(_image(50, 50, 3), model.vision.processor)])
    assert feats[0].dtype == torch.bfloat16 and feats[0].shape[1] == LM.hidden_size


# -- tower shape without a tower folder ---------------------------------------------------------------


def test_known_siglip_shape_from_the_weights(tmp_path):
    """A so400m-shaped tower (head count known) loads with no tower folder; the hub id is reported."""
    from unmask.models.vision_checkpoint import tower_from_weights, TOWER_PREFIX

    shapes = {
        TOWER_PREFIX + "embeddings.patch_embedding.weight": (1152, 3, 14, 14),
        TOWER_PREFIX + "embeddings.position_embedding.weight": (729, 1152),
        **{TOWER_PREFIX + f"encoder.layers.{i}.mlp.fc1.weight": (4304, 1152) for i in range(26)},
    }
    cfg = tower_from_weights(shapes, "cfg", "google/siglip2-so400m-patch14-384", 384)
    assert cfg == SiglipConfig(1152, 4304, 26, 16, 384, 14, 1e-6)
    assert cfg.num_patches == 729  # 27 x 27: the convolution drops the last 6 pixels of a 384-pixel tile
    with pytest.raises(ValueError, match="28 patches per side"):
        tower_from_weights(shapes, "cfg", "google/siglip2-so400m-patch14-384", 392)
    shapes[TOWER_PREFIX + "encoder.layers.26.mlp.fc1.weight"] = (4304, 1152)
    with pytest.raises(ValueError, match="without its last layer"):
        tower_from_weights(shapes, "cfg", "google/siglip2-so400m-patch14-384", 384)


def test_unknown_tower_without_folder_is_refused(saved, tmp_path):
    path = _copy(saved, tmp_path)
    shutil.rmtree(path / "siglip_tower")
    msg = _error(path)
    assert "mm_vision_tower 'siglip_tower' is not a local folder" in msg and "head count" in msg


def test_absolute_tower_folder(saved, tmp_path):
    path = _copy(saved, tmp_path)
    elsewhere = tmp_path / "towers" / "my-siglip"
    shutil.move(str(path / "siglip_tower"), elsewhere)
    _edit_config(path, mm_vision_tower=str(elsewhere))
    model = unmask.load(path)
    assert model.extra["vision_tower"]["path"] == str(elsewhere)


# -- clear errors --------------------------------------------------------------------------------


def _rewrite(path: Path, edit) -> None:
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["model.image_newline"]
    tensors = load_file(str(path / shard))
    edit(tensors, index, shard)
    save_file(tensors, str(path / shard))
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def test_missing_vision_tensor_is_named(saved, tmp_path):
    path = _copy(saved, tmp_path)

    def drop(tensors, index, shard):
        del tensors["model.image_newline"]
        del index["weight_map"]["model.image_newline"]

    _rewrite(path, drop)
    msg = _error(path)
    assert "missing parameters ['model.image_newline']" in msg


def test_extra_tensor_is_named(saved, tmp_path):
    path = _copy(saved, tmp_path)
    name = "model.vision_tower.vision_tower.vision_model.head.probe"

    def add(tensors, index, shard):
        tensors[name] = torch.zeros(1, 1, TOWER.hidden_size)
        index["weight_map"][name] = shard

    _rewrite(path, add)
    msg = _error(path)
    assert f"unexpected parameters ['{name}']" in msg


def test_wrong_tensor_shape_is_named(saved, tmp_path):
    path = _copy(saved, tmp_path)

    def widen(tensors, index, shard):
        tensors["model.image_newline"] = torch.zeros(LM.hidden_size + 1)

    _rewrite(path, widen)
    assert "model.image_newline has shape (33,), expected (32,)" in _error(path)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"image_aspect_ratio": "pad"}, "image_aspect_ratio"),
        ({"image_grid_pinpoints": ...}, "image_grid_pinpoints"),
        ({"mm_projector_type": "linear"}, "mm_projector_type must be 'mlp2x_gelu'"),
        ({"mm_patch_merge_type": "flat"}, "mm_patch_merge_type must be 'spatial_unpad'"),
        ({"mm_vision_select_layer": -1}, "mm_vision_select_layer must be -2"),
        ({"mm_vision_tower": ...}, "mm_vision_tower"),
        ({"mm_hidden_size": 99}, "mm_hidden_size 99 differs"),
    ],
)
def test_bad_vision_config_is_refused(saved, tmp_path, changes, expected):
    path = _copy(saved, tmp_path)
    _edit_config(path, **changes)
    assert expected in _error(path)


def test_bad_image_processor_config_is_refused(saved, tmp_path):
    path = _copy(saved, tmp_path)
    pre = json.loads((path / "preprocessor_config.json").read_text())
    pre["image_std"] = [0.5, 0.0, 0.5]
    (path / "preprocessor_config.json").write_text(json.dumps(pre))
    msg = _error(path)
    assert "image_std" in msg


def test_tile_size_must_match_the_tower(saved, tmp_path):
    path = _copy(saved, tmp_path)
    pre = json.loads((path / "preprocessor_config.json").read_text())
    pre["size"] = {"height": 2 * TILE, "width": 2 * TILE}
    (path / "preprocessor_config.json").write_text(json.dumps(pre))
    _edit_config(path, image_grid_pinpoints=[[2 * TILE, 2 * TILE]])
    assert f"tile size {2 * TILE} differs from the vision tower's input size {TILE}" in _error(path)


def test_text_llada_checkpoints_have_no_vision(llada):
    assert llada.vision is None


# -- the LM's rotary numerics ------------------------------------------------------------------------


def test_bfloat16_rotary_follows_the_llama_style_official_code(saved):
    """LLaDA-V's LM is LLaMA-style transformers code: cos/sin built in float32, cast to the
    activations' dtype, and q * cos + rotate_half(q) * sin computed in that dtype. transformers'
    Llama rotary does the same; the rotated queries must be bit-identical in bfloat16."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    model = unmask.load(saved[0], dtype="bfloat16")
    layer = model.module.layers[1]
    positions = torch.arange(300)[None]
    x = torch.randn(1, 300, LM.hidden_size, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    normed = layer.attn_norm(x)
    cos, sin = model.module.rotary.lookup(positions)
    assert cos.dtype == torch.bfloat16
    ours = layer.query(normed, cos, sin)

    llama = LlamaConfig(hidden_size=LM.hidden_size, num_attention_heads=LM.num_heads, max_position_embeddings=512,
                        rope_theta=LM.rope_theta)
    q = layer.q_proj(normed).view(1, 300, LM.num_heads, LM.head_dim).transpose(1, 2)
    ref_cos, ref_sin = LlamaRotaryEmbedding(llama)(q, positions)
    ref, _ = apply_rotary_pos_emb(q, q, ref_cos, ref_sin)
    assert torch.equal(ours, ref)
    # The float32 rotation (LLaDA's) differs in bfloat16, so the test can tell them apart.
    float_path = ((q.float() * ref_cos.float()) + torch.cat([-q[..., 4:], q[..., :4]], -1).float() * ref_sin.float()).to(torch.bfloat16)
    assert not torch.equal(float_path, ref)


def test_text_llada_tables_stay_float32(llada):
    module = llada.module
    assert module.rotary.cos.dtype == torch.float32
    module.rotary.to(torch.bfloat16)
    assert module.rotary.cos.dtype == torch.float32


def test_fingerprint_covers_the_image_settings(saved, tmp_path):
    from unmask.models.checkpoint import fingerprint

    path = _copy(saved, tmp_path)
    before = fingerprint(path)
    pre = json.loads((path / "preprocessor_config.json").read_text())
    pre["image_mean"] = [0.4, 0.5, 0.5]
    (path / "preprocessor_config.json").write_text(json.dumps(pre))
    assert fingerprint(path) != before


def test_checkpoint_without_the_unused_post_layernorm_loads(saved, tmp_path):
    path = _copy(saved, tmp_path)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    prefix = "model.vision_tower.vision_tower.vision_model.post_layernorm."
    for shard in set(index["weight_map"].values()):
        tensors = load_file(str(path / shard))
        save_file({k: v for k, v in tensors.items() if not k.startswith(prefix)}, str(path / shard))
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if not k.startswith(prefix)}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    model = unmask.load(path)
    assert model.vision.tower.post_layernorm is None
    images = [_image(40, 90, 1), _image(20, 20, 2)]
    with torch.no_grad():
        assert torch.equal(_logits(model.module, model.vision, images), _logits(saved[1], saved[2], images))
