"""Fixtures: tiny random checkpoints in the LLaDA and Dream formats, written to temporary dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

LLADA_SPECIALS = ["<|endoftext|>", "<|startoftext|>", "<|mdm_mask|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
DREAM_SPECIALS = ["<|endoftext|>", "<|mask|>", "<|im_start|>", "<|im_end|>"]
WORDS = [str(i) for i in range(10)] + list("abcdefghijklmnopqrstuvwxyz") + ["user", "assistant", "system", "You", "are", "helpful", "."]


def write_tokenizer(path: Path, specials: list[str]) -> dict[str, int]:
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {tok: i for i, tok in enumerate(specials + ["[UNK]"] + WORDS)}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.add_special_tokens(specials)
    tok.save(str(path / "tokenizer.json"))
    return vocab


def make_checkpoint(
    path: Path,
    family: str = "llada",
    *,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    kv_heads: int | None = None,
    ffn: int = 64,
    vocab: int = 64,
    seed: int = 0,
    shards: int = 1,
    head_scale: float = 1.0,
) -> Path:
    """Write a random checkpoint with the family's real config keys and parameter names.

    `head_scale` multiplies the output head, for peaked (trained-like) token distributions.
    """
    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g) * 0.2  # noqa: E731
    hd = hidden // heads
    tensors = {}
    if family == "llada":
        kv_heads = kv_heads or heads
        ids = write_tokenizer(path, LLADA_SPECIALS)
        config = {
            "architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": hidden, "n_layers": layers,
            "n_heads": heads, "n_kv_heads": kv_heads, "mlp_hidden_size": ffn, "vocab_size": vocab,
            "embedding_size": vocab, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "max_sequence_length": 512,
            "include_bias": False, "weight_tying": False, "mask_token_id": ids["<|mdm_mask|>"],
            "eos_token_id": ids["<|endoftext|>"], "bos_token_id": ids["<|startoftext|>"], "pad_token_id": ids["<|endoftext|>"],
        }
        p = "model.transformer."
        tensors[p + "wte.weight"] = rand(vocab, hidden)
        for i in range(layers):
            b = f"{p}blocks.{i}."
            tensors[b + "attn_norm.weight"] = 1 + rand(hidden)
            tensors[b + "q_proj.weight"] = rand(heads * hd, hidden)
            tensors[b + "k_proj.weight"] = rand(kv_heads * hd, hidden)
            tensors[b + "v_proj.weight"] = rand(kv_heads * hd, hidden)
            tensors[b + "attn_out.weight"] = rand(hidden, heads * hd)
            tensors[b + "ff_norm.weight"] = 1 + rand(hidden)
            tensors[b + "ff_proj.weight"] = rand(ffn, hidden)
            tensors[b + "up_proj.weight"] = rand(ffn, hidden)
            tensors[b + "ff_out.weight"] = rand(hidden, ffn)
        tensors[p + "ln_f.weight"] = 1 + rand(hidden)
        tensors[p + "ff_out.weight"] = rand(vocab, hidden) * head_scale
    else:
        kv_heads = kv_heads or max(1, heads // 2)
        ids = write_tokenizer(path, DREAM_SPECIALS)
        config = {
            "architectures": ["DreamModel"], "model_type": "Dream", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "intermediate_size": ffn,
            "vocab_size": vocab, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 512,
            "tie_word_embeddings": False, "mask_token_id": ids["<|mask|>"], "eos_token_id": ids["<|endoftext|>"],
            "pad_token_id": ids["<|endoftext|>"],
        }
        tensors["model.embed_tokens.weight"] = rand(vocab, hidden)
        for i in range(layers):
            b = f"model.layers.{i}."
            tensors[b + "input_layernorm.weight"] = 1 + rand(hidden)
            for name, out in (("q", heads * hd), ("k", kv_heads * hd), ("v", kv_heads * hd)):
                tensors[b + f"self_attn.{name}_proj.weight"] = rand(out, hidden)
                tensors[b + f"self_attn.{name}_proj.bias"] = rand(out)
            tensors[b + "self_attn.o_proj.weight"] = rand(hidden, heads * hd)
            tensors[b + "post_attention_layernorm.weight"] = 1 + rand(hidden)
            tensors[b + "mlp.gate_proj.weight"] = rand(ffn, hidden)
            tensors[b + "mlp.up_proj.weight"] = rand(ffn, hidden)
            tensors[b + "mlp.down_proj.weight"] = rand(hidden, ffn)
        tensors["model.norm.weight"] = 1 + rand(hidden)
        tensors["lm_head.weight"] = rand(vocab, hidden) * head_scale
    (path / "config.json").write_text(json.dumps(config))
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"))
    else:
        weight_map = {}
        for s in range(shards):
            part = names[s::shards]
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            save_file({n: tensors[n] for n in part}, str(path / fname))
            weight_map.update({n: fname for n in part})
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


@pytest.fixture(scope="session")
def llada_dir(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("llada"), "llada")


@pytest.fixture(scope="session")
def dream_dir(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("dream"), "dream")


@pytest.fixture(scope="session")
def llada(llada_dir):
    import unmask

    return unmask.load(llada_dir, dtype="float32")


@pytest.fixture(scope="session")
def dream(dream_dir):
    import unmask

    return unmask.load(dream_dir, dtype="float32")
