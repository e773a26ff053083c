"""Independent reference equivalence: unmask's modules against transformers' Llama / Qwen2.

LLaDA is a Llama-layout transformer (no biases, SwiGLU, RMSNorm, NeoX RoPE) run with
bidirectional attention; Dream is a Qwen2-layout transformer (q/k/v biases, GQA) run with
bidirectional attention and logits shifted by one. transformers' implementations are an
independent reference: we copy the checkpoint's tensors into them under Llama/Qwen2 names,
give them an explicit all-visible 4D attention mask (eager attention, additive float mask),
and compare logits with `model.module(...)`. The engine's subset-of-rows primitive is then
checked against the full forward.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import unmask
from conftest import make_checkpoint
from unmask.engine import Rows, StepPlan, make_state, run_plan

transformers = pytest.importorskip("transformers")

TOL = 1e-4
LLADA_THETA = 500000.0
DREAM_THETA = 1000000.0

# LLaDA (OLMo-style) names -> Llama names, per block and top level.
LLADA_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "q_proj.weight": "self_attn.q_proj.weight",
    "k_proj.weight": "self_attn.k_proj.weight",
    "v_proj.weight": "self_attn.v_proj.weight",
    "attn_out.weight": "self_attn.o_proj.weight",
    "ff_norm.weight": "post_attention_layernorm.weight",
    "ff_proj.weight": "mlp.gate_proj.weight",
    "up_proj.weight": "mlp.up_proj.weight",
    "ff_out.weight": "mlp.down_proj.weight",
}
LLADA_TOP = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}


# -- helpers ----------------------------------------------------------------------------------


def _set_theta(path: Path, key: str, theta: float) -> None:
    """Use a non-default rope theta so a dropped theta would show up as a mismatch."""
    cfg_file = path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg[key] = theta
    cfg_file.write_text(json.dumps(cfg))


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def _llama_name(name: str) -> str:
    if name in LLADA_TOP:
        return LLADA_TOP[name]
    prefix = "model.transformer.blocks."
    assert name.startswith(prefix), name
    index, rest = name[len(prefix) :].split(".", 1)
    return f"model.layers.{index}.{LLADA_BLOCK[rest]}"


def _llama_reference(path: Path):
    cfg = json.loads((path / "config.json").read_text())
    config = transformers.LlamaConfig(
        hidden_size=cfg["d_model"],
        intermediate_size=cfg["mlp_hidden_size"],
        num_hidden_layers=cfg["n_layers"],
        num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg["n_kv_heads"],
        vocab_size=cfg["vocab_size"],
        rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_theta"]},
        rms_norm_eps=cfg["rms_norm_eps"],
        max_position_embeddings=cfg["max_sequence_length"],
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    ref = transformers.LlamaForCausalLM(config)
    state = {_llama_name(k): v for k, v in _tensors(path).items()}
    ref.load_state_dict(state, strict=True)
    assert ref.config.rope_parameters["rope_theta"] == cfg["rope_theta"]
    return ref.float().eval()


def _qwen2_reference(path: Path):
    cfg = json.loads((path / "config.json").read_text())
    config = transformers.Qwen2Config(
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"],
        vocab_size=cfg["vocab_size"],
        rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_theta"]},
        rms_norm_eps=cfg["rms_norm_eps"],
        max_position_embeddings=cfg["max_position_embeddings"],
        tie_word_embeddings=False,
        use_sliding_window=False,
        attn_implementation="eager",
    )
    ref = transformers.Qwen2ForCausalLM(config)
    ref.load_state_dict(_tensors(path), strict=True)  # Dream already uses Qwen2 names
    assert ref.config.rope_parameters["rope_theta"] == cfg["rope_theta"]
    return ref.float().eval()


def _bidirectional_mask(valid: torch.Tensor) -> torch.Tensor:
    """Additive [B,1,T,T] mask: every query sees every valid key (no causal triangle)."""
    b, t = valid.shape
    blocked = torch.finfo(torch.float32).min
    keys = torch.where(valid, 0.0, blocked).to(torch.float32)  # [B, T]
    return keys[:, None, None, :].expand(b, 1, t, t).contiguous()


@torch.no_grad()
def _reference_logits(ref, ids: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    if valid is None:
        valid = torch.ones_like(ids, dtype=torch.bool)
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
    out = ref(
        input_ids=ids,
        attention_mask=_bidirectional_mask(valid),
        position_ids=positions,
        use_cache=False,
    )
    return out.logits.float()


def _shift(logits: torch.Tensor) -> torch.Tensor:
    """Dream's convention: token i is predicted from row i - 1."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def _random_ids(vocab: int, shape, seed: int, low: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, vocab, shape, generator=g)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llada_ref_dir(tmp_path_factory) -> Path:
    path = make_checkpoint(
        tmp_path_factory.mktemp("llada_ref"), "llada", layers=3, hidden=64, heads=4, ffn=96, vocab=80, seed=11
    )
    _set_theta(path, "rope_theta", LLADA_THETA)
    return path


@pytest.fixture(scope="module")
def llada_gqa_dir(tmp_path_factory) -> Path:
    path = make_checkpoint(
        tmp_path_factory.mktemp("llada_gqa"), "llada", layers=2, hidden=64, heads=4, kv_heads=2, ffn=96, vocab=80, seed=12
    )
    _set_theta(path, "rope_theta", LLADA_THETA)
    return path


@pytest.fixture(scope="module")
def dream_ref_dir(tmp_path_factory) -> Path:
    path = make_checkpoint(
        tmp_path_factory.mktemp("dream_ref"), "dream", layers=3, hidden=64, heads=4, kv_heads=2, ffn=96, vocab=80, seed=13
    )
    _set_theta(path, "rope_theta", DREAM_THETA)
    return path


@pytest.fixture(scope="module")
def llada_pair(llada_ref_dir):
    return unmask.load(llada_ref_dir, dtype="float32"), _llama_reference(llada_ref_dir)


@pytest.fixture(scope="module")
def dream_pair(dream_ref_dir):
    return unmask.load(dream_ref_dir, dtype="float32"), _qwen2_reference(dream_ref_dir)


# -- the reference itself is bidirectional --------------------------------------------------


@pytest.mark.parametrize("which", ["llada", "dream"])
def test_reference_mask_is_bidirectional(which, llada_pair, dream_pair):
    model, ref = llada_pair if which == "llada" else dream_pair
    vocab = model.cfg.vocab_size
    ids = _random_ids(vocab, (1, 12), seed=1)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % vocab
    a, b = _reference_logits(ref, ids), _reference_logits(ref, changed)
    # With a causal mask the first position could never see the last token.
    assert _max_diff(a[:, 0], b[:, 0]) > 1e-3
    # And the default (no custom mask) transformers forward is causal, so our mask is what changed it.
    with torch.no_grad():
        ca = ref(input_ids=ids, use_cache=False).logits
        cb = ref(input_ids=changed, use_cache=False).logits
    assert _max_diff(ca[:, 0], cb[:, 0]) < 1e-6
    # unmask is bidirectional as well.
    with torch.no_grad():
        ua, ub = model.module(ids), model.module(changed)
    first = 1 if model.cfg.shift_logits else 0  # Dream's position 0 repeats row 0; position 1 is row 0 too
    assert _max_diff(ua[:, first], ub[:, first]) > 1e-3


# -- LLaDA vs Llama ---------------------------------------------------------------------------


def test_llada_loaded_config(llada_pair):
    model, _ = llada_pair
    assert model.cfg.family == "llada"
    assert model.cfg.rope_theta == LLADA_THETA
    assert not model.cfg.shift_logits


def test_llada_matches_llama_bidirectional(llada_pair):
    model, ref = llada_pair
    ids = _random_ids(model.cfg.vocab_size, (2, 17), seed=2)
    with torch.no_grad():
        ours = model.module(ids)
    theirs = _reference_logits(ref, ids)
    assert ours.shape == (2, 17, model.cfg.vocab_size)
    assert _max_diff(ours, theirs) < TOL


def test_llada_gqa_matches_llama(llada_gqa_dir):
    model, ref = unmask.load(llada_gqa_dir, dtype="float32"), _llama_reference(llada_gqa_dir)
    assert model.cfg.num_kv_heads == 2 and model.cfg.num_heads == 4
    ids = _random_ids(model.cfg.vocab_size, (2, 13), seed=3)
    with torch.no_grad():
        ours = model.module(ids)
    assert _max_diff(ours, _reference_logits(ref, ids)) < TOL


def _left_padded(model, lengths: list[int], t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = _random_ids(model.cfg.vocab_size, (len(lengths), t), seed=seed)
    valid = torch.zeros(len(lengths), t, dtype=torch.bool)
    for i, n in enumerate(lengths):
        valid[i, t - n :] = True
    ids = torch.where(valid, ids, torch.full_like(ids, model.special.pad))
    return ids, valid


def test_llada_left_padding_matches_llama(llada_pair):
    model, ref = llada_pair
    t = 14
    ids, valid = _left_padded(model, [9, 14, 5], t, seed=4)
    with torch.no_grad():
        ours = model.module(ids, attention_mask=valid.long())
    theirs = _reference_logits(ref, ids, valid)
    assert _max_diff(ours[valid], theirs[valid]) < TOL
    # Padding must not change a sequence's logits: compare with each sequence run alone.
    for i in range(ids.shape[0]):
        alone_ids = ids[i, valid[i]].unsqueeze(0)
        with torch.no_grad():
            alone = model.module(alone_ids)
        assert _max_diff(ours[i, valid[i]], alone[0]) < TOL


# -- Dream vs Qwen2 ---------------------------------------------------------------------------


def test_dream_loaded_config(dream_pair):
    model, _ = dream_pair
    assert model.cfg.family == "dream"
    assert model.cfg.rope_theta == DREAM_THETA
    assert model.cfg.qkv_bias and model.cfg.shift_logits
    assert model.cfg.num_kv_heads < model.cfg.num_heads


def test_dream_matches_qwen2_shifted(dream_pair):
    model, ref = dream_pair
    ids = _random_ids(model.cfg.vocab_size, (2, 15), seed=5)
    with torch.no_grad():
        ours = model.module(ids)
    theirs = _reference_logits(ref, ids)
    assert _max_diff(ours, _shift(theirs)) < TOL
    # The shift is real: without it the logits differ.
    assert _max_diff(ours, theirs) > 1e-3


def test_dream_left_padding_matches_qwen2(dream_pair):
    model, ref = dream_pair
    t = 12
    ids, valid = _left_padded(model, [7, 12, 4], t, seed=6)
    with torch.no_grad():
        ours = model.module(ids, attention_mask=valid.long())
    theirs = _reference_logits(ref, ids, valid)
    # Position i is predicted from row i - 1: compare where that source row is a real token.
    src_valid = valid[:, :-1]
    assert _max_diff(ours[:, 1:][src_valid], theirs[:, :-1][src_valid]) < TOL
    for i in range(ids.shape[0]):
        alone_ids = ids[i, valid[i]].unsqueeze(0)
        with torch.no_grad():
            alone = model.module(alone_ids)
        # Real rows of the padded run vs the lone run (both shifted the same way after the first real token).
        n = int(valid[i].sum())
        assert _max_diff(ours[i, t - n + 1 :], alone[0, 1:]) < TOL


# -- the engine's subset-of-rows primitive ------------------------------------------------------


def _logit_rows(model, rows_index: torch.Tensor) -> Rows:
    """Positions whose logits come from the given hidden rows (Dream: the next position)."""
    return Rows(rows_index + 1) if model.cfg.shift_logits else Rows(rows_index)


def _full_plan(state) -> StepPlan:
    return StepPlan(rows=state.all_rows(), logit_positions=state.all_rows())


def _engine_case(model, padded: bool, seed: int):
    b, t = 3, 16
    if padded:
        canvas, valid = _left_padded(model, [16, 11, 7], t, seed=seed)
    else:
        canvas = _random_ids(model.cfg.vocab_size, (b, t), seed=seed)
        valid = torch.ones(b, t, dtype=torch.bool)
    return canvas, valid


@pytest.mark.parametrize("which", ["llada", "dream"])
@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "leftpad"])
def test_engine_full_plan_matches_module(which, padded, llada_pair, dream_pair):
    model = (llada_pair if which == "llada" else dream_pair)[0]
    canvas, valid = _engine_case(model, padded, seed=7)
    state = make_state(model.module, canvas, valid)
    with torch.no_grad():
        out = run_plan(model.module, state, _full_plan(state))
        ref = model.module(canvas, attention_mask=valid.long())
    assert out.logits.shape == ref.shape
    assert _max_diff(out.logits[valid], ref[valid]) < TOL
    assert out.layer_rows == [canvas.shape[1]] * model.cfg.num_layers
    assert all(out.refreshed_layers)


@pytest.mark.parametrize("which", ["llada", "dream"])
@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "leftpad"])
def test_engine_span_subset_matches_full(which, padded, llada_pair, dream_pair):
    model = (llada_pair if which == "llada" else dream_pair)[0]
    canvas, valid = _engine_case(model, padded, seed=8)
    b, t = canvas.shape
    state = make_state(model.module, canvas, valid)
    with torch.no_grad():
        full = run_plan(model.module, state, _full_plan(state)).logits
        for start, end in [(9, 14), (10, 11), (0, 4), (5, 15)]:
            rows = Rows.range(start, end, b)
            assert rows.span == (start, end)
            plan = StepPlan(rows=rows, logit_positions=_logit_rows(model, rows.index))
            out = run_plan(model.module, state, plan)
            assert out.layer_rows == [end - start] * model.cfg.num_layers
            assert not any(out.refreshed_layers)
            want = torch.gather(full, 1, plan.logit_positions.index[..., None].expand(-1, -1, full.shape[-1]))
            keep = torch.gather(valid, 1, rows.index)  # compare real tokens only
            assert _max_diff(out.logits[keep], want[keep]) < TOL


@pytest.mark.parametrize("which", ["llada", "dream"])
@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "leftpad"])
def test_engine_scattered_subset_matches_full(which, padded, llada_pair, dream_pair):
    model = (llada_pair if which == "llada" else dream_pair)[0]
    canvas, valid = _engine_case(model, padded, seed=9)
    b, t = canvas.shape
    state = make_state(model.module, canvas, valid)
    # Per-sequence, non-contiguous, unequal counts (padded by repeating the last row); never the last
    # row so that Dream's next-position logits stay on the canvas.
    mask = torch.zeros(b, t, dtype=torch.bool)
    mask[0, [1, 4, 5, 9, 14]] = True
    mask[1, [10, 13]] = True
    mask[2, [9, 11, 12, 13]] = True
    rows = Rows.from_mask(mask)
    assert rows.span is None
    assert bool((rows.mask(t) == mask).all())
    with torch.no_grad():
        full = run_plan(model.module, state, _full_plan(state)).logits
        plan = StepPlan(rows=rows, logit_positions=_logit_rows(model, rows.index))
        out = run_plan(model.module, state, plan)
    assert out.layer_rows == [rows.size] * model.cfg.num_layers
    want = torch.gather(full, 1, plan.logit_positions.index[..., None].expand(-1, -1, full.shape[-1]))
    keep = torch.gather(valid, 1, rows.index)
    assert bool(keep.any())
    assert _max_diff(out.logits[keep], want[keep]) < TOL


@pytest.mark.parametrize("which", ["llada", "dream"])
@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "leftpad"])
def test_engine_full_forward_with_few_logits_is_bitwise_the_module(which, padded, llada_pair, dream_pair):
    """All rows computed, logits for a few positions (the last layer then runs only the rows that
    predict them): those logits equal the plain module forward's bit for bit, for a shared span and
    for per-sequence positions, and every layer's K/V is still stored for every row."""
    model = (llada_pair if which == "llada" else dream_pair)[0]
    canvas, valid = _engine_case(model, padded, seed=12)
    b, t = canvas.shape
    scattered = torch.tensor([[9, 11, 15], [10, 13, 13], [12, 14, 15]])
    with torch.no_grad():
        ref = model.module(canvas, attention_mask=valid.long())
        everything = make_state(model.module, canvas, valid)
        run_plan(model.module, everything, _full_plan(everything))
        for positions in (Rows.range(10, 15, b), Rows(scattered)):
            state = make_state(model.module, canvas, valid)
            out = run_plan(model.module, state, StepPlan(rows=state.all_rows(), logit_positions=positions))
            want = torch.gather(ref, 1, positions.index[..., None].expand(-1, -1, ref.shape[-1]))
            assert torch.equal(out.logits, want)
            for kv, kv_all in zip(state.store.kv, everything.store.kv):
                assert torch.equal(kv.k, kv_all.k) and torch.equal(kv.v, kv_all.v)


@pytest.mark.parametrize("which", ["llada", "dream"])
def test_engine_subset_leaves_kv_unchanged(which, llada_pair, dream_pair):
    """With an unchanged canvas, recomputing a subset rewrites the same K/V it already held."""
    model = (llada_pair if which == "llada" else dream_pair)[0]
    canvas, valid = _engine_case(model, True, seed=10)
    b, t = canvas.shape
    state = make_state(model.module, canvas, valid)
    with torch.no_grad():
        run_plan(model.module, state, _full_plan(state))
        before = [(kv.k.clone(), kv.v.clone()) for kv in state.store.kv]
        mask = torch.zeros(b, t, dtype=torch.bool)
        mask[:, 8:12] = True
        mask[0, 2] = True
        rows = Rows.from_mask(mask)
        run_plan(model.module, state, StepPlan(rows=rows, logit_positions=_logit_rows(model, rows.index)))
    for (k0, v0), kv in zip(before, state.store.kv):
        assert kv.k.shape == (b, model.cfg.num_kv_heads, t, model.cfg.head_dim)
        assert _max_diff(kv.k, k0) < TOL
        assert _max_diff(kv.v, v0) < TOL


@pytest.mark.parametrize("which", ["llada", "dream"])
def test_engine_all_rows_twice_is_stable(which, llada_pair, dream_pair):
    model = (llada_pair if which == "llada" else dream_pair)[0]
    canvas, valid = _engine_case(model, True, seed=11)
    state = make_state(model.module, canvas, valid)
    with torch.no_grad():
        first = run_plan(model.module, state, _full_plan(state)).logits
        rows = Rows.from_mask(torch.ones_like(valid))  # all rows, built the other way
        assert rows.span == (0, canvas.shape[1])
        second = run_plan(model.module, state, StepPlan(rows=rows, logit_positions=state.all_rows())).logits
    assert _max_diff(first[valid], second[valid]) < TOL


def test_eager_attention_matches_llama_with_gqa(llada_gqa_dir):
    """attn_implementation=eager (explicit softmax) is the same model as the fused default."""
    model = unmask.load(llada_gqa_dir, dtype="float32", attn_implementation="eager")
    assert all(layer.attn_implementation == "eager" for layer in model.module.layers)
    ids = _random_ids(model.cfg.vocab_size, (2, 13), seed=5)
    with torch.no_grad():
        ours = model.module(ids)
    assert _max_diff(ours, _reference_logits(_llama_reference(llada_gqa_dir), ids)) < TOL


def test_unknown_attn_implementation_is_refused(llada_gqa_dir):
    with pytest.raises(ValueError, match="flash"):
        unmask.load(llada_gqa_dir, attn_implementation="flash")
