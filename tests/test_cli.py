"""`unmask generate` on the command line: output, speed line, cache overrides, errors."""

import pytest

from unmask.cli import main, parse_overrides


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


def test_overrides_parse_like_hydra():
    model, cache, gen = parse_overrides(["model.path=/x", "cache=dllm", "cache.kp=50", "cache.rou=0.25",
                                         "generation=vanilla", "generation.gen_length=256", "generation.stop_until_eos=true"])
    assert model == {"path": "/x"}
    assert cache == {"name": "dllm", "kp": 50, "rou": 0.25}
    assert gen == {"gen_length": 256, "stop_until_eos": True}


@pytest.mark.parametrize(
    "args, message",
    [
        (["cache=bogus"], "valid choices"),
        (["cache=dllm", "cache.kq=1"], "valid parameters"),
        (["cache.kp=1"], "without cache="),
        (["generation.bogus=1"], "unknown generation option"),
        (["foo=1"], "unknown override"),
    ],
)
def test_bad_overrides_exit_2_with_message(llada_dir, capsys, args, message):
    code = main(["generate", "a", "--model", str(llada_dir), "generation.gen_length=8", "generation.block_length=8", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_model_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["generate", "a", "--model", str(tmp_path / "nope")]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err
