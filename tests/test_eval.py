"""The evaluation runner: records, metrics, resume, code-execution opt-in, data parallel runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import unmask
from unmask import evaluation, metrics, records
from unmask.config import resolve_config
from unmask.tasks.arith_task import ArithTask
from unmask.tasks.registry import TASKS
from unmask.tasks.sandbox import ENV_OPT_IN

REPO = Path(__file__).resolve().parents[1]
SMALL = ["generation.gen_length=32", "model.device=cpu"]
RESULT_KEYS = ("output", "extracted", "correct", "tokens", "nfe")


@pytest.fixture(scope="module")
def tiny():
    return unmask.load("tiny")


class Interrupted(Exception):
    """Stands in for a kill: raised from inside the run after some samples were recorded."""


class InterruptingArith(ArithTask):
    """The arith task, except that scoring raises once `budget` samples were scored."""

    name = "interrupting_arith"
    budget: int | None = None

    def score(self, sample, output):
        cls = type(self)
        if cls.budget is not None:
            if cls.budget == 0:
                raise Interrupted
            cls.budget -= 1
        return super().score(sample, output)


class CodeArith(ArithTask):
    name = "code_arith"
    executes_code = True


@pytest.fixture
def fake_tasks(monkeypatch):
    monkeypatch.setitem(TASKS, InterruptingArith.name, InterruptingArith)
    monkeypatch.setitem(TASKS, CodeArith.name, CodeArith)
    monkeypatch.setattr(InterruptingArith, "budget", None)
    monkeypatch.delenv(ENV_OPT_IN, raising=False)


def run(overrides: list[str]) -> dict:
    return evaluation.evaluate(resolve_config(overrides), show_progress=False)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- run_samples and metrics ----------------------------------------------------------------------


def test_run_samples_matches_direct_generate_calls(tiny):
    task = ArithTask()
    samples = task.load()[:3]
    generation = resolve_config(SMALL).generation
    seen = []
    recs = evaluation.run_samples(tiny, task, samples, None, generation, batch_size=2, on_record=seen.append)
    assert seen == recs and [r["id"] for r in recs] == [s.id for s in samples]
    assert [r["batch"] for r in recs] == [samples[0].id, samples[0].id, samples[2].id]
    assert [r["batch_size"] for r in recs] == [2, 2, 1]
    # Independent reference: the same batches through unmask.generate, scored by the task.
    options = {k: v for k, v in generation.items() if k != "seed"}
    for batch in (samples[:2], samples[2:]):
        seed = evaluation.batch_seed(generation["seed"], batch[0].id)
        ref = unmask.generate(tiny, prompts=[s.prompt for s in batch], seed=seed, **options)
        for i, sample in enumerate(batch):
            rec = next(r for r in recs if r["id"] == sample.id)
            score = task.score(sample, ref.texts[i])
            assert rec["output"] == ref.texts[i] and rec["tokens"] == ref.answer_tokens[i] and rec["nfe"] == ref.nfe[i]
            assert (rec["extracted"], rec["correct"]) == (score.extracted, score.correct)
            assert rec["prompt"] == sample.prompt
            assert rec["batch_seconds"] >= rec["seconds"] > 0
    assert all(r["peak_memory_mb"] > 10 for r in recs)
    assert all(r["refresh_fraction"] == 1.0 for r in recs)  # no cache: every layer recomputes every row


def test_run_samples_cuts_outputs_at_the_tasks_stop_strings(tiny):
    class Stopped(ArithTask):
        def stop_strings(self):
            return ["=", "####"]

    sample = ArithTask().load()[0]
    generation = resolve_config(SMALL).generation
    (rec,) = evaluation.run_samples(tiny, Stopped(), [sample], None, generation, warmup=False)
    assert rec["output"] == evaluation.cut_at_stops(rec["raw_output"], ["=", "####"])
    assert "=" not in rec["output"] and "####" not in rec["output"]


def test_cut_at_stops():
    assert evaluation.cut_at_stops("a\nQuestion: b\n[DONE] c", ["[DONE]", "Question:"]) == "a\n"
    assert evaluation.cut_at_stops("abc", []) == "abc"
    assert evaluation.cut_at_stops("abc", ["", "x"]) == "abc"


def test_dual_cache_from_the_config_reaches_the_engine(tiny):
    sample = ArithTask().load()[:1]
    fractions = {}
    for dual in ("false", "true"):
        cfg = resolve_config(["cache=prefix", f"cache.use_dual={dual}", "generation.gen_length=64", "generation.block_length=16"])
        (rec,) = evaluation.run_samples(tiny, ArithTask(), sample, cfg.cache, cfg.generation, warmup=False)
        fractions[dual] = rec["row_fraction"]
    assert fractions["true"] < fractions["false"] < 1.0


def test_summarize_counts_each_batch_once():
    def rec(i, batch, correct, tokens, nfe, seconds, batch_seconds, peak, refresh):
        return dict(id=str(i), batch=batch, correct=correct, tokens=tokens, nfe=nfe, seconds=seconds,
                    batch_seconds=batch_seconds, peak_memory_mb=peak, refresh_fraction=refresh, row_fraction=refresh / 2)

    recs = [
        rec(0, "0", True, 10, 5, 1.0, 2.0, 100.0, 0.5),
        rec(1, "0", False, 20, 5, 2.0, 2.0, 120.0, 0.5),
        rec(2, "2", True, 30, 10, 3.0, 3.0, 90.0, 0.25),
    ]
    s = metrics.summarize(recs)
    assert s["samples"] == 3 and s["accuracy"] == pytest.approx(2 / 3)
    assert s["answer_tokens"] == 60 and s["generation_seconds"] == pytest.approx(5.0)
    assert s["tokens_per_second"] == pytest.approx(12.0)  # 60 tokens / (2 s + 3 s)
    assert s["latency_seconds"] == pytest.approx(2.0)
    assert s["nfe"] == pytest.approx(20 / 3) and s["tokens_per_forward"] == pytest.approx(3.0)
    assert s["peak_memory_mb"] == 120.0
    assert s["refresh_fraction"] == pytest.approx(0.375) and s["row_fraction"] == pytest.approx(0.1875)
    assert metrics.summarize([])["samples"] == 0 and metrics.summarize([])["accuracy"] is None
    assert metrics.progress_postfix(recs) == {"acc": "66.7%", "tok/s": "12.0"}
    table = metrics.format_table({"task": "arith", **s}, title="t")
    assert "accuracy (%)" in table and "66.67" in table and "| task" in table


def test_peak_memory_is_the_process_peak_on_cpu():
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert metrics.peak_memory_mb("cpu") == pytest.approx(rss, rel=0.05)


# -- the runner: records, summary, resume -----------------------------------------------------------


def test_evaluate_writes_config_records_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    summary = run(SMALL + ["dataset.limit=3", f"output_dir={out}"])
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "config.yaml", "samples.jsonl", "summary.json"]
    recs = lines(out / "samples.jsonl")
    assert [r["id"] for r in recs] == [s.id for s in ArithTask().load()[:3]]
    for key in ("id", "prompt", "output", "extracted", "correct", "tokens", "nfe", "seconds"):
        assert all(key in r for r in recs), key
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary == {
        "task": "arith", "model": "tiny", "cache": "null", **metrics.summarize(recs), "num_processes": 1, "output_dir": str(out)
    }
    config = json.loads((out / "config.json").read_text())
    assert config["generation"]["gen_length"] == 32 and config["output_dir"] == str(out)
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text()) == config
    printed = capsys.readouterr().out
    assert "accuracy (%)" in printed and "tokens_per_second" in printed


def test_default_output_dir_is_stable_and_config_specific():
    a = resolve_config(["cache=prefix", "cache.use_dual=true"]).to_dict()
    b = resolve_config(["cache=prefix", "cache.use_dual=true", "dataset.limit=5"]).to_dict()
    c = resolve_config(["cache=prefix", "cache.use_dual=true", "generation.gen_length=64"]).to_dict()
    assert records.default_output_dir(a) == records.default_output_dir(b)  # the limit does not change results
    assert records.default_output_dir(a) != records.default_output_dir(c)
    assert records.default_output_dir(a).startswith(os.path.join("outputs", "arith", "tiny", "prefix-dual", "gen256-"))


def test_larger_limit_resumes_without_redoing_samples(tmp_path):
    out = tmp_path / "run"
    run(SMALL + ["dataset.limit=2", f"output_dir={out}"])
    first = lines(out / "samples.jsonl")
    summary = run(SMALL + ["dataset.limit=4", f"output_dir={out}"])
    recs = lines(out / "samples.jsonl")
    assert [r["id"] for r in recs] == [s.id for s in ArithTask().load()[:4]]
    assert recs[:2] == first  # untouched, timings included: not re-run
    assert summary["samples"] == 4
    smaller = run(SMALL + ["dataset.limit=1", f"output_dir={out}"])  # a smaller limit summarizes its own samples
    assert smaller["samples"] == 1 and len(lines(out / "samples.jsonl")) == 4


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, fake_tasks):
    args = SMALL + ["dataset.name=interrupting_arith", "dataset.limit=5"]
    full = run(args + [f"output_dir={tmp_path / 'full'}"])
    out = tmp_path / "cut"
    InterruptingArith.budget = 2
    with pytest.raises(Interrupted):
        run(args + [f"output_dir={out}"])
    assert len(lines(out / "samples.jsonl")) == 2 and not (out / "summary.json").exists()
    with open(out / "samples.jsonl", "a") as f:  # a record torn by the kill
        f.write('{"id": "eval-0002", "prompt": "Eli')
    InterruptingArith.budget = None
    resumed = run(args + [f"output_dir={out}"])
    recs = lines(out / "samples.jsonl")
    reference = lines(tmp_path / "full" / "samples.jsonl")
    assert [r["id"] for r in recs] == [r["id"] for r in reference]  # each sample exactly once, in order
    for got, want in zip(recs, reference):
        assert {k: got[k] for k in RESULT_KEYS} == {k: want[k] for k in RESULT_KEYS}
    same = ("samples", "accuracy", "nfe", "answer_tokens", "tokens_per_forward", "refresh_fraction", "row_fraction")
    assert {k: resumed[k] for k in same} == {k: full[k] for k in same}


def _rec(sid: str, **extra) -> dict:
    """A record with every key resume and the summary read."""
    return {"id": sid, "prompt": f"p{sid}", "correct": True, "tokens": 1, "nfe": 1, "seconds": 0.1, "batch": sid,
            "peak_memory_mb": 1.0, **extra}


def _jsonl(*recs: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in recs)


def test_records_reader_repairs_only_a_torn_last_line(tmp_path):
    a, b, c, d = _rec("a", v=1), _rec("b", v=2), _rec("c", v=4), _rec("d", v=5)
    (tmp_path / "samples.jsonl").write_text(_jsonl(a, b) + "\n" + _jsonl(a))  # a blank line, an exact duplicate
    (tmp_path / "samples.rank1.jsonl").write_text(_jsonl(c, {**b, "rank": 1}) + json.dumps(d)[:-9])  # torn by a kill
    merged = records.consolidate(tmp_path, order=["d", "c", "b", "a"])
    assert list(merged) == ["c", "b", "a"]
    assert [r["v"] for r in merged.values()] == [4, 2, 1]
    assert [r["id"] for r in lines(tmp_path / "samples.jsonl")] == ["c", "b", "a"]
    assert not list(tmp_path.glob("samples.rank*.jsonl"))
    torn = tmp_path / "torn.jsonl"
    torn.write_text(_jsonl(a) + '{"id": "b", "x')
    with records.RecordWriter(torn) as w:
        w.write(c)
    assert lines(torn) == [a, c]
    whole = tmp_path / "whole.jsonl"  # a finished record that only lacks its newline is kept
    whole.write_text(_jsonl(a) + json.dumps(b))
    assert records.parse_lines(whole) == [a, b]
    with records.RecordWriter(whole) as w:
        w.write(c)
    assert lines(whole) == [a, b, c]


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "a JSON list"),
        (json.dumps({**_rec("x"), "id": 7}), "id 7 is not a string"),
        (json.dumps({k: v for k, v in _rec("x").items() if k != "correct"}), "without ['correct']"),
    ],
)
def test_resume_stops_at_a_bad_line_and_keeps_the_file(tmp_path, bad, problem):
    """A bad line anywhere but a torn tail stops the run, naming file and line; nothing is rewritten."""
    out = tmp_path / "run"
    run(SMALL + ["dataset.limit=3", f"output_dir={out}"])
    samples = out / "samples.jsonl"
    good = samples.read_text().splitlines(keepends=True)
    for where in (1, 3):  # in the middle, and as a complete (newline-terminated) last line
        text = "".join(good[:where] + [bad + "\n"] + good[where:])
        samples.write_text(text)
        with pytest.raises(ValueError, match=rf"{re.escape(str(samples))}:{where + 1}: .*{re.escape(problem)}"):
            run(SMALL + ["dataset.limit=4", f"output_dir={out}"])
        assert samples.read_text() == text  # nothing dropped or rewritten
    rank = out / "samples.rank1.jsonl"  # the same in a per-process file
    samples.write_text("".join(good))
    rank.write_text(bad + "\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(rank))}:1: "):
        run(SMALL + ["dataset.limit=3", f"output_dir={out}"])
    assert rank.read_text() == bad + "\n" and samples.read_text() == "".join(good)


def test_resume_refuses_two_different_records_of_one_sample(tmp_path):
    out = tmp_path / "run"
    run(SMALL + ["dataset.limit=2", f"output_dir={out}"])
    samples = out / "samples.jsonl"
    first = lines(samples)[0]
    (out / "samples.rank1.jsonl").write_text(json.dumps({**first, "output": "other"}) + "\n")
    with pytest.raises(ValueError, match=r"samples.rank1.jsonl: holds a record of eval-0000 that differs"):
        run(SMALL + ["dataset.limit=2", f"output_dir={out}"])
    assert (out / "samples.rank1.jsonl").exists()


def test_leftover_rank_files_are_merged_and_skipped(tmp_path):
    out = tmp_path / "run"
    run(SMALL + ["dataset.limit=2", f"output_dir={out}"])
    recs = lines(out / "samples.jsonl")
    # As if a 2-process run had recorded sample 3 on rank 1 before being stopped.
    third = ArithTask().load()[2]
    extra = {**recs[1], "id": third.id, "prompt": third.prompt, "output": "from rank 1"}
    (out / "samples.rank1.jsonl").write_text(json.dumps(extra) + "\n")
    run(SMALL + ["dataset.limit=3", f"output_dir={out}"])
    final = lines(out / "samples.jsonl")
    assert [r["id"] for r in final] == [s.id for s in ArithTask().load()[:3]]
    assert final[2]["output"] == "from rank 1"
    assert not list(out.glob("samples.rank*.jsonl"))


def test_resume_refuses_a_directory_with_another_config(tmp_path):
    out = tmp_path / "run"
    run(SMALL + ["dataset.limit=1", f"output_dir={out}"])
    with pytest.raises(ValueError, match=r"generation.gen_length: 32 -> 64.*generation.steps: 32 -> 64"):
        run(["generation.gen_length=64", "model.device=cpu", "dataset.limit=1", f"output_dir={out}"])
    with pytest.raises(ValueError, match=r"cache: None -> .*cache.name: '<unset>' -> 'prefix'"):
        run(SMALL + ["cache=prefix", "dataset.limit=1", f"output_dir={out}"])
    assert run(SMALL + ["dataset.limit=2", f"output_dir={out}"])["samples"] == 2  # limit is result-neutral


def test_records_of_other_weights_or_other_prompts_are_not_resumed(tmp_path):
    """A checkpoint retrained in place, or a dataset changed under the same ids, must not reuse old records."""
    import shutil

    from safetensors.torch import load_file, save_file

    from unmask.models.checkpoint import resolve_path

    ckpt = tmp_path / "ckpt"
    shutil.copytree(resolve_path("tiny"), ckpt)
    args = SMALL + [f"model.path={ckpt}", "dataset.limit=1"]
    out = tmp_path / "run"
    run(args + [f"output_dir={out}"])
    first_default = records.default_output_dir(json.loads((out / "config.json").read_text()))
    tensors = load_file(ckpt / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * 1.01  # "retrained": same names, shapes and file size
    save_file(tensors, ckpt / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model.fingerprint: '[0-9a-f]{16}' -> '[0-9a-f]{16}'"):
        run(args + [f"output_dir={out}"])
    # Without output_dir= the new weights get a directory of their own.
    summary = run(args + [f"output_dir={tmp_path / 'new'}"])
    assert records.default_output_dir(json.loads((tmp_path / "new" / "config.json").read_text())) != first_default
    assert summary["samples"] == 1

    stale = tmp_path / "stale"
    run(SMALL + ["dataset.limit=2", f"output_dir={stale}"])
    recs = lines(stale / "samples.jsonl")
    recs[1]["prompt"] = "Eli owns 25 marbles. He finds 97 more marbles."
    (stale / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(ValueError, match=r"record of eval-0001 made for another prompt"):
        run(SMALL + ["dataset.limit=2", f"output_dir={stale}"])


# -- main(): errors before loading, code-execution opt-in ---------------------------------------------


def test_main_reports_config_errors_before_loading_anything(monkeypatch, capsys, tmp_path):
    def boom(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(evaluation, "load_model", boom)
    assert evaluation.main(["cache=dllm", "cache.kq=1"]) == 2
    assert "unmask eval: error: unknown key 'cache.kq'; valid keys" in capsys.readouterr().err
    assert evaluation.main(["model=llada-base", f"output_dir={tmp_path / 'x'}"]) == 2
    assert "model.path=/dir/of/LLaDA-8B-Base" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert evaluation.main(["--help"]) == 0 and "usage: unmask eval" in capsys.readouterr().out


def test_code_execution_needs_an_opt_in(fake_tasks, monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    base = SMALL + ["dataset.name=code_arith", "dataset.limit=1", f"output_dir={out}"]
    assert evaluation.main(base) == 2
    err = capsys.readouterr().err
    assert "allow_code_execution=true" in err and "UNMASK_ALLOW_CODE_EXECUTION=1" in err
    assert not out.exists()
    assert evaluation.main(base + ["allow_code_execution=true"]) == 0
    monkeypatch.setenv(ENV_OPT_IN, "1")
    assert evaluation.main(base) == 0  # resumes (allow_code_execution is result-neutral)
    assert len(lines(out / "samples.jsonl")) == 1


# -- real entry points as subprocesses -----------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env.pop("UNMASK_ALLOW_CODE_EXECUTION", None)
    return env


def test_python_eval_py_runs_the_bundled_task(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "eval.py", "dataset.limit=2", "generation.gen_length=32", f"output_dir={out}"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 2 and summary["num_processes"] == 1
    assert "tokens_per_second" in proc.stdout
    bad = subprocess.run([sys.executable, "eval.py", "cache=bogus"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "valid choices" in bad.stderr


def test_accelerate_launch_two_processes_shards_and_merges(tmp_path):
    out = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    # accelerate runs several CPU processes through its torchrun path (--multi_gpu) when no GPU is
    # visible; unmask then joins a gloo group (`--cpu` alone would start one process).
    cmd = [
        str(accelerate), "launch", "--num_machines", "1", "--num_processes", "2", "--multi_gpu",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
        "eval.py", "dataset.limit=4", "generation.gen_length=32", "batch_size=1", f"output_dir={out}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = lines(out / "samples.jsonl")
    assert [r["id"] for r in recs] == [s.id for s in ArithTask().load()[:4]]
    assert sorted(r["rank"] for r in recs) == [0, 0, 1, 1]
    assert not list(out.glob("samples.rank*.jsonl"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["samples"] == 4
    for key in metrics.SUMMARY_FIELDS:
        assert summary[key] is not None, key
    assert summary["accuracy"] == sum(r["correct"] for r in recs) / 4
    assert summary["answer_tokens"] == sum(r["tokens"] for r in recs)
    assert proc.stdout.count("accuracy (%)") == 1  # one table, from process 0
    # The same greedy decoding on one process gives the same outputs.
    single = tmp_path / "single"
    run(SMALL + ["dataset.limit=4", f"output_dir={single}"])
    assert [{k: r[k] for k in RESULT_KEYS} for r in lines(single / "samples.jsonl")] == [{k: r[k] for k in RESULT_KEYS} for r in recs]


def test_killed_process_resumes_with_each_sample_once(tmp_path):
    """A real SIGKILL mid-run, then the same command again."""
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "eval.py", "dataset.limit=10", "generation.gen_length=32", f"output_dir={out}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = out / "samples.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_text().count("\n") >= 2:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    done_before = len(records.parse_lines(samples))
    assert 2 <= done_before < 10 and not (out / "summary.json").exists()
    again = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"{done_before} already done" in again.stderr
    ids = [r["id"] for r in lines(samples)]
    assert ids == [s.id for s in ArithTask().load()[:10]]
    assert json.loads((out / "summary.json").read_text())["samples"] == 10


def test_single_process_accelerate_launch_without_gpus_is_pointed_out(monkeypatch, capsys):
    """accelerate's simple launcher (no GPUs, no hostfile) runs one process whatever --num_processes
    says; the runner says how to get several instead of silently running unsharded."""
    from unmask import evaluation

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    evaluation._warn_single_cpu_launch(1)
    assert "--multi_gpu --num_processes N" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # a real multi-process launch: nothing to say
    evaluation._warn_single_cpu_launch(1)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("ACCELERATE_USE_CPU")  # plain `python eval.py`: nothing to say
    evaluation._warn_single_cpu_launch(1)
    assert capsys.readouterr().err == ""


def test_progress_shows_loading_and_the_warm_up_before_the_first_sample(tmp_path, capsys):
    evaluation.evaluate(resolve_config(SMALL + ["dataset.limit=2", f"output_dir={tmp_path / 'run'}"]), show_progress=True)
    err = capsys.readouterr().err
    loading, warming, first = err.find("arith: loading the model"), err.find("arith: warming up"), err.find("1/2")
    assert 0 <= loading < warming < first, err
