"""The LLaDA-V vision side against transformers: SigLIP tower, LLaVA-OneVision packing, the whole
encoder, and prompt splicing at the -200 placeholders."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import LlavaOnevisionConfig, LlavaOnevisionModel, SiglipVisionConfig, SiglipVisionModel
from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel as HFModel

from unmask.vision.encoder import VisionEncoder
from unmask.vision.packing import pack_image_features, unpad_features
from unmask.vision.processor import ImageProcessorConfig, ProcessedImage, process_image
from unmask.vision.prompt import IMAGE_PLACEHOLDER, splice_images
from unmask.vision.tower import SiglipConfig, SiglipVisionTower

TILE, PATCH = 30, 7  # 4 x 4 patches; the convolution drops the last 2 pixels, as 384 / 14 does
LM_HIDDEN = 16
TOWER = SiglipConfig(hidden_size=24, intermediate_size=40, num_layers=2, num_heads=3, image_size=TILE, patch_size=PATCH)
PINPOINTS = tuple((TILE * r, TILE * c) for r in (1, 2, 3, 4) for c in (1, 2, 3, 4))
# (height, width) of test images: wide, tall, square, tiny, slivers and large ones that must be shrunk.
SIZES = [(40, 90), (90, 40), (60, 60), (10, 12), (17, 113), (113, 17), (100, 120), (119, 61), (33, 95)]


def _processor(max_tiles: int | None) -> ImageProcessorConfig:
    return ImageProcessorConfig(tile_size=TILE, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
                                grid_pinpoints=PINPOINTS, max_tiles=max_tiles)


def _hf_siglip_config(layers: int) -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=TOWER.hidden_size, intermediate_size=TOWER.intermediate_size, num_hidden_layers=layers,
        num_attention_heads=TOWER.num_heads, image_size=TILE, patch_size=PATCH, layer_norm_eps=1e-6,
        hidden_act="gelu_pytorch_tanh",
    )


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _image(h: int, w: int, seed: int):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy())


def _tower_from_hf(hf: SiglipVisionModel) -> SiglipVisionTower:
    """Our tower with the HF model's weights; its extra last layer (which LLaDA-V drops) is left out."""
    tower = SiglipVisionTower(TOWER)
    state = {k.removeprefix("vision_model."): v for k, v in hf.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.startswith(("head.", f"encoder.layers.{TOWER.num_layers}."))}
    tower.load_state_dict(state, strict=True)
    return tower.eval()


# -- tower ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_tower_equals_transformers_second_to_last_layer(attn):
    config = _hf_siglip_config(TOWER.num_layers + 1)
    config._attn_implementation = attn
    hf = SiglipVisionModel(config)
    assert hf.config._attn_implementation == attn
    _randomize(hf, 0)
    hf.eval()
    tower = _tower_from_hf(hf)
    pixels = torch.randn(5, 3, TILE, TILE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(pixel_values=pixels, output_hidden_states=True)
        ours = tower(pixels)
    assert ours.shape == (5, TOWER.num_patches, TOWER.hidden_size) and TOWER.num_patches == 16
    torch.testing.assert_close(ours, ref.hidden_states[-2], atol=1e-4, rtol=1e-4)
    # Not the last layer, and no post-layernorm: both would change the features.
    assert (ours - ref.hidden_states[-1]).abs().max() > 1e-2
    assert (ours - ref.last_hidden_state).abs().max() > 1e-2


def test_tower_bfloat16_is_bit_equal_to_transformers_eager():
    """The official tower is eager attention (float32 softmax) in the model dtype, as transformers'
    eager SigLIP; in bfloat16 the features must round identically."""
    config = _hf_siglip_config(TOWER.num_layers + 1)
    config._attn_implementation = "eager"
    hf = SiglipVisionModel(config)
    _randomize(hf, 5)
    hf = hf.eval().to(torch.bfloat16)
    tower = _tower_from_hf(hf).to(torch.bfloat16)
    pixels = torch.randn(3, 3, TILE, TILE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(pixel_values=pixels.to(torch.bfloat16), output_hidden_states=True).hidden_states[-2]
        ours = tower(pixels)
    assert ours.dtype == torch.bfloat16
    assert torch.equal(ours, ref)


def test_tower_rejects_wrong_tile_size():
    with pytest.raises(ValueError, match=r"\[n, 3, 30, 30\]"):
        SiglipVisionTower(TOWER)(torch.zeros(1, 3, 28, 28))


# -- packing ----------------------------------------------------------------------------------------


def _hf_pack(features: torch.Tensor, image: ProcessedImage, newline: torch.Tensor, max_tiles: int) -> torch.Tensor:
    """transformers' LLaVA-OneVision packing, run on the same per-tile features."""
    fake = SimpleNamespace(config=SimpleNamespace(
        vision_config=SimpleNamespace(image_size=TILE, patch_size=PATCH),
        image_grid_pinpoints=[list(p) for p in PINPOINTS],
    ))
    packed, lens = HFModel.pack_image_features(
        fake, [features], torch.tensor([image.image_size]), image_newline=newline, vision_aspect_ratio=f"anyres_max_{max_tiles}"
    )
    assert lens.tolist() == [packed[0].shape[0]]
    return packed[0]


@pytest.mark.parametrize("max_tiles", [1, 2, 4, 9])
@pytest.mark.parametrize("size", SIZES)
def test_packing_equals_transformers(size, max_tiles):
    cfg = _processor(max_tiles)
    image = process_image(_image(*size, seed=sum(size)), cfg)
    g = torch.Generator().manual_seed(7)
    features = torch.randn(image.pixel_values.shape[0], TOWER.num_patches, LM_HIDDEN, generator=g)
    newline = torch.randn(LM_HIDDEN, generator=g)
    ours = pack_image_features(features, image, newline, cfg)
    assert torch.equal(ours, _hf_pack(features, image, newline, max_tiles))
    assert torch.equal(ours[: TOWER.num_patches], features[0])  # base tile first, without newline


def test_packing_shrinks_large_maps_and_ends_rows_with_newline():
    cfg = _processor(1)
    image = process_image(_image(119, 119, 3), cfg)
    assert image.grid == (4, 4)
    features = torch.randn(image.pixel_values.shape[0], TOWER.num_patches, LM_HIDDEN)
    newline = torch.full((LM_HIDDEN,), 7.0)
    out = pack_image_features(features, image, newline, cfg)
    # 16 x 16 map, budget 1 tile of 4 x 4: shrunk by 4 to 4 x 4, plus a newline per row.
    grid_part = out[TOWER.num_patches:]
    assert grid_part.shape[0] == 4 * 5
    assert torch.equal(grid_part.view(4, 5, LM_HIDDEN)[:, -1], newline.expand(4, -1))


def test_plain_anyres_never_shrinks():
    image = process_image(_image(119, 119, 3), _processor(None))
    features = torch.randn(image.pixel_values.shape[0], TOWER.num_patches, LM_HIDDEN)
    out = pack_image_features(features, image, torch.zeros(LM_HIDDEN), _processor(None))
    assert out.shape[0] == TOWER.num_patches + 16 * 17


def test_unpad_truncates_like_the_official_code():
    """Official LLaDA-V unpads with int(original_side * scale); transformers rounds to 7 decimals
    first. A 147 x 196 image on one 4 x 4 tile: 147 * (4 / 196) = 2.9999999999999996, so the
    official code keeps 2 rows (padding 1 each side) where transformers keeps all 4."""
    image = ProcessedImage(pixel_values=torch.zeros(2, 3, TILE, TILE), image_size=(147, 196), grid=(1, 1))
    features = torch.randn(2, TOWER.num_patches, LM_HIDDEN)
    newline = torch.zeros(LM_HIDDEN)
    ours = pack_image_features(features, image, newline, _processor(4))
    grid_rows = ours[TOWER.num_patches:].view(2, 5, LM_HIDDEN)
    assert torch.equal(grid_rows[:, :4], features[1].view(4, 4, LM_HIDDEN)[1:3])
    fmap = torch.zeros(3, 10, 30)
    assert unpad_features(fmap, (29, 100)).shape == (3, 8, 30)  # 29 * 0.3 = 8.7 -> 8 rows, padding 1
    assert unpad_features(fmap, (10, 23)).shape == (3, 10, 24)  # 23 columns -> padding 3 each side of 30


def test_packing_rejects_tile_count_that_does_not_fit_the_grid():
    image = process_image(_image(40, 90, 0), _processor(4))
    features = torch.randn(image.pixel_values.shape[0] - 1, TOWER.num_patches, LM_HIDDEN)
    with pytest.raises(ValueError, match="tiles"):
        pack_image_features(features, image, torch.zeros(LM_HIDDEN), _processor(4))


# -- the whole encoder against transformers' LLaVA-OneVision ------------------------------------------


def test_encoder_equals_transformers_llava_onevision():
    max_tiles = 4
    cfg = LlavaOnevisionConfig(
        vision_config=_hf_siglip_config(TOWER.num_layers + 1).to_dict(),
        text_config={"model_type": "qwen2", "hidden_size": LM_HIDDEN, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 64},
        image_grid_pinpoints=[list(p) for p in PINPOINTS],
        vision_feature_layer=-2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=f"anyres_max_{max_tiles}",
        projector_hidden_act="gelu",
        image_token_index=63,
    )
    hf = LlavaOnevisionModel(cfg)
    _randomize(hf, 3)
    hf.eval()
    encoder = VisionEncoder(TOWER, LM_HIDDEN, _processor(max_tiles))
    encoder.tower = _tower_from_hf(hf.vision_tower)
    proj = hf.multi_modal_projector
    encoder.projector.load_state_dict({"0.weight": proj.linear_1.weight, "0.bias": proj.linear_1.bias,
                                       "2.weight": proj.linear_2.weight, "2.bias": proj.linear_2.bias})
    with torch.no_grad():
        encoder.image_newline.copy_(hf.image_newline)
    images = [process_image(_image(h, w, i), encoder.processor) for i, (h, w) in enumerate(SIZES[:4])]
    with torch.no_grad():
        ours = encoder.encode(images)
        ref = hf.get_image_features(
            pixel_values=torch.cat([im.pixel_values for im in images]),
            image_sizes=torch.tensor([im.image_size for im in images]),
            vision_feature_layer=-2, vision_feature_select_strategy="full", vision_aspect_ratio=f"anyres_max_{max_tiles}",
        ).pooler_output
    assert len(ours) == len(ref) == 4
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_encode_casts_to_the_model_dtype():
    encoder = VisionEncoder(TOWER, LM_HIDDEN, _processor(4)).to(torch.bfloat16)
    out = encoder.encode([process_image(_image(40, 90, 0), encoder.processor)])
    assert out[0].dtype == torch.bfloat16
    assert encoder.encode([]) == []


def test_encoder_refuses_a_processor_for_another_tile_size():
    other = ImageProcessorConfig(tile_size=2 * TILE, image_mean=(0.5,) * 3, image_std=(0.5,) * 3,
                                 grid_pinpoints=((2 * TILE, 2 * TILE),), max_tiles=4)
    with pytest.raises(ValueError, match="tile size 60 differs"):
        VisionEncoder(TOWER, LM_HIDDEN, other)


# -- splicing ---------------------------------------------------------------------------------------


def test_splice_images_places_features_at_placeholders():
    embed = torch.nn.Embedding(20, LM_HIDDEN)
    a, b = torch.randn(3, LM_HIDDEN), torch.randn(2, LM_HIDDEN)
    ids = [1, IMAGE_PLACEHOLDER, 5, 6, IMAGE_PLACEHOLDER]
    out = splice_images(ids, [a, b], embed, fill_id=0)
    assert out.ids == [1, 0, 0, 0, 5, 6, 0, 0]
    assert out.from_image.tolist() == [False, True, True, True, False, False, True, True]
    assert torch.equal(out.embeds[1:4], a) and torch.equal(out.embeds[6:], b)
    assert torch.equal(out.embeds[[0, 4, 5]], embed(torch.tensor([1, 5, 6])))


def test_splice_without_images_is_the_plain_embedding():
    embed = torch.nn.Embedding(20, LM_HIDDEN)
    out = splice_images([3, 4], [], embed, fill_id=0)
    assert out.ids == [3, 4] and not out.from_image.any()
    assert torch.equal(out.embeds, embed(torch.tensor([3, 4])))


@pytest.mark.parametrize("n_placeholders, n_images", [(1, 2), (2, 1), (0, 1)])
def test_splice_refuses_placeholder_count_mismatch(n_placeholders, n_images):
    embed = torch.nn.Embedding(20, LM_HIDDEN)
    ids = [1] + [IMAGE_PLACEHOLDER] * n_placeholders + [2]
    with pytest.raises(ValueError, match=f"{n_placeholders} image placeholder.*but {n_images} image"):
        splice_images(ids, [torch.zeros(2, LM_HIDDEN)] * n_images, embed, fill_id=0)


def test_splice_refuses_out_of_vocabulary_ids():
    with pytest.raises(ValueError, match="token id -5"):
        splice_images([1, -5], [], torch.nn.Embedding(20, LM_HIDDEN), fill_id=0)


# -- the LM with inputs_embeds -------------------------------------------------------------------------


def test_forward_with_inputs_embeds_equals_forward_with_ids(llada):
    module = llada.module
    ids = torch.tensor([[5, 6, 7, 8, 2, 2]])
    with torch.no_grad():
        plain = module(ids)
        embedded = module(None, inputs_embeds=module.embed(ids))
        with_placeholders = module(torch.tensor([[5, -200, 7, 8, 2, 2]]), inputs_embeds=module.embed(ids))
    assert torch.equal(plain, embedded) and torch.equal(plain, with_placeholders)
    with pytest.raises(ValueError, match="disagree"):
        module(ids[:, :3], inputs_embeds=module.embed(ids))
    with pytest.raises(ValueError, match="input_ids or inputs_embeds"):
        module(None)
