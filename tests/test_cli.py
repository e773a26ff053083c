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


# -- start-up: help without torch, the CPU thread policy -------------------------------------------

import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from unmask import threads  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(args: list[str], **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", threads.ENV)}
    base["PYTHONPATH"] = SRC + os.pathsep + base.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], env={**base, **env}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["eval", "--help"], ["bench", "--help"], ["serve", "--help"]])
def test_help_answers_without_importing_torch(argv):
    proc = _python(["-X", "importtime", "-m", "unmask", *argv])
    assert proc.returncode == 0, proc.stderr
    assert "usage: unmask" in proc.stdout
    imported = re.findall(r"\|\s+(\S+)\s*$", proc.stderr, re.M)
    assert "unmask.cli" in imported and "torch" not in imported


def test_thread_policy_choice():
    idle, busy = dict(load=0.1, cores=16), dict(load=4.2, cores=2)
    assert threads.choose_threads({}, **idle) == 16
    assert threads.choose_threads({}, load=5.6, cores=16) == 10  # the cores others use are left to them
    assert threads.choose_threads({}, **busy) == 1
    assert threads.choose_threads({"LOCAL_WORLD_SIZE": "4"}, **idle) == 4  # a launch's processes share the cores
    assert threads.choose_threads({threads.ENV: "3"}, **busy) == 3  # explicit wins
    assert threads.choose_threads({"OMP_NUM_THREADS": "2"}, **busy) is None  # the user's OpenMP setting is kept
    with pytest.raises(ValueError, match=threads.ENV):
        threads.choose_threads({threads.ENV: "zero"}, **idle)
    assert threads.machine_busy(load=1.2) and not threads.machine_busy(load=0.3)


def test_thread_policy_is_applied_before_torch_loads():
    code = (
        "import os; from unmask import threads; threads.machine_busy = lambda: True; n = threads.apply_policy(); "
        "print(n, os.environ['OMP_WAIT_POLICY'])"
    )
    assert _python(["-c", code], UNMASK_NUM_THREADS="1").stdout.split() == ["1", "PASSIVE"]
    idle = "import os; from unmask import threads; threads.machine_busy = lambda: False; threads.apply_policy(); "
    idle += "print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    assert _python(["-c", idle], UNMASK_NUM_THREADS="1").stdout.split() == ["unset"]  # spinning is faster when idle
    assert _python(["-c", code], UNMASK_NUM_THREADS="2", OMP_WAIT_POLICY="ACTIVE").stdout.split() == ["2", "ACTIVE"]


def test_commands_apply_the_thread_policy(monkeypatch, llada_dir, capsys):
    from unmask import evaluation

    calls = []
    monkeypatch.setattr(threads, "apply_policy", lambda: calls.append(1) or 1)
    assert main(["generate", "a b", "--model", str(llada_dir), "generation.gen_length=8", "generation.block_length=8"]) == 0
    assert evaluation.main(["cache=bogus"]) == 2
    assert len(calls) == 2
