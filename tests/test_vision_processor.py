"""Image loading limits and the anyres preprocessing against transformers' LLaVA-OneVision processor.

The reference is `LlavaOnevisionImageProcessorPil` (transformers' Pillow/numpy implementation of
the same LLaVA-OneVision anyres steps that LLaDA-V's official code runs: best pinpoint, aspect-kept
resize, centred black padding, row-major tiles, base image in front, rescale + normalize). It runs
without torchvision. Pixel values must be bit-identical.
"""

import io
import json
import struct
import zlib

import pytest
import torch
from PIL import Image

from unmask.vision.images import ImageError, load_image
from unmask.vision.processor import (
    ImageConfigError,
    ImageProcessorConfig,
    ProcessedImage,
    parse_grid_pinpoints,
    process_image,
)

LlavaOnevisionImageProcessorPil = pytest.importorskip(
    "transformers.models.llava_onevision.image_processing_pil_llava_onevision"
).LlavaOnevisionImageProcessorPil

MEAN, STD = (0.48, 0.45, 0.41), (0.27, 0.26, 0.28)


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8).numpy())


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but whose pixel data is a few bytes of nothing."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 4))


def reference(image: Image.Image, tile: int, pinpoints_hw, mean=MEAN, std=STD) -> torch.Tensor:
    proc = LlavaOnevisionImageProcessorPil(
        size={"height": tile, "width": tile}, image_mean=list(mean), image_std=list(std),
        image_grid_pinpoints=[list(p) for p in pinpoints_hw],
    )
    return proc(image, return_tensors="pt")["pixel_values"][0]


def make_config(tile: int, pinpoints_hw, max_tiles=4) -> ImageProcessorConfig:
    return ImageProcessorConfig(tile_size=tile, image_mean=MEAN, image_std=STD, grid_pinpoints=tuple(pinpoints_hw), max_tiles=max_tiles)


# --- preprocessing equals the reference -------------------------------------------------------

GRID_3X3_16 = [(16 * h, 16 * w) for h in range(1, 4) for w in range(1, 4)]
UNEVEN_14 = [(14, 28), (28, 14), (28, 28), (14, 56), (42, 28)]


@pytest.mark.parametrize("tile,pinpoints", [(16, GRID_3X3_16), (14, UNEVEN_14)])
@pytest.mark.parametrize("height,width", [(16, 16), (10, 37), (37, 10), (50, 20), (7, 7), (100, 33), (33, 100), (48, 48), (3, 40), (29, 30)])
def test_pixel_values_equal_llava_onevision_processor(tile, pinpoints, height, width):
    image = random_image(height, width, seed=height * 1000 + width)
    out = process_image(image, make_config(tile, pinpoints))
    expected = reference(image, tile, pinpoints)
    assert out.pixel_values.dtype == torch.float32
    assert out.pixel_values.shape == expected.shape
    assert torch.equal(out.pixel_values, expected)
    rows, cols = out.grid
    assert out.pixel_values.shape[0] == 1 + rows * cols
    assert (rows * tile, cols * tile) in pinpoints
    assert out.image_size == (height, width)


def test_tie_between_canvases_goes_to_the_earlier_pinpoint():
    # A square image fits 16x48 and 48x16 equally well: the order in the config decides, as in the reference.
    image = random_image(40, 40, seed=3)
    for pinpoints in ([(16, 48), (48, 16)], [(48, 16), (16, 48)]):
        out = process_image(image, make_config(16, pinpoints))
        assert out.grid == (pinpoints[0][0] // 16, pinpoints[0][1] // 16)
        assert torch.equal(out.pixel_values, reference(image, 16, pinpoints))


def test_base_tile_is_the_whole_image_squashed_and_padding_is_black():
    image = Image.new("RGB", (40, 10), (255, 255, 255))  # wide: the 16x48 canvas is padded above and below
    cfg = ImageProcessorConfig(tile_size=16, image_mean=(0.5,) * 3, image_std=(0.5,) * 3, grid_pinpoints=((16, 48),), max_tiles=None)
    out = process_image(image, cfg)
    assert out.grid == (1, 3)
    assert torch.all(out.pixel_values[0] == 1.0)  # white everywhere: resized without padding
    tiles = out.pixel_values[1:]
    assert torch.all(tiles[:, :, 0, :] == -1.0) and torch.all(tiles[:, :, -1, :] == -1.0)  # black rows = (0 - .5) / .5
    assert torch.all(tiles[:, :, 8, 1:-1] == 1.0)


def test_non_rgb_images_are_converted_first():
    rgba = Image.new("RGBA", (20, 30), (10, 200, 30, 0))
    cfg = make_config(16, GRID_3X3_16)
    assert torch.equal(process_image(rgba, cfg).pixel_values, process_image(rgba.convert("RGB"), cfg).pixel_values)


def test_process_image_errors():
    cfg = make_config(16, GRID_3X3_16)
    with pytest.raises(ImageError, match="PIL image"):
        process_image(b"not an image", cfg)
    with pytest.raises(ImageError, match="zero size"):
        process_image(Image.new("RGB", (0, 4)), cfg)


def test_sliver_that_no_canvas_can_hold_gets_the_smallest_canvas():
    image = random_image(500, 1, seed=5)  # every canvas keeps 0 of its pixels after the fitting downscale
    out = process_image(image, make_config(16, GRID_3X3_16))
    assert isinstance(out, ProcessedImage) and out.grid == (1, 1)
    assert torch.equal(out.pixel_values, reference(image, 16, GRID_3X3_16))


# --- config files ----------------------------------------------------------------------------

def write_checkpoint(tmp_path, config: dict, pre: dict | None = None):
    (tmp_path / "config.json").write_text(json.dumps(config))
    if pre is not None:
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(pre))
    return tmp_path


def test_range_string_is_width_major_in_official_order():
    # "(1x1),...,(2x3)": i in 1..2 (width in tiles) outer, j in 1..3 (height in tiles) inner.
    got = parse_grid_pinpoints("(1x1),...,(2x3)", 10, "k")
    assert got == ((10, 10), (20, 10), (30, 10), (10, 20), (20, 20), (30, 20))


def test_from_checkpoint_llada_v_style(tmp_path):
    write_checkpoint(tmp_path, {"image_aspect_ratio": "anyres_max_4", "image_grid_pinpoints": "(1x1),...,(6x6)", "hidden_size": 8})
    cfg = ImageProcessorConfig.from_checkpoint(tmp_path)  # no preprocessor_config.json: the official SigLIP defaults
    assert (cfg.tile_size, cfg.image_mean, cfg.image_std, cfg.max_tiles) == (384, (0.5,) * 3, (0.5,) * 3, 4)
    assert len(cfg.grid_pinpoints) == 36 and cfg.grid_pinpoints[:2] == ((384, 384), (768, 384))
    assert cfg.grid_pinpoints[-1] == (2304, 2304)


def test_from_checkpoint_reads_preprocessor_and_list_pinpoints(tmp_path):
    write_checkpoint(
        tmp_path,
        {"image_aspect_ratio": "anyres", "image_grid_pinpoints": [[16, 32], [32, 16]]},  # [width, height]
        {"size": {"shortest_edge": 16}, "crop_size": {"height": 16, "width": 16}, "image_mean": [0.1, 0.2, 0.3],
         "image_std": 0.5, "rescale_factor": 0.004, "resample": 2},
    )
    cfg = ImageProcessorConfig.from_checkpoint(tmp_path)
    assert cfg == ImageProcessorConfig(16, (0.1, 0.2, 0.3), (0.5,) * 3, ((32, 16), (16, 32)), None, 0.004, 2)


def test_to_checkpoint_round_trips_and_keeps_other_keys(tmp_path):
    write_checkpoint(tmp_path, {"hidden_size": 8, "image_aspect_ratio": "pad"})
    cfg = make_config(14, UNEVEN_14, max_tiles=9)
    cfg.to_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["hidden_size"] == 8 and config["image_aspect_ratio"] == "anyres_max_9"
    assert config["image_grid_pinpoints"][0] == [28, 14]  # written [width, height], the official convention
    assert ImageProcessorConfig.from_checkpoint(tmp_path) == cfg


@pytest.mark.parametrize(
    "config,pre,match",
    [
        ({"image_grid_pinpoints": [[16, 16]]}, None, "missing key image_aspect_ratio"),
        ({"image_aspect_ratio": "pad", "image_grid_pinpoints": [[16, 16]]}, None, "image_aspect_ratio='pad' is not supported"),
        ({"image_aspect_ratio": "anyres_max_0", "image_grid_pinpoints": [[16, 16]]}, None, "N must be positive"),
        ({"image_aspect_ratio": "anyres_max_4"}, None, "missing key image_grid_pinpoints"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": [[16, 20]]}, {"size": 16}, "not a positive multiple of the tile size 16"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": [[16]]}, {"size": 16}, r"not a \[width, height\] pair"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": []}, {"size": 16}, "non-empty list"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": "(3x3),...,(1x1)"}, {"size": 16}, "range is empty"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": "(axb)"}, {"size": 16}, "expected a range"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": [[16, 16]]}, {"size": {"height": 16, "width": 32}}, "must be square"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": [[16, 16]]}, {"size": 16, "crop_size": 32}, "size and crop_size disagree"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": [[16, 16]]}, {"size": 16, "image_mean": [0.5, 0.5]}, "image_mean must be three"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": [[16, 16]]}, {"size": 16, "image_std": [0.5, 0, 0.5]}, "must not contain 0"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": [[16, 16]]}, {"size": 16, "do_normalize": False}, "do_normalize=false"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": [[16, 16]]}, {"size": 16, "resample": 9}, "resample must be"),
        ({"image_aspect_ratio": "anyres", "image_grid_pinpoints": [[16, 16]]}, {"size": 16, "rescale_factor": -1}, "rescale_factor"),
    ],
)
def test_bad_config_values_are_named(tmp_path, config, pre, match):
    write_checkpoint(tmp_path, config, pre)
    with pytest.raises(ImageConfigError, match=match):
        ImageProcessorConfig.from_checkpoint(tmp_path)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ImageConfigError, match="config.json not found"):
        ImageProcessorConfig.from_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ImageConfigError, match="not readable JSON"):
        ImageProcessorConfig.from_checkpoint(tmp_path)


# --- load_image ------------------------------------------------------------------------------

def test_load_image_from_path_bytes_and_pil(tmp_path):
    image = random_image(12, 9)
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(image))
    for source in (path, str(path), png_bytes(image), bytearray(png_bytes(image)), image):
        loaded = load_image(source)
        assert loaded.mode == "RGB" and loaded.size == (9, 12)
        assert loaded.tobytes() == image.tobytes()
    rgba = Image.new("RGBA", (3, 2), (9, 8, 7, 0))
    assert load_image(png_bytes(rgba)).getpixel((0, 0)) == (9, 8, 7)  # alpha dropped, not composited


def test_load_image_errors(tmp_path):
    good = png_bytes(random_image(20, 20))
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(b"definitely not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(good[: len(good) // 2])  # truncated: header fine, pixels missing
    with pytest.raises(ImageError, match="too large: .* bytes"):
        load_image(good, max_bytes=100)
    with pytest.raises(ImageError, match="too large: 20x20 = 400 pixels"):
        load_image(good, max_pixels=399)
    with pytest.raises(ImageError, match="zero size"):
        load_image(Image.new("RGB", (0, 5)))
    with pytest.raises(ImageError, match="PIL image is not readable"):  # lazily opened, pixels missing
        load_image(Image.open(io.BytesIO(good[: len(good) // 2])))
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "big.png").write_bytes(good)
    with pytest.raises(ImageError, match="big.png.*too large"):
        load_image(tmp_path / "big.png", max_bytes=10)
    with pytest.raises(ImageError, match="not int"):
        load_image(42)


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # The header declares 8000x8000 but carries no pixel data: decoding would fail as unreadable,
    # so a "too large" error proves the size was judged from the header alone.
    with pytest.raises(ImageError, match="too large: 8000x8000 = 64000000 pixels"):
        load_image(png_header_only(8000, 8000))
    with pytest.raises(ImageError, match="too large"):  # past Pillow's own bomb limit too
        load_image(png_header_only(30000, 30000), max_pixels=10**10)
    with pytest.raises(ImageError, match="not a readable image"):  # within the limit: decoding is tried and fails
        load_image(png_header_only(10, 10))


# --- against the official LLaDA-V code at the real checkpoint's settings ---------------------

def pattern(width: int, height: int) -> Image.Image:
    """A deterministic test picture: every channel a different function of (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    channels = [(xs * 7 + ys * 13) % 256, (xs * 3 + ys * 5 + 50) % 256, (xs * ys) % 256]
    return Image.fromarray(torch.stack(channels, -1).to(torch.uint8).numpy())


def test_pixels_equal_recorded_official_llada_v_preprocessing(tmp_path):
    """data/llada_v_official_pixels.json: sha256 of the pixel tensors that LLaDA-V's own
    process_images produced (anyres_max_4, "(1x1),...,(6x6)", 384-pixel SigLIP tiles)."""
    import hashlib
    from pathlib import Path

    recorded = json.loads((Path(__file__).parent / "data" / "llada_v_official_pixels.json").read_text())["images"]
    write_checkpoint(tmp_path, {"image_aspect_ratio": "anyres_max_4", "image_grid_pinpoints": "(1x1),...,(6x6)"})
    cfg = ImageProcessorConfig.from_checkpoint(tmp_path)
    for size, expected in recorded.items():
        width, height = map(int, size.split("x"))
        pixels = process_image(pattern(width, height), cfg).pixel_values.contiguous()
        assert list(pixels.shape) == expected["shape"], size
        assert hashlib.sha256(pixels.numpy().tobytes()).hexdigest() == expected["sha256"], size
