"""Checkpoint loading: formats, dtypes, special ids, the tokenizer, and one clear error per bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import unmask
from conftest import DREAM_SPECIALS, LLADA_SPECIALS, WORDS, make_checkpoint, write_tokenizer
from unmask.models.families import LLADA_CHAT, QWEN_CHAT

FAMILIES = ["llada", "dream"]
EXPECTED_SPECIAL = {
    # From conftest's tokenizers: specials come first, in list order.
    "llada": dict(mask=2, eos=0, eot=3, bos=1, pad=0),
    "dream": dict(mask=1, eos=0, eot=3, bos=None, pad=0),
}


# -- helpers ----------------------------------------------------------------------------------


def _edit_config(path: Path, **changes) -> dict:
    """Set keys in config.json (a value of `...` deletes the key)."""
    cfg_file = path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    for key, value in changes.items():
        if value is ...:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    cfg_file.write_text(json.dumps(cfg))
    return cfg


def _rewrite_single(path: Path, edit) -> None:
    file = path / "model.safetensors"
    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file))


def _index(path: Path) -> dict:
    return json.loads((path / "model.safetensors.index.json").read_text())


def _load_error(path, expected_type, **kw) -> str:
    """Load must fail with exactly `expected_type` (not a library's internal error); return the message."""
    with pytest.raises(Exception) as info:
        unmask.load(path, **kw)
    assert type(info.value) is expected_type, f"{type(info.value).__name__}: {info.value}"
    return str(info.value)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


# -- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_load_single_file(family, llada, dream):
    model = llada if family == "llada" else dream
    cfg = model.cfg
    assert cfg.family == family
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size, cfg.vocab_size) == (32, 2, 4, 64, 64)
    assert cfg.num_kv_heads == (4 if family == "llada" else 2)
    assert cfg.qkv_bias == (family == "dream")
    assert cfg.shift_logits == (family == "dream")
    assert cfg.rope_theta == 10000.0 and cfg.max_position == 512
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert not any(p.requires_grad for p in model.module.parameters())
    assert not model.module.training
    assert model.chat_template == (LLADA_CHAT if family == "llada" else QWEN_CHAT)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        logits = model.module(ids)
    assert logits.shape == (1, 4, 64) and bool(torch.isfinite(logits).all())


def test_loaded_tensors_equal_checkpoint(llada_dir, llada, dream_dir, dream):
    raw = load_file(str(llada_dir / "model.safetensors"))
    m = llada.module
    assert torch.equal(m.embed.weight, raw["model.transformer.wte.weight"])
    assert torch.equal(m.layers[1].o_proj.weight, raw["model.transformer.blocks.1.attn_out.weight"])
    assert torch.equal(m.layers[0].gate_proj.weight, raw["model.transformer.blocks.0.ff_proj.weight"])
    assert torch.equal(m.layers[0].down_proj.weight, raw["model.transformer.blocks.0.ff_out.weight"])
    assert torch.equal(m.layers[1].ffn_norm.weight, raw["model.transformer.blocks.1.ff_norm.weight"])
    assert torch.equal(m.norm.weight, raw["model.transformer.ln_f.weight"])
    assert torch.equal(m.lm_head.weight, raw["model.transformer.ff_out.weight"])
    raw = load_file(str(dream_dir / "model.safetensors"))
    m = dream.module
    assert torch.equal(m.layers[1].q_proj.bias, raw["model.layers.1.self_attn.q_proj.bias"])
    assert torch.equal(m.layers[0].k_proj.weight, raw["model.layers.0.self_attn.k_proj.weight"])
    assert torch.equal(m.layers[0].attn_norm.weight, raw["model.layers.0.input_layernorm.weight"])
    assert torch.equal(m.lm_head.weight, raw["lm_head.weight"])


@pytest.mark.parametrize("family", FAMILIES)
def test_load_sharded_equals_single(family, tmp_path):
    single = make_checkpoint(tmp_path / "single", family, seed=3)
    sharded = make_checkpoint(tmp_path / "sharded", family, seed=3, shards=3)
    assert not (sharded / "model.safetensors").exists()
    assert len(set(_index(sharded)["weight_map"].values())) == 3
    a, b = unmask.load(single, dtype="float32"), unmask.load(sharded, dtype="float32")
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    ids = torch.tensor([[3, 9, 12, 20, 2], [7, 7, 1, 0, 30]])
    with torch.no_grad():
        assert torch.equal(a.module(ids), b.module(ids))
    assert a.special == b.special


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", ["bfloat16", torch.bfloat16], ids=["str", "torch"])
def test_load_bfloat16(family, dtype, tmp_path, llada, dream):
    path = make_checkpoint(tmp_path / family, family)  # same seed as the session fixtures
    model = unmask.load(path, dtype=dtype)
    assert model.dtype == torch.bfloat16
    for name, p in model.module.named_parameters():
        assert p.dtype == torch.bfloat16, name
    ref = (llada if family == "llada" else dream).module
    for (name, p), (_, q) in zip(model.module.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q.to(torch.bfloat16)), name
    # RoPE tables stay in float32.
    assert model.module.rotary.cos.dtype == torch.float32
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        logits = model.module(ids)
        ref_logits = ref(ids)
    assert logits.dtype == torch.bfloat16 and bool(torch.isfinite(logits).all())
    assert (logits.float() - ref_logits).abs().max().item() < 0.25


def test_load_float16(llada_dir):
    model = unmask.load(llada_dir, dtype="float16")
    assert all(p.dtype == torch.float16 for p in model.module.parameters())


def test_tied_embeddings(tmp_path):
    path = make_checkpoint(tmp_path / "tied", "dream")
    _edit_config(path, tie_word_embeddings=True)
    _rewrite_single(path, lambda t: t.pop("lm_head.weight"))
    model = unmask.load(path, dtype="bfloat16")
    assert model.module.lm_head.weight is model.module.embed.weight
    raw = load_file(str(path / "model.safetensors"))
    assert torch.equal(model.module.embed.weight, raw["model.embed_tokens.weight"].to(torch.bfloat16))


# -- special ids --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_special_ids(family, llada, dream):
    model = llada if family == "llada" else dream
    want = EXPECTED_SPECIAL[family]
    sp = model.special
    assert (sp.mask, sp.eos, sp.eot, sp.bos, sp.pad) == (want["mask"], want["eos"], want["eot"], want["bos"], want["pad"])
    assert sp.stop_ids == (want["eos"], want["eot"])
    # The ids name the right tokens.
    tok = model.tokenizer
    names = {"llada": ("<|mdm_mask|>", "<|endoftext|>", "<|eot_id|>"), "dream": ("<|mask|>", "<|endoftext|>", "<|im_end|>")}
    assert (tok.token_to_id(names[family][0]), tok.token_to_id(names[family][1]), tok.token_to_id(names[family][2])) == (
        sp.mask,
        sp.eos,
        sp.eot,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_mask_id_from_tokenizer_name(family, tmp_path):
    path = make_checkpoint(tmp_path / family, family)
    cfg = _edit_config(path, mask_token_id=...)
    assert "mask_token_id" not in cfg
    model = unmask.load(path)
    assert model.special.mask == EXPECTED_SPECIAL[family]["mask"]


@pytest.mark.parametrize("family", FAMILIES)
def test_config_ids_win_over_tokenizer(family, tmp_path):
    path = make_checkpoint(tmp_path / family, family)
    _edit_config(path, mask_token_id=40, eos_token_id=[41, 42], eot_token_id=43)
    sp = unmask.load(path).special
    assert (sp.mask, sp.eos, sp.eot) == (40, 41, 43)


@pytest.mark.parametrize("family", FAMILIES)
def test_pad_falls_back_to_eos(family, tmp_path):
    path = make_checkpoint(tmp_path / family, family)
    _edit_config(path, pad_token_id=..., eos_token_id=7)
    sp = unmask.load(path).special
    assert sp.eos == 7 and sp.pad == 7


@pytest.mark.parametrize(
    "family, vocab, drop, want",
    [
        ("llada", 126464, ["<|mdm_mask|>", "<|eot_id|>"], dict(mask=126336, eot=126348)),
        ("dream", 152064, ["<|mask|>", "<|im_end|>"], dict(mask=151666, eot=151645)),
    ],
)
def test_ids_from_family_table(family, vocab, drop, want, tmp_path):
    path = make_checkpoint(tmp_path / family, family, layers=1, hidden=8, heads=2, kv_heads=1, ffn=8, vocab=vocab)
    specials = LLADA_SPECIALS if family == "llada" else DREAM_SPECIALS
    write_tokenizer(path, [s for s in specials if s not in drop])
    _edit_config(path, mask_token_id=...)
    sp = unmask.load(path).special
    assert (sp.mask, sp.eot) == (want["mask"], want["eot"])


def test_family_default_outside_vocab_is_an_error(tmp_path):
    path = make_checkpoint(tmp_path / "small", "llada")
    write_tokenizer(path, [s for s in LLADA_SPECIALS if s != "<|mdm_mask|>"])
    _edit_config(path, mask_token_id=...)
    msg = _load_error(path, ValueError)
    assert str(path / "config.json") in msg
    assert "mask" in msg and "126336" in msg and "64" in msg


def test_config_id_outside_vocab_is_an_error(tmp_path):
    path = make_checkpoint(tmp_path / "bad_eos", "llada")
    _edit_config(path, eos_token_id=64)
    msg = _load_error(path, ValueError)
    assert str(path / "config.json") in msg and "eos" in msg and "64" in msg


# Official-format configs of models with their own small vocabulary and no end-of-turn token.
# LLaDA: every key configuration_llada.py's LLaDAConfig writes to config.json (as in the released
# LLaDA-8B-Instruct config: mask, EOS and pad ids, no BOS or EoT id). Dream: the hub config's keys
# (bos/eos/pad/mask ids, no EoT id).
def _official_llada_config(ids: dict[str, int], vocab: int) -> dict:
    return {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
        "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 32,
        "embedding_dropout": 0.0, "embedding_size": vocab, "eos_token_id": ids["<|endoftext|>"],
        "flash_attention": False, "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None,
        "init_device": "meta", "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False,
        "layer_norm_type": "rms", "layer_norm_with_affine": True, "mask_token_id": ids["<|mdm_mask|>"],
        "max_sequence_length": 512, "mlp_hidden_size": 64, "mlp_ratio": 4, "model_type": "llada",
        "multi_query_attention": None, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2,
        "pad_token_id": ids["<|endoftext|>"], "precision": "amp_bf16", "residual_dropout": 0.0, "rms_norm_eps": 1e-05,
        "rope": True, "rope_full_precision": True, "rope_theta": 500000.0, "scale_logits": False,
        "transformers_version": "4.46.3", "use_cache": False, "vocab_size": vocab, "weight_tying": False,
    }


def _hub_dream_config(ids: dict[str, int], vocab: int) -> dict:
    return {
        "architectures": ["DreamModel"], "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|endoftext|>"], "hidden_act": "silu",
        "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64, "mask_token_id": ids["<|mask|>"],
        "max_position_embeddings": 512, "max_window_layers": 2, "model_type": "Dream", "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "pad_token_id": ids["<|endoftext|>"], "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.46.2", "use_cache": True, "use_sliding_window": False,
        "vocab_size": vocab,
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_official_configs_without_end_of_turn_load_and_generate(family, tmp_path):
    path = make_checkpoint(tmp_path / family, family, vocab=96)
    if family == "llada":
        ids = write_tokenizer(path, ["<|endoftext|>", "<|mdm_mask|>"])
        config = _official_llada_config(ids, 96)
    else:
        ids = write_tokenizer(path, ["<|endoftext|>", "<|mask|>"])
        config = _hub_dream_config(ids, 96)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    model = unmask.load(path)
    sp = model.special
    eos = ids["<|endoftext|>"]
    assert sp.eot is None and sp.stop_ids == (eos,)
    assert sp.bos == (None if family == "llada" else eos) and sp.pad == eos
    assert model.chat_template is None  # the family template needs tokens this vocabulary lacks
    for options in ({}, {"confidence_eos_eot_inf": True}):
        result = unmask.generate(model, prompts=["a b c"], gen_length=8, block_length=8, steps=8, chat=True, **options)
        assert len(result.token_ids[0]) == 8 and sp.mask not in result.token_ids[0]


def test_end_of_turn_from_the_family_table_needs_the_vocabulary_to_hold_it(tmp_path):
    path = make_checkpoint(tmp_path / "llada", "llada")
    write_tokenizer(path, [s for s in LLADA_SPECIALS if s not in ("<|eot_id|>", "<|startoftext|>")])
    _edit_config(path, bos_token_id=...)
    sp = unmask.load(path).special
    assert sp.eot is None and sp.bos is None and sp.stop_ids == (sp.eos,)


# -- tokenizer ----------------------------------------------------------------------------------


def test_tokenizer_round_trip(llada):
    tok = llada.tokenizer
    text = "a b c 1 2 user assistant helpful ."
    ids = tok.encode(text)
    assert len(ids) == len(text.split())
    unk = tok.token_to_id("[UNK]")
    assert unk not in ids
    assert tok.decode(ids) == text
    assert tok.vocab_size == len(LLADA_SPECIALS) + 1 + len(WORDS)
    assert tok.token_to_id("not-a-token") is None


def test_tokenizer_special_tokens(llada):
    tok, sp = llada.tokenizer, llada.special
    ids = tok.encode("<|mdm_mask|> a<|eot_id|>b")
    assert ids == [sp.mask, tok.token_to_id("a"), sp.eot, tok.token_to_id("b")]
    assert tok.decode(ids) == "a b"  # specials skipped by default
    full = tok.decode(ids, skip_special=False)
    assert "<|mdm_mask|>" in full and "<|eot_id|>" in full
    # No BOS is added: the chat template places it explicitly, once.
    assert tok.encode("a b")[0] != sp.bos
    prompt = tok.encode(llada.chat_template.format(content="a b"))
    assert prompt[0] == sp.bos and prompt.count(sp.bos) == 1 and sp.eot in prompt


def test_dream_tokenizer_round_trip(dream):
    tok = dream.tokenizer
    text = "You are helpful . x y z"
    assert tok.decode(tok.encode(text)) == text
    prompt = tok.encode(dream.chat_template.format(content="q"))
    assert prompt.count(dream.special.eot) == 2


# -- one clear error per bad input --------------------------------------------------------------


@pytest.fixture
def ckpt(tmp_path):
    """A fresh, editable LLaDA checkpoint."""
    return make_checkpoint(tmp_path / "ckpt", "llada")


@pytest.fixture
def sharded(tmp_path):
    return make_checkpoint(tmp_path / "sharded", "llada", shards=3)


def test_error_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    msg = _load_error(ckpt, FileNotFoundError)
    assert str(ckpt / "config.json") in msg and "missing" in msg


def test_error_invalid_json(ckpt):
    (ckpt / "config.json").write_text('{"d_model": 32,')
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "config.json") in msg and "not valid JSON" in msg


@pytest.mark.parametrize("family", FAMILIES)
def test_error_unknown_architecture(family, tmp_path):
    path = make_checkpoint(tmp_path / family, family)
    _edit_config(path, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    msg = _load_error(path, ValueError)
    assert str(path / "config.json") in msg
    assert "unknown architecture" in msg and "GPT2LMHeadModel" in msg
    assert "LLaDAModelLM" in msg and "DreamModel" in msg


def test_error_mixture_of_experts(ckpt):
    _edit_config(ckpt, num_experts=64)
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "config.json") in msg and "mixture-of-experts" in msg


def test_error_missing_config_key(ckpt):
    _edit_config(ckpt, d_model=...)
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "config.json") in msg and "d_model" in msg


def test_error_indivisible_heads(ckpt):
    _edit_config(ckpt, n_heads=5)
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "config.json") in msg and "5 heads" in msg


def test_error_wrong_shape(ckpt):
    name = "model.transformer.blocks.1.q_proj.weight"
    _rewrite_single(ckpt, lambda t: t.__setitem__(name, torch.zeros(32, 16)))
    msg = _load_error(ckpt, ValueError)
    file = ckpt / "model.safetensors"
    assert str(file) in msg and name in msg
    assert "(32, 16)" in msg and "(32, 32)" in msg


def test_error_wrong_shape_in_shard(sharded):
    index = _index(sharded)
    name = "model.transformer.wte.weight"
    shard = sharded / index["weight_map"][name]
    tensors = load_file(str(shard))
    tensors[name] = torch.zeros(64, 31)
    save_file(tensors, str(shard))
    msg = _load_error(sharded, ValueError)
    assert str(shard) in msg and name in msg and "(64, 31)" in msg and "(64, 32)" in msg


def test_error_missing_parameter(ckpt):
    name = "model.transformer.blocks.1.up_proj.weight"
    _rewrite_single(ckpt, lambda t: t.pop(name))
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "model.safetensors") in msg and "missing" in msg and name in msg


def test_error_missing_dream_bias(tmp_path):
    path = make_checkpoint(tmp_path / "dream", "dream")
    name = "model.layers.0.self_attn.q_proj.bias"
    _rewrite_single(path, lambda t: t.pop(name))
    msg = _load_error(path, ValueError)
    assert str(path / "model.safetensors") in msg and "missing" in msg and name in msg


def test_error_missing_parameter_in_index(sharded):
    index = _index(sharded)
    name = "model.transformer.blocks.0.v_proj.weight"
    shard = sharded / index["weight_map"].pop(name)
    tensors = load_file(str(shard))
    del tensors[name]
    save_file(tensors, str(shard))
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    msg = _load_error(sharded, ValueError)
    assert str(sharded / "model.safetensors.index.json") in msg and "missing" in msg and name in msg


def test_error_extra_parameter(ckpt):
    name = "model.transformer.blocks.0.extra.weight"
    _rewrite_single(ckpt, lambda t: t.__setitem__(name, torch.zeros(3)))
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "model.safetensors") in msg and "unexpected" in msg and name in msg


def test_error_missing_shard(sharded):
    index = _index(sharded)
    shard_name = sorted(set(index["weight_map"].values()))[1]
    (sharded / shard_name).unlink()
    msg = _load_error(sharded, FileNotFoundError)
    assert str(sharded / shard_name) in msg and "missing" in msg and "model.safetensors.index.json" in msg


def test_error_bad_index(sharded):
    (sharded / "model.safetensors.index.json").write_text('{"metadata": {}}')
    msg = _load_error(sharded, ValueError)
    assert str(sharded / "model.safetensors.index.json") in msg and "index" in msg


def test_error_missing_weights(ckpt):
    (ckpt / "model.safetensors").unlink()
    msg = _load_error(ckpt, FileNotFoundError)
    assert str(ckpt) in msg and "model.safetensors" in msg


def test_error_missing_tokenizer(ckpt):
    (ckpt / "tokenizer.json").unlink()
    msg = _load_error(ckpt, FileNotFoundError)
    assert str(ckpt / "tokenizer.json") in msg and "missing" in msg


def test_error_nonexistent_directory(tmp_path):
    path = tmp_path / "does" / "not" / "exist"
    msg = _load_error(path, FileNotFoundError)
    assert str(path) in msg and "no such checkpoint directory" in msg


def test_error_unknown_dtype(llada_dir):
    msg = _load_error(llada_dir, ValueError, dtype="float64")
    assert "float64" in msg and "bfloat16" in msg and "float32" in msg


@pytest.mark.parametrize("name", ["llada-base", "dream-inst"])
def test_error_named_hub_checkpoint(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no directory of that name here
    msg = _load_error(name, FileNotFoundError)
    assert name in msg and "model.path" in msg


# Bad inputs that a library would otherwise report without naming the file.


def test_error_index_points_to_wrong_shard(sharded):
    index = _index(sharded)
    name = "model.transformer.ln_f.weight"
    other = next(s for s in sorted(set(index["weight_map"].values())) if s != index["weight_map"][name])
    index["weight_map"][name] = other
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    msg = _load_error(sharded, ValueError)
    assert str(sharded / other) in msg and name in msg


def test_error_corrupt_safetensors(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "model.safetensors") in msg


def test_error_config_not_an_object(ckpt):
    (ckpt / "config.json").write_text("[1, 2, 3]")
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "config.json") in msg


# -- config values, vocabulary, tokenizer file and weights that would load silently or fail obscurely


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("d_model", "128", ["'d_model'", "integer", "'128'"]),
        ("n_layers", 2.0, ["'n_layers'", "integer"]),
        ("n_heads", 0, ["'n_heads'", "positive"]),
        ("rms_norm_eps", "1e-5", ["'rms_norm_eps'", "number"]),
        ("weight_tying", "false", ["'weight_tying'", "true or false"]),
        ("eos_token_id", "0", ["eos_token_id", "integer token id"]),
    ],
)
def test_error_config_value_of_the_wrong_type(ckpt, key, value, words):
    _edit_config(ckpt, **{key: value})
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "config.json") in msg and all(w in msg for w in words), msg


def test_error_vocab_size_disagrees_with_the_embedding_or_tokenizer(ckpt, tmp_path):
    _edit_config(ckpt, vocab_size=50000)  # more than the 64 embedding rows
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "config.json") in msg and "vocab_size 50000" in msg and "embedding_size 64" in msg
    _edit_config(ckpt, vocab_size=10)  # fewer than the tokenizer's 50 tokens
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "config.json") in msg and "vocab_size 10" in msg and "50 tokens" in msg
    small = make_checkpoint(tmp_path / "small", "dream", vocab=40)  # a tokenizer with 48 tokens
    msg = _load_error(small, ValueError)
    assert str(small / "tokenizer.json") in msg and "48 tokens" in msg and "40 embedding rows" in msg


def test_error_tokenizer_json_that_is_not_json(ckpt):
    (ckpt / "tokenizer.json").write_text("{not json")
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "tokenizer.json") in msg


def test_error_missing_tokenizer_is_one_message_without_library_noise(ckpt, capfd):
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError) as info:
        unmask.load(ckpt)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert str(info.value).startswith(f"{ckpt / 'tokenizer.json'}: missing") and "\n" not in str(info.value)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    "value, words",
    [
        (float("nan"), ["NaN or infinite"]),
        (float("inf"), ["NaN or infinite"]),
        ("int32", ["dtype int32", "floating point"]),
    ],
)
def test_error_weights_that_are_not_finite_floats(ckpt, value, words):
    name = "model.transformer.blocks.0.k_proj.weight"

    def edit(tensors):
        t = tensors[name]
        if value == "int32":
            tensors[name] = t.to(torch.int32)
        else:
            t[3, 5] = value

    _rewrite_single(ckpt, edit)
    msg = _load_error(ckpt, ValueError)
    assert str(ckpt / "model.safetensors") in msg and name in msg and all(w in msg for w in words), msg


def test_error_weights_that_overflow_the_load_dtype(ckpt):
    name = "model.transformer.ln_f.weight"
    _rewrite_single(ckpt, lambda t: t[name].__setitem__(0, 1e6))
    assert unmask.load(ckpt, dtype="float32") is not None
    msg = _load_error(ckpt, ValueError, dtype="float16")
    assert str(ckpt / "model.safetensors") in msg and name in msg and "overflows float16" in msg
