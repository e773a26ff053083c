"""Masked-diffusion SFT on a tiny config: the loss drops, the checkpoint loads, resuming continues."""

from __future__ import annotations

import json

import pytest
import torch

import unmask
from unmask import train as train_mod
from unmask.train import SFTCollator, TrainConfig, build_run, diffusion_loss, parse_overrides, train

TINY = dict(
    n_layers=2, d_model=32, n_heads=2, batch_size=4, response_length=160, warmup_steps=2, lr=3e-3,
    tokenizer_samples=300, threads=1, progress=False, save_every=0,
)


def tiny(out, **kw) -> TrainConfig:
    return TrainConfig(out=str(out), **{**TINY, **kw})


def fixed_loss(module, run, problems) -> float:
    """Loss on one fixed batch with fixed masks, to compare a model before and after training."""
    batch = run.collator(problems)
    with torch.no_grad():
        return float(diffusion_loss(module, batch, run.ids["mask"], 1e-3, torch.Generator().manual_seed(0)))


def test_training_reduces_loss_and_writes_a_loadable_checkpoint(tmp_path):
    cfg = tiny(tmp_path / "run", max_steps=40)
    run, _ = build_run(cfg)
    problems = [next(iter(run.stream)) for _ in range(16)]
    before = fixed_loss(run.module, run, problems)
    summary = train(cfg)
    after = fixed_loss(summary["module"], run, problems)
    assert summary["steps"] == 40 and not summary["resumed"]
    assert after < 0.8 * before

    raw = json.loads((tmp_path / "run" / "config.json").read_text())
    for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size", "embedding_size",
                "rope_theta", "rms_norm_eps", "max_sequence_length", "mask_token_id", "eos_token_id", "eot_token_id",
                "bos_token_id", "pad_token_id"):
        assert key in raw
    assert raw["architectures"] == ["LLaDAModelLM"] and raw["include_bias"] is False and raw["weight_tying"] is False

    loaded = unmask.load(tmp_path / "run")
    tok = loaded.tokenizer
    assert loaded.special.mask == tok.token_to_id("<|mdm_mask|>")
    assert loaded.special.eot == tok.token_to_id("<|eot_id|>")
    ids, attn, _ = run.collator(problems[:3])
    with torch.no_grad():
        expected = summary["module"](ids, attention_mask=attn)
        got = loaded.module(ids, attention_mask=attn)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # The chat template of the checkpoint family tokenizes with the built tokenizer (specials whole).
    prompt = loaded.chat_template.format(content="Mia has 12 apples.")
    encoded = tok.encode(prompt)
    assert encoded[0] == loaded.special.bos and tok.decode(encoded, skip_special=False) == prompt
    result = unmask.generate(loaded, prompts=["Mia has 12 apples. How many apples does Mia have now?"],
                             gen_length=32, block_length=32)
    assert isinstance(result.texts[0], str)


def test_resume_continues_where_an_interrupted_run_stopped(tmp_path, monkeypatch):
    straight = train(tiny(tmp_path / "a", max_steps=8))

    real_step, calls = train_mod.train_step, {"n": 0}

    def interrupt_after_five(run):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real_step(run)

    monkeypatch.setattr(train_mod, "train_step", interrupt_after_five)
    cut = train(tiny(tmp_path / "b", max_steps=8))
    assert cut["interrupted"] and cut["steps"] == 5
    monkeypatch.setattr(train_mod, "train_step", real_step)
    resumed = train(tiny(tmp_path / "b", max_steps=8))
    assert resumed["resumed"] and resumed["steps"] == 8 and resumed["steps_this_run"] == 3

    state = torch.load(tmp_path / "b" / "train_state" / "state.pt", weights_only=True)
    assert state["stream"]["count"] == 8 * TINY["batch_size"]
    for (name, p), q in zip(straight["module"].named_parameters(), resumed["module"].parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-6, msg=name)


def test_resume_refuses_another_model_shape(tmp_path):
    train(tiny(tmp_path / "c", max_steps=1))
    with pytest.raises(ValueError, match="d_model"):
        train(tiny(tmp_path / "c", max_steps=2, d_model=64))


def test_collator_pads_the_response_with_eot_then_eos(tmp_path):
    run, _ = build_run(tiny(tmp_path / "d", max_steps=1))
    problems = [next(run.stream) for _ in range(3)]
    ids, attn, response = run.collator(problems)
    assert ids.shape[1] == response[0].sum() + (~response[0]).sum() and int(response[0].sum()) == 160
    for row, a, p in zip(ids, attn, problems):
        resp = row[response[0]].tolist()
        answer = run.collator.tok.encode(p["answer"]).ids
        assert resp[: len(answer) + 1] == answer + [run.ids["eot"]]
        assert set(resp[len(answer) + 1 :]) == {run.ids["eos"]}
        assert bool(a[response[0]].all())
    assert isinstance(run.collator, SFTCollator)


def test_parse_overrides():
    cfg = parse_overrides(["out=runs/x", "n_layers=3", "lr=1e-3", "bf16=true", "minutes=1.5"])
    assert (cfg.out, cfg.n_layers, cfg.lr, cfg.bf16, cfg.minutes) == ("runs/x", 3, 1e-3, True, 1.5)
    with pytest.raises(SystemExit):
        parse_overrides(["nope=1"])
    with pytest.raises(SystemExit):
        parse_overrides(["n_layers=two"])


def test_training_needs_a_budget(tmp_path):
    with pytest.raises(ValueError, match="budget"):
        train(tiny(tmp_path / "e"))


def test_resume_may_extend_the_context(tmp_path):
    """A longer max_sequence_length adds rotary positions, no parameters: resuming with it is allowed
    and the checkpoint then declares (and loads with) the longer context."""
    train(tiny(tmp_path / "d", max_steps=1))
    summary = train(tiny(tmp_path / "d", max_steps=2, max_sequence_length=1024))
    assert summary["resumed"] and summary["steps"] == 2
    model = unmask.load(tmp_path / "d")
    assert model.cfg.max_position == 1024


def test_fourier_number_init_puts_numbers_on_a_line(tmp_path):
    run, _ = build_run(tiny(tmp_path / "run", number_init="fourier", d_model=64))
    vocab = run.collator.tok.get_vocab()
    dims = train_mod.FOURIER_DIMS
    for weight in (run.module.embed.weight, run.module.lm_head.weight):
        line = weight[[vocab[str(n)] for n in range(200)], :dims].detach().double()
        # a rotation by a fixed angle per step: row n+1 is the same linear map of row n for every n
        shift, *_ = torch.linalg.lstsq(line[:-1], line[1:], driver="gelsd")
        assert torch.allclose(line[:-1] @ shift, line[1:], atol=1e-4)
        # numbers still differ: each row is closest (in the Fourier block) to itself
        sims = line @ line.T
        assert (sims.argmax(dim=1) == torch.arange(200)).all()
    words = run.module.embed.weight[vocab["Mia"], :dims]
    plain, _ = build_run(tiny(tmp_path / "plain", d_model=64))
    assert torch.equal(words, plain.module.embed.weight[vocab["Mia"], :dims])  # other tokens untouched
    with pytest.raises(ValueError, match="number_init"):
        train(tiny(tmp_path / "bad", number_init="digits", max_steps=1))


def test_init_from_starts_a_new_run_from_saved_weights_with_a_fresh_optimizer(tmp_path):
    first = train(tiny(tmp_path / "first", max_steps=6))
    cfg = tiny(tmp_path / "next", max_steps=3, init_from=str(tmp_path / "first"))
    run, resumed = build_run(cfg)
    assert not resumed and run.schedule.step == 0 and not run.optimizer.state  # fresh optimizer and schedule
    for name, tensor in first["module"].state_dict().items():
        torch.testing.assert_close(run.module.state_dict()[name], tensor, rtol=0, atol=0)
    assert (tmp_path / "next" / "tokenizer.json").read_bytes() == (tmp_path / "first" / "tokenizer.json").read_bytes()
    summary = train(cfg)
    assert summary["steps"] == 3 and not summary["resumed"]


def test_init_from_refuses_another_shape(tmp_path):
    train(tiny(tmp_path / "first", max_steps=1))
    with pytest.raises(ValueError, match=r"init_from=.*shape differs.*d_model=32"):
        build_run(tiny(tmp_path / "next", d_model=64, max_steps=1, init_from=str(tmp_path / "first")))


def test_init_from_the_shipped_model(tmp_path):
    with pytest.raises(ValueError, match="n_layers=4"):
        build_run(parse_overrides([f"out={tmp_path / 'small'}", "init_from=tiny", "n_layers=2"]))
    run, _ = build_run(parse_overrides([f"out={tmp_path / 'next'}", "init_from=tiny", "n_layers=4", "d_model=128",
                                        "n_heads=4", "max_sequence_length=1280", "progress=false"]))
    shipped = unmask.load("tiny").module.state_dict()
    for name, tensor in run.module.state_dict().items():
        torch.testing.assert_close(tensor, shipped[name], rtol=0, atol=0)
