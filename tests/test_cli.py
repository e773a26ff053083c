"""`unmask generate` on the command line: output, speed line, cache overrides, errors."""

import pytest

from unmask.cli import main


def test_generate_prints_answer_and_speed(llada_dir, capsys):
    code = main(["generate", "a b c", "--model", str(llada_dir), "generation.gen_length=16", "generation.block_length=8"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "tokens/s" in err and "NFE 16" in err


def test_generate_accepts_cache_overrides(llada_dir, capsys):
    code = main(["generate", "a b", "--model", str(llada_dir), "cache=prefix", "cache.use_dual=true",
                 "generation.gen_length=16", "generation.block_length=8", "generation.threshold=0.9"])
    assert code == 0
    assert "cache=prefix" in capsys.readouterr().err


def test_generate_resolves_like_eval(monkeypatch, llada_dir, capsys):
    """model=<name> finds the checkpoint under UNMASK_MODELS_DIR, the device and defaults come from
    resolve_config (task-derived gen_length, instruct block length), and the command line wins."""
    import unmask
    from unmask.config import CHECKPOINT_DIRS, resolve_config

    root = llada_dir.parent / "models-root"
    root.mkdir(exist_ok=True)
    link = root / CHECKPOINT_DIRS["llada-inst"]
    if not link.exists():
        link.symlink_to(llada_dir, target_is_directory=True)
    monkeypatch.setenv("UNMASK_MODELS_DIR", str(root))
    seen = {}
    real = unmask.generate

    def spy(model, **kwargs):
        seen.update(kwargs)
        return real(model, **kwargs)

    monkeypatch.setattr(unmask, "generate", spy)
    args = ["model=llada-inst", "cache=prefix", "generation.steps=8", "generation.gen_length=32"]
    assert main(["generate", "a b", *args]) == 0
    expected = resolve_config(args)
    assert seen["cache"] == expected.cache and seen["cache"]["name"] == "prefix"
    assert {k: seen[k] for k in expected.generation} == expected.generation
    assert seen["block_length"] == 32 and seen["chat"] is True and seen["gen_length"] == 32
    assert "NFE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["cache=bogus"], "valid choices"),
        (["cache=dllm", "cache.kq=1"], "valid keys"),
        (["cache.kp=1"], "cache"),
        (["generation.bogus=1"], "valid keys"),
        (["foo=1"], "foo"),
        (["dataset.limit=3"], "only apply to evaluation runs"),
        (["model=tiny"], "more than once"),  # --model and model= both given
    ],
)
def test_bad_overrides_exit_2_with_message(llada_dir, capsys, args, message):
    code = main(["generate", "a", "--model", str(llada_dir), "generation.gen_length=8", "generation.block_length=8", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_model_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["generate", "a", "--model", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_named_model_without_weights_says_how_to_supply_them(monkeypatch, capsys):
    monkeypatch.delenv("UNMASK_MODELS_DIR", raising=False)
    assert main(["generate", "a", "model=llada-inst"]) == 2
    assert "model.path=" in capsys.readouterr().err
    assert main(["generate", "a", "model=llada-nope"]) == 2
    assert "valid choices" in capsys.readouterr().err
