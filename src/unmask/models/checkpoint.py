"""Load and save checkpoint directories (config.json + safetensors + tokenizer) in the families' formats."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .model_config import SpecialTokens
from .families import FAMILIES, LLADA_V, Family, checkpoint_name, detect_family
from .model import DiffusionLM, LoadedModel
from .vision_checkpoint import (
    TOWER_FOLDER,
    TOWER_PREFIX,
    check_vision_keys,
    resolve_tower,
    tower_name_for_save,
    vision_checkpoint_name,
)
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from ..vision.encoder import VisionEncoder

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BUNDLED = Path(__file__).resolve().parent.parent / "assets"
NAMED_CHECKPOINTS = ("llada-base", "llada-inst", "llada-1.5", "dream-base", "dream-inst")


def resolve_path(path_or_name: str | Path) -> Path:
    """Map `tiny` to the bundled model; refuse hub names, which unmask never downloads."""
    text = str(path_or_name)
    if text == "tiny":
        path = BUNDLED / "tiny"
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: the bundled model is not installed (config.json missing)")
        return path
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if text in NAMED_CHECKPOINTS:
        raise FileNotFoundError(
            f"model '{text}' needs its weights on disk: download them yourself and pass model.path=/dir/with/config.json"
        )
    raise FileNotFoundError(f"{path}: no such checkpoint directory (expected config.json, safetensors, tokenizer.json)")


def read_config(path: Path) -> tuple[dict, Family]:
    """A checkpoint directory's config.json and the family it describes (no weights read)."""
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{cfg_file}: missing")
    try:
        raw = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{cfg_file}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{cfg_file}: expected a JSON object, found {type(raw).__name__}")
    return raw, detect_family(raw, str(cfg_file))


FINGERPRINT_WINDOWS, FINGERPRINT_WINDOW_BYTES = 16, 1 << 16
# LLaDA-V's image settings and local tower config also decide its outputs.
OPTIONAL_HASHED = ("preprocessor_config.json", "siglip_tower/config.json")


def fingerprint(path: Path) -> str:
    """A short hash of a checkpoint's content, so records made with other weights are never reused.

    config.json and tokenizer.json are hashed whole; each weight file by its size and 16 evenly
    spaced 64 KiB windows (retrained weights differ in every window, and an 8B checkpoint is
    fingerprinted in milliseconds)."""
    import hashlib

    digest = hashlib.sha1()
    for name in ("config.json", "tokenizer.json"):
        file = path / name
        digest.update(name.encode() + (file.read_bytes() if file.exists() else b"<missing>"))
    for name in OPTIONAL_HASHED:  # hashed only when present, so text checkpoints keep their fingerprints
        file = path / name
        if file.exists():
            digest.update(name.encode() + file.read_bytes())
    for file in sorted(set(_weight_files(path).values())):
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        step = max(size - FINGERPRINT_WINDOW_BYTES, 0) / max(FINGERPRINT_WINDOWS - 1, 1)
        with open(file, "rb") as f:
            for i in range(FINGERPRINT_WINDOWS):
                f.seek(int(i * step))
                digest.update(f.read(FINGERPRINT_WINDOW_BYTES))
    return digest.hexdigest()[:16]


def _weight_files(path: Path) -> dict[str, Path]:
    """Map every checkpoint tensor name to the file holding it."""
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"{index}: not a safetensors index ({exc})") from exc
        files = {name: path / shard for name, shard in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.exists():
                raise FileNotFoundError(f"{shard}: shard listed in {index.name} is missing")
        return files
    if single.exists():
        return {name: single for name in _tensor_names(single)}
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")


def _tensor_names(file: Path) -> list[str]:
    try:
        with safe_open(str(file), "pt") as f:
            return list(f.keys())
    except Exception as exc:  # safetensors raises its own error type without the file name
        raise ValueError(f"{file}: not a readable safetensors file ({exc})") from exc


OPTIONAL_ROLES = ("eot", "bos")  # a model may have neither; mask and EOS are required


def _special_tokens(family: Family, cfg: dict, tok: Tokenizer, vocab: int, source: Path) -> SpecialTokens:
    """Config ids first, then the tokenizer's named tokens, then the family table.

    The table holds the ids of the family's own vocabulary: for end of turn and BOS its id is
    only taken when it lies inside this model's vocabulary; otherwise the model has none (stops
    fall back to EOS alone). A missing mask or EOS id is an error."""
    ids: dict[str, int | None] = {}
    for role in ("mask", "eos", "eot", "bos", "pad"):
        key = f"{role}_token_id"
        value = cfg.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{source}: {key} must be an integer token id, found {value!r} ({type(value).__name__})")
        if value is None and role in family.special_names:
            value = tok.token_to_id(family.special_names[role])
        if value is None:
            value = ids.get("eos") if role == "pad" else family.special_defaults.get(role)
            if role in OPTIONAL_ROLES and value is not None and not 0 <= value < vocab:
                value = None
        if value is not None and not 0 <= value < vocab:
            raise ValueError(f"{source}: {role} token id {value} is outside the vocabulary of {vocab}")
        ids[role] = value
    for role in ("mask", "eos"):
        if ids[role] is None:
            raise ValueError(f"{source}: no {role} token id in config.json or the tokenizer")
    return SpecialTokens(**ids)


def _check_vocabulary(raw: dict, rows: int, tokenizer: Tokenizer, path: Path) -> None:
    """The tokenizer's ids must all have embedding rows, and config.json's vocab_size must cover them."""
    n = tokenizer.vocab_size
    if n > rows:
        raise ValueError(
            f"{path / 'tokenizer.json'}: {n} tokens, but the model has {rows} embedding rows ({path / 'config.json'})"
        )
    declared = raw.get("vocab_size")
    if isinstance(declared, int) and declared < n:
        raise ValueError(f"{path / 'config.json'}: vocab_size {declared} is smaller than the tokenizer's {n} tokens")


CHAT_MARKER = re.compile(r"<\|[^|]+\|>")


def _chat_template(raw: dict, family: Family, tokenizer: Tokenizer) -> str | None:
    """The checkpoint's own template, else the family's when the tokenizer has every special
    token it uses (a model with its own vocabulary, e.g. without an end-of-turn token, has none)."""
    if "unmask_chat_template" in raw:
        return raw["unmask_chat_template"]
    markers = set(CHAT_MARKER.findall(family.chat_template))
    return family.chat_template if all(tokenizer.token_to_id(m) is not None for m in markers) else None


def _checked_tensor(tensor: torch.Tensor, name: str, file: Path, dtype: torch.dtype, device: str) -> torch.Tensor:
    """The tensor in the load dtype, refusing integer weights and values that are not finite."""
    if not tensor.dtype.is_floating_point:
        raise ValueError(f"{file}: tensor {name} has dtype {str(tensor.dtype).removeprefix('torch.')}; weights must be floating point")
    out = tensor.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(out).all()):
        if bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{file}: tensor {name} overflows {str(dtype).removeprefix('torch.')}; load it in float32 or bfloat16")
        raise ValueError(f"{file}: tensor {name} holds NaN or infinite values")
    return out


ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def load(
    path_or_name: str | Path,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """Load a LLaDA-, Dream- or LLaDA-V-format checkpoint directory (or `tiny`, the bundled model).

    A LLaDA-V checkpoint also gets its vision encoder (`LoadedModel.vision`), built with no hub
    access; `LoadedModel.extra["vision_tower"]` says where the tower's shape came from.

    `attn_implementation` is "sdpa" (fused) or "eager" (explicit softmax, as transformers names it).
    """
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation={attn_implementation!r} is not one of {list(ATTN_IMPLEMENTATIONS)}")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype '{dtype}' is not one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    path = resolve_path(path_or_name)
    cfg_file = path / "config.json"
    raw, family = read_config(path)
    cfg, tie = family.parse_config(raw, str(cfg_file))
    cfg.validate(str(cfg_file))
    tokenizer = Tokenizer.from_dir(path)
    _check_vocabulary(raw, cfg.vocab_size, tokenizer, path)
    extra: dict = {}
    id_source = raw
    if family.name == "llada-v":
        id_source, extra["ignored_config_ids"] = _drop_foreign_ids(raw, cfg.vocab_size)
    special = _special_tokens(family, id_source, tokenizer, cfg.vocab_size, cfg_file)

    with torch.device("meta"):
        module = DiffusionLM(cfg, tie_embeddings=tie)
    files = _weight_files(path)
    wanted = {checkpoint_name(family, name): f"lm.{name}" for name, _ in module.named_parameters()}
    expected = {f"lm.{name}": p for name, p in module.named_parameters()}
    vision = None
    if family.name == "llada-v":
        vision, origin = _build_vision(raw, path, files, cfg.hidden_size)
        extra["vision_tower"] = origin
        for name, p in vision.named_parameters():
            wanted[vision_checkpoint_name(name)] = f"vision.{name}"
            expected[f"vision.{name}"] = p
    _check_names(path, wanted, files)
    state = _read_tensors(files, wanted, expected, dtype, device)
    lm_state = {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")}
    if tie:
        lm_state["lm_head.weight"] = lm_state["embed.weight"]
    module.load_state_dict(lm_state, strict=True, assign=True)
    if tie:
        module.lm_head.weight = module.embed.weight
    module.rotary = type(module.rotary)(
        cfg.head_dim, cfg.rope_theta, cfg.max_position, in_model_dtype=module.rotary.in_model_dtype
    ).to(device=device, dtype=dtype)
    module.eval().requires_grad_(False)
    for layer in module.layers:
        layer.attn_implementation = attn_implementation
    if vision is not None:
        vision.load_state_dict({k.removeprefix("vision."): v for k, v in state.items() if k.startswith("vision.")},
                               strict=True, assign=True)
        vision.eval().requires_grad_(False)
    return LoadedModel(
        module=module,
        special=special,
        tokenizer=tokenizer,
        path=str(path),
        name=str(path_or_name),
        chat_template=_chat_template(raw, family, tokenizer),
        extra=extra,
        vision=vision,
    )


def _drop_foreign_ids(raw: dict, vocab: int) -> tuple[dict, dict]:
    """LLaDA-V's config.json carries LLaMA-3's bos_token_id (128000), outside LLaDA's vocabulary and
    unused by the official code; optional role ids outside the vocabulary are set aside (and
    reported in `LoadedModel.extra`) so that the tokenizer's own token decides."""
    dropped = {}
    for role in OPTIONAL_ROLES:
        key = f"{role}_token_id"
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value < vocab:
            dropped[key] = value
    return {k: v for k, v in raw.items() if k not in dropped}, dropped


def _check_names(path: Path, wanted: dict[str, str], files: dict[str, Path]) -> None:
    """Every expected tensor present and nothing else, naming the first few either way."""
    missing = sorted(set(wanted) - set(files))
    extra = sorted(set(files) - set(wanted))
    if missing or extra:
        where = path / ("model.safetensors.index.json" if (path / "model.safetensors.index.json").exists() else "model.safetensors")
        parts = []
        if missing:
            parts.append(f"missing parameters {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected parameters {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        raise ValueError(f"{where}: {'; '.join(parts)}")


def _read_tensors(
    files: dict[str, Path], wanted: dict[str, str], expected: dict[str, torch.nn.Parameter], dtype: torch.dtype, device: str
) -> dict[str, torch.Tensor]:
    """Read every wanted tensor (checkpoint name -> internal name), checking shape, dtype and values."""
    state = {}
    by_file: dict[Path, list[str]] = {}
    for ckpt_name, file in files.items():
        by_file.setdefault(file, []).append(ckpt_name)
    for file, names in by_file.items():
        present = set(_tensor_names(file))
        absent = [n for n in names if n not in present]
        if absent:
            raise ValueError(f"{file}: does not contain {absent[:5]}, which the safetensors index assigns to it")
        with safe_open(str(file), "pt", device="cpu") as f:
            for ckpt_name in names:
                internal = wanted[ckpt_name]
                tensor = f.get_tensor(ckpt_name)
                want = tuple(expected[internal].shape)
                if tuple(tensor.shape) != want:
                    raise ValueError(f"{file}: tensor {ckpt_name} has shape {tuple(tensor.shape)}, expected {want}")
                state[internal] = _checked_tensor(tensor, ckpt_name, file, dtype, device)
    return state


def _tensor_shapes(files: dict[str, Path], names: list[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of the named tensors, read from the safetensors headers (no data loaded)."""
    shapes: dict[str, tuple[int, ...]] = {}
    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(files[name], []).append(name)
    for file, group in by_file.items():
        with safe_open(str(file), "pt", device="cpu") as f:
            present = set(f.keys())
            for name in group:
                if name in present:
                    shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def _build_vision(raw: dict, path: Path, files: dict[str, Path], lm_hidden: int) -> tuple["VisionEncoder", dict]:
    """A meta-device VisionEncoder shaped from the checkpoint, and where its tower shape came from."""
    from ..vision.encoder import VisionEncoder
    from ..vision.processor import ImageProcessorConfig

    check_vision_keys(raw, str(path / "config.json"))
    shapes = _tensor_shapes(files, [n for n in files if n.startswith(TOWER_PREFIX)])
    processor = ImageProcessorConfig.from_checkpoint(path)
    tower_cfg, origin = resolve_tower(raw, path, shapes, processor.tile_size)
    # The unused post-layernorm may be absent from a checkpoint (both tensors, or the layout is wrong).
    post_norm = any(n.startswith(TOWER_PREFIX + "post_layernorm.") for n in files)
    with torch.device("meta"):
        vision = VisionEncoder(tower_cfg, lm_hidden, processor, post_layernorm=post_norm)
    return vision, origin


def save_llada_checkpoint(module: DiffusionLM, out_dir: str | Path, config: dict) -> None:
    """Write a module as a LLaDA-format checkpoint (config.json with OLMo keys + model.safetensors)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    family = next(f for f in FAMILIES if f.name == "llada")
    tensors = {
        checkpoint_name(family, name): p.detach().to("cpu").contiguous()
        for name, p in module.named_parameters()
    }
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


SHARD_BYTES = 2 * 2**30


def save_llada_v_checkpoint(
    module: DiffusionLM, vision: "VisionEncoder", out_dir: str | Path, config: dict, max_shard_bytes: int = SHARD_BYTES
) -> None:
    """Write an LM + `VisionEncoder` in GSAI-ML/LLaDA-V's hub layout: sharded safetensors with an
    index, config.json (the given keys, with every shape and LLaVA key set from the modules),
    preprocessor_config.json from `vision.processor`, and a local tower folder when the tower is
    not the known SigLIP shape (so that `unmask.load` can read its head count). Tokenizer files
    are the caller's to add."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {checkpoint_name(LLADA_V, name): p for name, p in module.named_parameters()}
    tensors.update({vision_checkpoint_name(name): p for name, p in vision.named_parameters()})
    _write_shards({k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}, out, max_shard_bytes)

    mc, tower = module.cfg, vision.tower.cfg
    cfg = dict(config)
    cfg.update(
        architectures=["LlavaLLaDAModelLM"],
        model_type="llava_llada",
        hidden_size=mc.hidden_size,
        num_hidden_layers=mc.num_layers,
        num_attention_heads=mc.num_heads,
        num_key_value_heads=mc.num_kv_heads,
        intermediate_size=mc.intermediate_size,
        vocab_size=mc.vocab_size,
        rope_theta=mc.rope_theta,
        rms_norm_eps=mc.rms_norm_eps,
        max_position_embeddings=mc.max_position,
        tie_word_embeddings=module.lm_head.weight is module.embed.weight,
        attention_bias=False,
        hidden_act="silu",
        mm_hidden_size=tower.hidden_size,
        mm_projector_type="mlp2x_gelu",
        mm_patch_merge_type="spatial_unpad",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        use_mm_proj=True,
        torch_dtype=str(module.embed.weight.dtype).removeprefix("torch."),
    )
    hub_name = tower_name_for_save(cfg, tower)
    if hub_name is None:
        folder = out / TOWER_FOLDER
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text(json.dumps(tower.to_hub_dict(), indent=2) + "\n")
        cfg["mm_vision_tower"] = TOWER_FOLDER
    else:
        cfg["mm_vision_tower"] = hub_name
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    vision.processor.to_checkpoint(out)


def _write_shards(tensors: dict[str, torch.Tensor], out: Path, max_shard_bytes: int) -> None:
    """`model-0000k-of-0000n.safetensors` files of at most `max_shard_bytes` each (a larger tensor
    gets its own), plus `model.safetensors.index.json`, as the hub's sharded checkpoints."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / file), metadata={"format": "pt"})
        weight_map.update({name: file for name in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
