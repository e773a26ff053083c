"""`harness=lm-eval`: lm-evaluation-harness's task definitions inside `unmask eval`.

The task's YAML (located through lm-eval's TaskManager; MATH-500 is unmask's own YAML in
`lmeval/tasks/math500`, as the seed framework ships its own) is turned into lm-eval's
ConfigurableTask, which renders every prompt the way `lm_eval` renders it for one process
(doc_to_text, few-shot sampler seeded with simple_evaluate's default 1234, delimiters) and scores
an output with the task's own filters and metrics. unmask keeps the records, resume, sharding,
timing and summary around it. Three things are unmask's:

- Data: rows come from `dataset.path` or the `datasets` cache read offline (unmask.tasks.loading),
  and reach lm-eval as the task's `custom_dataset`, so lm-eval never downloads anything.
- Code: lm-eval's humaneval / mbpp metrics call Hugging Face `evaluate`'s `code_eval`, which fetches
  the metric from the hub and exec()s the program in a forked process with only a "reliability
  guard". Those YAMLs are read without importing their `utils.py`; the metric becomes a run of
  the same program (`prediction + "\\n" + doc_to_target`, 3 s as in code_eval) in unmask's
  sandbox after the opt-in, and the two helpers they name (humaneval's prompt + completion,
  mbpp's three few-shot problems = task ids 2-4 of the prompt split) are restated from the data.
- Generation: the task's `until` strings are the stop strings; the canvas length and the chat
  template stay unmask's per-task defaults (generation.gen_length, generation.chat).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Callable, ClassVar

from ..tasks import loading
from ..tasks.base import Sample, Score, Task

HARNESSES = ("unmask", "lm-eval")
DEFAULT_HARNESS = "unmask"
FEWSHOT_SEED = 1234  # lm_eval.simple_evaluate's default fewshot_random_seed
UNMASK_TASK_DIR = Path(__file__).resolve().parent / "tasks"


class LmEvalUnavailable(ValueError):
    """harness=lm-eval without the lm-eval package (a config error: the run cannot start)."""


def require_lm_eval() -> None:
    """Fail before anything loads when lm-eval is not installed (`import lm_eval` itself is cheap)."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        raise LmEvalUnavailable(f"harness=lm-eval needs lm-evaluation-harness (pip install 'unmask[lm-eval]'): {exc}") from None


def _lm_eval_tasks_dir() -> Path:
    require_lm_eval()
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def task_manager(lm_eval_dirs: tuple[str, ...] = ("gsm8k", "humaneval", "mbpp")):
    """lm-eval's TaskManager over the task folders this harness uses plus unmask's own YAMLs
    (indexing all of lm-eval's thousands of YAMLs would take seconds for nothing)."""
    from lm_eval.tasks import TaskManager

    base = _lm_eval_tasks_dir()
    return TaskManager(include_defaults=False, include_path=[str(base / d) for d in lm_eval_dirs] + [str(UNMASK_TASK_DIR)])


# -- the replacements for the code tasks' utils.py functions ----------------------------------


def humaneval_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """humaneval's `build_predictions`: the program is the problem's prompt followed by the completion."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


class SandboxMetric:
    """A task's `process_results` for code: judges `prediction + "\\n" + doc_to_target(doc)` (the
    program code_eval builds) in unmask's sandbox, refusing without the opt-in. `last_verdict`
    is the sandbox's word on the latest program (for the record's detail)."""

    def __init__(self, metric: str, target: Callable[[dict], str], *, timeout: float, memory_mb: int, allow: bool) -> None:
        self.metric = metric
        self.target = target
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.allow = allow
        self.last_verdict: str | None = None

    def __call__(self, doc: dict, results: list) -> dict[str, float]:
        from ..tasks import sandbox

        sandbox.require_opt_in(self.allow)
        prediction = results[0]
        if isinstance(prediction, list):  # a filter that keeps the list of repeats (humaneval's)
            prediction = prediction[0]
        verdict = sandbox.run_program(f"{prediction}\n{self.target(doc)}", timeout=self.timeout, memory_mb=self.memory_mb)
        self.last_verdict = verdict.summary
        return {self.metric: 1.0 if verdict.passed else 0.0}


def _function_name(ref: Any) -> str | None:
    """`<yaml dir>/utils.pass_at_1` (how lm-eval's loader spells an unresolved `!function`) ->
    `mbpp/utils.pass_at_1`; None for anything else (a Jinja template, a plain value)."""
    if not isinstance(ref, str) or "\n" in ref or not ref.startswith("/") or not Path(ref).parent.is_dir():
        return None
    return "/".join(Path(ref).parts[-2:])


CODE_METRICS = {"humaneval/utils.pass_at_k": "pass_at_k", "mbpp/utils.pass_at_1": "pass_at_1"}


# -- the tasks --------------------------------------------------------------------------------


class LmEvalTask(Task):
    """One unmask task backed by an lm-eval task definition; subclasses name the task and its data."""

    lm_eval_task: ClassVar[str] = ""  # the task's name in lm-eval's TaskManager (unmask's own YAMLs included)
    native: ClassVar[type[Task]]  # unmask's own task for the same benchmark (generation defaults, sandbox limits)
    timeout_s: ClassVar[float] = 3.0  # code_eval's default, which lm-eval's code metrics use
    memory_mb: ClassVar[int] = 1024

    def __init__(
        self,
        n_shot: int | None = None,
        path: str | None = None,
        split: str | None = None,
        *,
        allow_code_execution: bool = False,
        manager: Any = None,
    ) -> None:
        self.path = path
        self.split = split
        self.allow_code_execution = allow_code_execution
        self._manager = manager
        self._sandbox: SandboxMetric | None = None
        self.config = self._resolve_config(self._yaml_config())
        if n_shot is not None:
            if int(n_shot) < 0:
                raise ValueError(f"dataset.n_shot must be >= 0, got {n_shot}")
            self.config["num_fewshot"] = int(n_shot)
        self.n_shot = int(self.config.get("num_fewshot") or 0)
        if split is not None:
            loading.check_file_split(path, split)
            self.config["test_split"] = split
        self._check_shots()
        self._task = None
        self._instances: dict[str, Any] = {}

    # -- config --------------------------------------------------------------------------------

    def _yaml_config(self) -> dict:
        """The task's YAML (includes merged), function references left as paths: importing
        lm-eval's code-task utils.py would fetch and run HF evaluate's code_eval."""
        from lm_eval.tasks._yaml_loader import load_yaml

        manager = self._manager if self._manager is not None else task_manager()
        entry = manager.task_index.get(self.lm_eval_task)
        if entry is None or entry.yaml_path is None:
            raise ValueError(f"lm-eval has no task {self.lm_eval_task!r} (needed for dataset.name={self.name} harness=lm-eval)")
        cfg = copy.deepcopy(load_yaml(entry.yaml_path, resolve_func=False))
        for key in ("tag", "group", "task_list"):
            cfg.pop(key, None)
        cfg["metadata"] = {**(cfg.get("metadata") or {}), "config_source": str(entry.yaml_path)}
        return cfg

    def _resolve_config(self, cfg: dict) -> dict:
        """Resolve each function reference: unmask's own YAMLs import theirs; the code tasks'
        are replaced (see the module docstring); anything else is refused by name."""
        from lm_eval.tasks._yaml_loader import _import_fun_from_str

        def resolve(ref: str, key: str) -> Any:
            if Path(ref).resolve().is_relative_to(UNMASK_TASK_DIR):
                return _import_fun_from_str(ref)
            raise ValueError(
                f"harness=lm-eval: {self.lm_eval_task}'s YAML names the function {_function_name(ref)} ({key}), "
                "which unmask does not run (it could download data or execute code outside the sandbox)"
            )

        for key in ("process_docs", "doc_to_text", "doc_to_target", "process_results"):
            if _function_name(cfg.get(key)) is not None:
                cfg[key] = resolve(cfg[key], key)
        code_metric = None
        metrics = []
        for metric in cfg.get("metric_list") or []:
            name = _function_name(metric.get("metric"))
            if name in CODE_METRICS:
                code_metric = CODE_METRICS[name]
                metric = {**metric, "metric": code_metric}
                metric.pop("k", None)
            elif name is not None:
                metric = {**metric, "metric": resolve(metric["metric"], "metric_list")}
            metrics.append(metric)
        if metrics:
            cfg["metric_list"] = metrics
        if code_metric is not None:
            cfg["process_results"] = self._code_results(code_metric)
        filters = []
        for entry in cfg.get("filter_list") or []:
            steps = []
            for step in entry["filter"]:
                fn = _function_name(step.get("filter_fn"))
                if fn == "humaneval/utils.build_predictions":
                    step = {**step, "filter_fn": humaneval_predictions}
                elif fn is not None:
                    step = {**step, "filter_fn": resolve(step["filter_fn"], "filter_list")}
                steps.append(step)
            filters.append({**entry, "filter": steps})
        if filters:
            cfg["filter_list"] = filters
        shots = cfg.get("fewshot_config") or {}
        ref = _function_name(shots.get("samples"))
        if ref == "mbpp/utils.list_fewshot_samples":
            cfg["fewshot_config"] = {**shots, "samples": self._mbpp_shots}
        elif ref is not None:
            cfg["fewshot_config"] = {**shots, "samples": resolve(shots["samples"], "fewshot_config.samples")}
        return cfg

    def _code_results(self, metric: str) -> SandboxMetric:
        self._sandbox = SandboxMetric(
            metric, lambda doc: self.build().doc_to_target(doc),
            timeout=self.timeout_s, memory_mb=self.memory_mb, allow=self.allow_code_execution,
        )
        return self._sandbox

    def _check_shots(self) -> None:
        if self.n_shot and self.lm_eval_task == "mbpp" and self.n_shot > 3:
            raise ValueError(f"{self.name}: dataset.n_shot={self.n_shot} but lm-eval's mbpp has 3 few-shot problems (use 0..3)")

    # -- data ----------------------------------------------------------------------------------

    def rows(self, split: str, evaluated: bool) -> list[dict]:
        """Raw rows of one split, from dataset.path or the datasets cache (never downloaded)."""
        raise NotImplementedError

    def _mbpp_shots(self) -> list[dict]:
        raise NotImplementedError

    def _dataset(self, **_: Any) -> dict:
        """lm-eval's `custom_dataset`: the splits the task will read, as in-memory Datasets."""
        import datasets

        cfg = self.config
        wanted = {cfg.get("test_split") or cfg.get("validation_split")}
        if self.n_shot > 0:
            wanted |= {cfg.get("fewshot_split") or cfg.get("training_split")}
        out = {}
        for split in sorted(s for s in wanted if s):
            rows = self.rows(split, evaluated=split == wanted_eval(cfg))
            if not rows:
                raise loading.DatasetUnavailable(f"{self.name}: the {split!r} split has no rows")
            keys = list(dict.fromkeys(k for row in rows for k in row))  # from_list keeps only the first row's keys
            out[split] = datasets.Dataset.from_list([{k: row.get(k) for k in keys} for row in rows])
        return out

    def build(self) -> Any:
        """lm-eval's ConfigurableTask for this run (data loaded; built once)."""
        if self._task is None:
            from lm_eval.api.task import ConfigurableTask

            cfg = dict(self.config)
            cfg.pop("dataset_kwargs", None)
            cfg["custom_dataset"] = self._dataset
            if self.n_shot == 0:  # no few-shot split to read (lm-eval reads it when it builds the task)
                cfg["fewshot_split"] = cfg["training_split"] = cfg["validation_split"] = None
                if (cfg.get("fewshot_config") or {}).get("samples") is not None:
                    cfg["fewshot_config"] = {**cfg["fewshot_config"], "samples": []}
            quiet = logging.getLogger("lm_eval.api.task")  # its custom_dataset notice is about lm_eval's CLI
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                self._task = ConfigurableTask(config=cfg)
            finally:
                quiet.setLevel(level)
        return self._task

    # -- the Task interface --------------------------------------------------------------------

    def load(self) -> list[Sample]:
        """Every document of the evaluated split with the prompt lm-eval renders for it in a
        one-process run (its sampler draws the few-shot examples document after document)."""
        task = self.build()
        task.set_fewshot_seed(FEWSHOT_SEED)
        task.build_all_requests(rank=0, world_size=1)
        samples = []
        self._instances = {}
        split = wanted_eval(self.config)
        for inst in task.instances:
            context = inst.arguments[0]
            sample_id = doc_id(self.name, inst.doc, inst.doc_id, split)
            self._instances[sample_id] = inst
            samples.append(Sample(id=sample_id, prompt=context, reference=inst.doc, meta={"doc_id": inst.doc_id}))
        return samples

    def stop_strings(self) -> list[str]:
        return list((self.config.get("generation_kwargs") or {}).get("until") or [])

    def score(self, sample: Sample, output: str) -> Score:
        """Every filter of the task, then its metrics, on one output; `correct` is the first
        filter's first metric (gsm8k: strict-match exact_match), all of them are in `metrics`."""
        task = self.build()
        inst = copy.copy(self._instances[sample.id])
        inst.resps = [output]
        inst.filtered_resps = {}
        values: dict[str, float] = {}
        first: tuple[Any, float] | None = None
        details = []
        for ensemble in task._filters:  # lm-eval keeps its filter pipelines here (apply_filters reads them)
            ensemble.apply([inst])
            filtered = inst.filtered_resps[ensemble.name]
            result = task.process_results(inst.doc, [filtered])
            for metric, value in result.items():
                values[f"{ensemble.name}/{metric}"] = float(value)
                if first is None:
                    first = (filtered, float(value))
            verdict = self._sandbox.last_verdict if self._sandbox is not None else None
            details.append(f"{ensemble.name}={_short(filtered)}" + (f" ({verdict})" if verdict else ""))
        if first is None:
            raise RuntimeError(f"{self.name}: lm-eval's task reported no metric")
        extracted, main = first
        if isinstance(extracted, list):
            extracted = extracted[0] if extracted else ""
        return Score(extracted=str(extracted), correct=main >= 1.0, detail="; ".join(details), metrics=values)


def _short(value: Any, limit: int = 60) -> str:
    text = value[0] if isinstance(value, list) and value else value
    text = str(text).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def wanted_eval(cfg: dict) -> str:
    """The evaluated split: lm-eval evaluates test_split, else validation_split."""
    split = cfg.get("test_split") or cfg.get("validation_split")
    if not split:
        raise ValueError(f"lm-eval task {cfg.get('task')!r} has neither test_split nor validation_split")
    return split


def doc_id(task: str, doc: dict, index: int, split: str) -> str:
    """The sample id unmask's own task gives the same document (records key on it)."""
    for key in ("task_id", "unique_id", "id"):
        if doc.get(key) is not None:
            return str(doc[key])
    return f"{task}-{split}-{index}"


class LmEvalGSM8K(LmEvalTask):
    from ..tasks.gsm8k import GSM8KTask as native

    name = "gsm8k"
    lm_eval_task = "gsm8k"
    default_gen_length = native.default_gen_length
    use_chat_template = native.use_chat_template

    def rows(self, split: str, evaluated: bool) -> list[dict]:
        from ..tasks import gsm8k

        return loading.load_split(self.name, gsm8k.HUB, self.path, split, gsm8k.FIELDS, evaluated=evaluated)


class LmEvalMath500(LmEvalTask):
    from ..tasks.math500 import Math500Task as native

    name = "math-500"
    lm_eval_task = "unmask_math500"
    default_gen_length = native.default_gen_length
    use_chat_template = True  # a zero-shot instruction (the seed framework's prompt), not a completion

    def rows(self, split: str, evaluated: bool) -> list[dict]:
        from ..tasks import math500

        return loading.load_split(self.name, math500.HUB, self.path, split, math500.FIELDS, evaluated=evaluated)


class LmEvalHumanEval(LmEvalTask):
    from ..tasks.humaneval import HumanEvalTask as native

    name = "humaneval"
    lm_eval_task = "humaneval"
    default_gen_length = native.default_gen_length
    use_chat_template = native.use_chat_template
    executes_code = True
    memory_mb = native.memory_mb

    def rows(self, split: str, evaluated: bool) -> list[dict]:
        from ..tasks.humaneval import load_problems

        if split != "test":
            raise ValueError(f"{self.name} has only the 'test' split, got {split!r}")
        return load_problems(self.path)


class LmEvalMBPP(LmEvalTask):
    from ..tasks.mbpp import MBPPTask as native

    name = "mbpp"
    lm_eval_task = "mbpp"
    default_gen_length = native.default_gen_length
    use_chat_template = native.use_chat_template
    executes_code = True
    memory_mb = native.memory_mb

    def rows(self, split: str, evaluated: bool) -> list[dict]:
        """A split's rows; the original single mbpp.jsonl (all splits) is cut by task id."""
        from ..tasks import mbpp

        if self.path is not None and Path(self.path).expanduser().is_file():
            every = loading.read_records(Path(self.path).expanduser())
            spans = {name for name, ids in mbpp.SPLIT_IDS.items() for r in every if int(r.get("task_id", -1)) in ids}
            if len(spans) > 1:
                if split not in mbpp.SPLIT_IDS:
                    raise ValueError(f"{self.name}: dataset.split must be one of {', '.join(mbpp.SPLIT_IDS)}, got {split!r}")
                return [r for r in every if int(r["task_id"]) in mbpp.SPLIT_IDS[split]]
        return loading.load_split(self.name, mbpp.HUB, self.path, split, mbpp.FIELDS, evaluated=evaluated)

    def _mbpp_shots(self) -> list[dict]:
        """lm-eval's mbpp few-shot list: problems 2, 3, 4 of the prompt split, verbatim, marked few-shot."""
        by_id = {int(r["task_id"]): r for r in self.rows("prompt", evaluated=False)}
        missing = [i for i in (2, 3, 4) if i not in by_id]
        if missing:
            raise loading.DatasetUnavailable(f"{self.name}: few-shot task ids {missing} are not in the prompt split")
        return [{**{k: by_id[i][k] for k in ("task_id", "text", "code", "test_list")}, "is_fewshot": True} for i in (2, 3, 4)]


def metric_means(recs: list[dict]) -> dict[str, float]:
    """The mean of each lm-eval filter/metric over the records (what lm_eval's table reports for
    these samples); empty for unmask's own tasks, whose records carry no `metrics`."""
    totals: dict[str, list[float]] = {}
    for rec in recs:
        for key, value in (rec.get("metrics") or {}).items():
            totals.setdefault(key, []).append(float(value))
    return {key: sum(values) / len(values) for key, values in totals.items()}


HARNESS_TASKS: dict[str, type[LmEvalTask]] = {cls.name: cls for cls in (LmEvalGSM8K, LmEvalMath500, LmEvalHumanEval, LmEvalMBPP)}


def task_class(name: str, harness: str) -> type[Task]:
    """The task class behind `dataset.name=<name> harness=<harness>` (ValueError naming the valid ones)."""
    from ..tasks.registry import TASKS

    if harness not in HARNESSES:
        raise ValueError(f"harness={harness!r}; valid choices: {list(HARNESSES)}")
    if harness == "unmask":
        if name not in TASKS:
            raise ValueError(f"unknown dataset.name={name!r}; valid: {', '.join(sorted(TASKS))}")
        return TASKS[name]
    if name not in HARNESS_TASKS:
        raise ValueError(f"dataset.name={name!r} has no lm-eval task definition; with harness=lm-eval use one of {', '.join(sorted(HARNESS_TASKS))}")
    require_lm_eval()
    return HARNESS_TASKS[name]


def make_task(name: str, harness: str, *, n_shot: int | None, path: str | None, split: str | None, allow_code_execution: bool = False) -> Task:
    """An instance of the run's task under the chosen harness."""
    cls = task_class(name, harness)
    if issubclass(cls, LmEvalTask):
        return cls(n_shot=n_shot, path=path, split=split, allow_code_execution=allow_code_execution)
    return cls(n_shot=n_shot, path=path, split=split)
