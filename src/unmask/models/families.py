"""Per-family knowledge: config keys, parameter names, special-token defaults, chat templates.

Adding a family means adding one `Family` entry here; the module and the loader
stay the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .model_config import ModelConfig

LLADA_CHAT = (
    "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
# LLaDA-V's conversation template ("llava_llada"): a fixed system turn, then the user turn (which
# holds "<image>" where the image goes), rendered by the LLaDA tokenizer's LLaMA-3-style template.
LLADA_V_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that "
    "the user provides, and assist the user with a variety of tasks using natural language."
)
LLADA_V_CHAT = (
    "<|startoftext|><|start_header_id|>system<|end_header_id|>\n\n" + LLADA_V_SYSTEM + "<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
QWEN_CHAT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
)


@dataclass(frozen=True)
class Family:
    name: str
    architectures: tuple[str, ...]
    parse_config: Callable[[dict, str], tuple[ModelConfig, bool]]  # -> (config, tie_embeddings)
    rename: tuple[tuple[str, str], ...]  # (internal regex, checkpoint template)
    special_names: dict[str, str]  # role -> token string in the tokenizer
    special_defaults: dict[str, int | None]  # role -> id when neither config nor tokenizer says
    chat_template: str


def _need(cfg: dict, key: str, source: str):
    if key not in cfg:
        raise ValueError(f"{source}: missing config key '{key}'")
    return cfg[key]


def _found(value) -> str:
    return f"found {value!r} ({type(value).__name__})"


def _int(cfg: dict, key: str, source: str, default: int | None = None, *, required: bool = True) -> int | None:
    """A positive integer config value; `required=False` lets a missing or null key give `default`."""
    value = _need(cfg, key, source) if required else cfg.get(key)
    if value is None and not required:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{source}: config key '{key}' must be an integer, {_found(value)}")
    if value < 1:
        raise ValueError(f"{source}: config key '{key}' must be positive, found {value}")
    return value


def _float(cfg: dict, key: str, source: str, default: float) -> float:
    """A positive number (a JSON integer is fine), or `default` when the key is absent."""
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{source}: config key '{key}' must be a number, {_found(value)}")
    if not value > 0:
        raise ValueError(f"{source}: config key '{key}' must be positive, found {value}")
    return float(value)


def _bool(cfg: dict, key: str, source: str) -> bool:
    value = cfg.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"{source}: config key '{key}' must be true or false, {_found(value)}")
    return value


def _parse_llada(cfg: dict, source: str) -> tuple[ModelConfig, bool]:
    if _bool(cfg, "include_bias", source) or _bool(cfg, "include_qkv_bias", source):
        raise ValueError(f"{source}: include_bias=true is not a LLaDA-8B layout unmask supports")
    n_heads = _int(cfg, "n_heads", source)
    vocab = _int(cfg, "vocab_size", source, required="embedding_size" not in cfg)
    rows = _int(cfg, "embedding_size", source, vocab, required=False)  # the embedding may be padded past the vocabulary
    if rows is None:
        raise ValueError(f"{source}: missing config key 'vocab_size'")
    if vocab is not None and vocab > rows:
        raise ValueError(f"{source}: vocab_size {vocab} is larger than embedding_size {rows} (the embedding's rows)")
    mc = ModelConfig(
        family="llada",
        hidden_size=_int(cfg, "d_model", source),
        num_layers=_int(cfg, "n_layers", source),
        num_heads=n_heads,
        num_kv_heads=_int(cfg, "n_kv_heads", source, n_heads, required=False),
        intermediate_size=_int(cfg, "mlp_hidden_size", source),
        vocab_size=rows,
        rope_theta=_float(cfg, "rope_theta", source, 10000.0),
        rms_norm_eps=_float(cfg, "rms_norm_eps", source, 1e-5),
        max_position=_int(cfg, "max_sequence_length", source, 4096, required=False),
        qkv_bias=False,
        shift_logits=False,
    )
    return mc, _bool(cfg, "weight_tying", source)


def _parse_llama_keys(
    cfg: dict, source: str, family: str, *, rope_theta: float, max_position: int, qkv_bias: bool, shift_logits: bool
) -> tuple[ModelConfig, bool]:
    """A config with transformers' LLaMA/Qwen2 key names (Dream, LLaDA-V's LM); the defaults are the family's."""
    n_heads = _int(cfg, "num_attention_heads", source)
    mc = ModelConfig(
        family=family,
        hidden_size=_int(cfg, "hidden_size", source),
        num_layers=_int(cfg, "num_hidden_layers", source),
        num_heads=n_heads,
        num_kv_heads=_int(cfg, "num_key_value_heads", source, n_heads, required=False),
        intermediate_size=_int(cfg, "intermediate_size", source),
        vocab_size=_int(cfg, "vocab_size", source),
        rope_theta=_float(cfg, "rope_theta", source, rope_theta),
        rms_norm_eps=_float(cfg, "rms_norm_eps", source, 1e-6),
        max_position=_int(cfg, "max_position_embeddings", source, max_position, required=False),
        qkv_bias=qkv_bias,
        shift_logits=shift_logits,
    )
    return mc, _bool(cfg, "tie_word_embeddings", source)


def _parse_dream(cfg: dict, source: str) -> tuple[ModelConfig, bool]:
    return _parse_llama_keys(cfg, source, "dream", rope_theta=1e6, max_position=32768, qkv_bias=True, shift_logits=True)


def _parse_llada_v(cfg: dict, source: str) -> tuple[ModelConfig, bool]:
    """LLaDA-V's LM: LLaDA-8B with LLaMA-style config keys (defaults of its LLaDAConfig class)."""
    if _bool(cfg, "attention_bias", source):
        raise ValueError(f"{source}: attention_bias=true is not a LLaDA-V layout unmask supports")
    return _parse_llama_keys(cfg, source, "llada-v", rope_theta=10000.0, max_position=2048, qkv_bias=False, shift_logits=False)


LLADA = Family(
    name="llada",
    architectures=("LLaDAModelLM",),
    parse_config=_parse_llada,
    rename=(
        (r"embed\.weight", "model.transformer.wte.weight"),
        (r"layers\.(\d+)\.attn_norm\.weight", "model.transformer.blocks.{0}.attn_norm.weight"),
        (r"layers\.(\d+)\.(q|k|v)_proj\.weight", "model.transformer.blocks.{0}.{1}_proj.weight"),
        (r"layers\.(\d+)\.o_proj\.weight", "model.transformer.blocks.{0}.attn_out.weight"),
        (r"layers\.(\d+)\.ffn_norm\.weight", "model.transformer.blocks.{0}.ff_norm.weight"),
        (r"layers\.(\d+)\.gate_proj\.weight", "model.transformer.blocks.{0}.ff_proj.weight"),
        (r"layers\.(\d+)\.up_proj\.weight", "model.transformer.blocks.{0}.up_proj.weight"),
        (r"layers\.(\d+)\.down_proj\.weight", "model.transformer.blocks.{0}.ff_out.weight"),
        (r"norm\.weight", "model.transformer.ln_f.weight"),
        (r"lm_head\.weight", "model.transformer.ff_out.weight"),
    ),
    special_names={"mask": "<|mdm_mask|>", "eos": "<|endoftext|>", "eot": "<|eot_id|>", "bos": "<|startoftext|>"},
    special_defaults={"mask": 126336, "eos": 126081, "eot": 126348, "bos": 126080, "pad": 126081},
    chat_template=LLADA_CHAT,
)

DREAM = Family(
    name="dream",
    architectures=("DreamModel",),
    parse_config=_parse_dream,
    rename=(
        (r"embed\.weight", "model.embed_tokens.weight"),
        (r"layers\.(\d+)\.attn_norm\.weight", "model.layers.{0}.input_layernorm.weight"),
        (r"layers\.(\d+)\.(q|k|v|o)_proj\.(weight|bias)", "model.layers.{0}.self_attn.{1}_proj.{2}"),
        (r"layers\.(\d+)\.ffn_norm\.weight", "model.layers.{0}.post_attention_layernorm.weight"),
        (r"layers\.(\d+)\.(gate|up|down)_proj\.weight", "model.layers.{0}.mlp.{1}_proj.weight"),
        (r"norm\.weight", "model.norm.weight"),
        (r"lm_head\.weight", "lm_head.weight"),
    ),
    special_names={"mask": "<|mask|>", "eos": "<|endoftext|>", "eot": "<|im_end|>", "bos": "<|beginoftext|>"},
    special_defaults={"mask": 151666, "eos": 151643, "eot": 151645, "bos": None, "pad": 151643},
    chat_template=QWEN_CHAT,
)

LLADA_V = Family(
    name="llada-v",
    architectures=("LlavaLLaDAModelLM",),
    parse_config=_parse_llada_v,
    rename=(
        (r"embed\.weight", "model.embed_tokens.weight"),
        (r"layers\.(\d+)\.attn_norm\.weight", "model.layers.{0}.input_layernorm.weight"),
        (r"layers\.(\d+)\.(q|k|v|o)_proj\.weight", "model.layers.{0}.self_attn.{1}_proj.weight"),
        (r"layers\.(\d+)\.ffn_norm\.weight", "model.layers.{0}.post_attention_layernorm.weight"),
        (r"layers\.(\d+)\.(gate|up|down)_proj\.weight", "model.layers.{0}.mlp.{1}_proj.weight"),
        (r"norm\.weight", "model.norm.weight"),
        (r"lm_head\.weight", "lm_head.weight"),
    ),
    special_names=LLADA.special_names,
    special_defaults=LLADA.special_defaults,
    chat_template=LLADA_V_CHAT,
)

FAMILIES = (LLADA, DREAM, LLADA_V)
LLADA_V_MODEL_TYPES = ("llava_llada",)
MOE_KEYS = ("moe_num_experts", "num_experts", "n_routed_experts")


def detect_family(cfg: dict, source: str) -> Family:
    """Pick the family from `architectures` and the config's fields (model_type alone is ambiguous)."""
    archs = cfg.get("architectures") or []
    if any(k in cfg for k in MOE_KEYS):
        raise ValueError(f"{source}: mixture-of-experts checkpoints ({archs}) are not supported yet")
    for fam in FAMILIES:
        if any(a in fam.architectures for a in archs):
            return fam
    if not archs and cfg.get("model_type") in LLADA_V_MODEL_TYPES:
        return LLADA_V
    # Without `architectures`, the field names still tell OLMo-style from Qwen2-style.
    if not archs and "d_model" in cfg and "n_layers" in cfg:
        return LLADA
    known = sorted(a for fam in FAMILIES for a in fam.architectures)
    raise ValueError(f"{source}: unknown architecture {archs or cfg.get('model_type')!r}; supported: {known}")


def checkpoint_name(family: Family, internal: str) -> str:
    """The checkpoint's name for an internal parameter name."""
    for pattern, template in family.rename:
        m = re.fullmatch(pattern, internal)
        if m:
            return template.format(*m.groups())
    raise KeyError(f"no {family.name} checkpoint name for parameter {internal}")
