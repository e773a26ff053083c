"""Per-family knowledge: config keys, parameter names, special-token defaults, chat templates.

Adding a family means adding one `Family` entry here; the module and the loader
stay the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .config import ModelConfig

LLADA_CHAT = (
    "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
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


def _parse_llada(cfg: dict, source: str) -> tuple[ModelConfig, bool]:
    if cfg.get("include_bias", False) or cfg.get("include_qkv_bias", False):
        raise ValueError(f"{source}: include_bias=true is not a LLaDA-8B layout unmask supports")
    n_heads = _need(cfg, "n_heads", source)
    vocab = cfg.get("embedding_size") or _need(cfg, "vocab_size", source)
    mc = ModelConfig(
        family="llada",
        hidden_size=_need(cfg, "d_model", source),
        num_layers=_need(cfg, "n_layers", source),
        num_heads=n_heads,
        num_kv_heads=cfg.get("n_kv_heads") or n_heads,
        intermediate_size=_need(cfg, "mlp_hidden_size", source),
        vocab_size=vocab,
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        max_position=int(cfg.get("max_sequence_length", 4096)),
        qkv_bias=False,
        shift_logits=False,
    )
    return mc, bool(cfg.get("weight_tying", False))


def _parse_dream(cfg: dict, source: str) -> tuple[ModelConfig, bool]:
    n_heads = _need(cfg, "num_attention_heads", source)
    mc = ModelConfig(
        family="dream",
        hidden_size=_need(cfg, "hidden_size", source),
        num_layers=_need(cfg, "num_hidden_layers", source),
        num_heads=n_heads,
        num_kv_heads=cfg.get("num_key_value_heads") or n_heads,
        intermediate_size=_need(cfg, "intermediate_size", source),
        vocab_size=_need(cfg, "vocab_size", source),
        rope_theta=float(cfg.get("rope_theta", 1e6)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_position=int(cfg.get("max_position_embeddings", 32768)),
        qkv_bias=True,
        shift_logits=True,
    )
    return mc, bool(cfg.get("tie_word_embeddings", False))


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

FAMILIES = (LLADA, DREAM)
MOE_KEYS = ("moe_num_experts", "num_experts", "n_routed_experts")


def detect_family(cfg: dict, source: str) -> Family:
    """Pick the family from `architectures` and the config's fields (model_type alone is ambiguous)."""
    archs = cfg.get("architectures") or []
    if any(k in cfg for k in MOE_KEYS):
        raise ValueError(f"{source}: mixture-of-experts checkpoints ({archs}) are not supported yet")
    for fam in FAMILIES:
        if any(a in fam.architectures for a in archs):
            return fam
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
