"""`--model unmask` in lm-evaluation-harness: the generation path agrees with `unmask eval`
(same prompts, outputs, scores and speed accounts), model_args and gen_kwargs map onto unmask's
keys or fail clearly, and `unmask lm-eval` runs lm-eval's command line with the bundled task."""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402

from unmask import metrics  # noqa: E402
from unmask.config import load_model, resolve_config  # noqa: E402
from unmask.evaluation import run_samples, task_samples  # noqa: E402
from unmask.lmeval import task_manager  # noqa: E402
from unmask.lmeval.model import UnmaskLM, hydra_overrides  # noqa: E402
from unmask.models.tokenizer import encode_prompts  # noqa: E402

FAST = ["cache=prefix", "cache.use_dual=true", "generation.threshold=0.9"]
LIMIT = 4


@pytest.fixture(scope="module")
def lm():
    return UnmaskLM(model="tiny", cache="prefix", use_dual=True, threshold=0.9, device="cpu")


@pytest.fixture(scope="module")
def reference():
    """`unmask eval dataset.limit=4 cache=prefix cache.use_dual=true generation.threshold=0.9`'s records."""
    cfg = resolve_config([f"dataset.limit={LIMIT}", "model.device=cpu", *FAST])
    task, samples = task_samples(cfg)
    return run_samples(load_model(cfg), task, samples, cfg.cache, cfg.generation, cfg.batch_size)


def _request(text: str, gen_kwargs: dict, doc_id: int = 0) -> Instance:
    return Instance("generate_until", {}, (text, gen_kwargs), 0, ("probe", doc_id, 1))


def test_simple_evaluate_on_arith_matches_unmask_eval(lm, reference):
    results = simple_evaluate(model=lm, tasks=["arith"], task_manager=task_manager(include_defaults=False), limit=LIMIT, log_samples=True)
    logged = sorted(results["samples"]["arith"], key=lambda s: s["doc_id"])
    assert [s["doc"]["id"] for s in logged] == [r["id"] for r in reference]
    assert [s["resps"][0][0] for s in logged] == [r["output"] for r in reference]
    assert [s["exact_match"] for s in logged] == [float(r["correct"]) for r in reference]
    expected = metrics.summarize(reference)
    assert results["results"]["arith"]["exact_match,none"] == pytest.approx(expected["accuracy"])
    timing = results["config"]["unmask"]["generate"]
    assert timing["requests"] == LIMIT
    assert timing["answer_tokens"] == expected["answer_tokens"]
    assert timing["nfe"] == pytest.approx(expected["nfe"])
    assert timing["tokens_per_second"] > 0


def test_batch_size_decodes_requests_together_as_unmask_eval_does():
    cfg = resolve_config([f"dataset.limit={LIMIT}", "model.device=cpu", "batch_size=2", *FAST])
    task, samples = task_samples(cfg)
    expected = run_samples(load_model(cfg), task, samples, cfg.cache, cfg.generation, cfg.batch_size)
    batched = UnmaskLM(model="tiny", cache="prefix", use_dual=True, threshold=0.9, device="cpu", batch_size=2)
    requests = [_request(s.prompt, {"until": [], "max_gen_toks": 256}, i) for i, s in enumerate(samples)]
    assert batched.generate_until(requests) == [r["output"] for r in expected]
    assert [r["batch_seconds"] for r in batched.records][::2] == [r["batch_seconds"] for r in batched.records][1::2]
    assert len({r["batch"] for r in batched.records}) == LIMIT // 2
    assert [r["nfe"] for r in batched.records] == [r["nfe"] for r in expected]


def test_lm_evals_chat_template_gives_unmask_evals_prompt(lm, reference):
    question = reference[0]["prompt"]
    rendered = lm.apply_chat_template([{"role": "user", "content": question}])
    assert lm._encode_context(rendered, chat=True) == encode_prompts(lm.model, [question], True)[0]
    assert lm._encode_context(rendered, chat=False) == encode_prompts(lm.model, [question], True)[0]
    assert lm._encode_context(question, chat=False) == encode_prompts(lm.model, [question], False)[0]
    results = simple_evaluate(model=lm, tasks=["arith"], task_manager=task_manager(include_defaults=False), limit=2, log_samples=True, apply_chat_template=True)
    logged = sorted(results["samples"]["arith"], key=lambda s: s["doc_id"])
    assert [s["resps"][0][0] for s in logged] == [r["output"] for r in reference[:2]]


def test_multi_turn_chat_uses_the_family_format(lm):
    history = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    text = lm.apply_chat_template(history, add_generation_prompt=False)
    assert text == (
        "<|startoftext|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA"
    )


def test_until_cuts_the_text_and_batches_follow_identical_settings(lm, reference):
    question = reference[0]["prompt"]
    full = reference[0]["output"]
    assert "=" in full
    cut, again = lm.generate_until([_request(question, {"until": ["="]}), _request(question, {"until": []}, 1)])
    assert cut == full[: full.index("=")]
    assert again == full
    keys = {lm._decoding_key(kw) for kw in ({"until": ["="]}, {"until": []}, {"until": [], "max_gen_toks": 64})}
    assert len(keys) == 3


def test_gen_kwargs_map_to_generation_options(lm):
    extra, until = lm._decoding_key({"until": "Q:", "max_gen_toks": 64, "do_sample": False, "temperature": 0.7})
    assert until == ("Q:",)
    assert extra == ("generation.gen_length=64", "generation.temperature=0.0")
    cfg = lm._config(extra)
    assert (cfg.generation["gen_length"], cfg.generation["temperature"]) == (64, 0.0)
    assert cfg.cache == lm.cfg.cache and cfg.generation["threshold"] == 0.9
    assert lm._decoding_key({"until": [], "do_sample": True})[0] == ("generation.temperature=1.0",)
    assert lm._decoding_key({"until": [], "do_sample": True, "temperature": 0.5})[0] == ("generation.temperature=0.5",)
    with pytest.raises(ValueError, match="num_beams"):
        lm._decoding_key({"until": [], "num_beams": 4})


def test_model_args_gen_length_wins_over_max_gen_toks():
    overrides = hydra_overrides({"model": "tiny", "gen_length": 128})
    assert overrides == ["model=tiny", "generation.gen_length=128"]
    probe = UnmaskLM.__new__(UnmaskLM)
    probe.overrides = overrides
    assert probe._decoding_key({"until": [], "max_gen_toks": 64}) == ((), ())


def test_model_args_take_hydra_names_dotted_or_short():
    assert hydra_overrides({"model": "tiny", "cache": "prefix", "use_dual": True, "threshold": 0.9, "dtype": "float32", "seed": 7}) == [
        "model=tiny", "cache=prefix", "cache.use_dual=true", "generation.threshold=0.9", "model.dtype=float32", "seed=7",
    ]
    assert hydra_overrides({"cache.kp": 10, "generation.block_length": None}) == ["cache.kp=10", "generation.block_length=null"]


@pytest.mark.parametrize(
    "args, message",
    [
        ({"model": "tiny", "thresold": 0.9}, "unknown model_args key 'thresold'"),
        ({"model": "tiny", "cache": "d2cache", "sigma": 2.0}, "ambiguous: write generation.sigma or cache.sigma"),
        ({"model": "tiny", "dataset.limit": 3}, "lm-eval chooses the data"),
        ({"model": "tiny", "use_dual": True}, "use_dual= is a parameter of cache=prefix"),
        ({"model": "tiny", "cache": "prefix", "use_dual": "maybe"}, "cache.use_dual='maybe' is not a valid bool"),
        ({"model": "tiny", "mc_num": 100, "mc_batch_size": 32}, "mc_num=100 must be a positive multiple"),
        ({"model": "tiny", "trust_remote_code": True}, "trust_remote_code"),
    ],
)
def test_bad_model_args_fail_clearly_before_loading(args, message, monkeypatch):
    monkeypatch.setattr("unmask.lmeval.model.load_model", lambda cfg: pytest.fail("loaded a model"))
    with pytest.raises(ValueError, match=message):
        UnmaskLM(**args)


def test_lm_eval_passes_model_args_as_a_string(monkeypatch):
    monkeypatch.setattr("unmask.lmeval.model.load_model", lambda cfg: pytest.fail("loaded a model"))
    with pytest.raises(ValueError, match="unknown model_args key 'steps_per_block'"):
        UnmaskLM.create_from_arg_string("model=tiny,steps_per_block=4", {"batch_size": 1, "device": "cpu"})
    with pytest.raises(ValueError, match="--batch_size auto"):
        UnmaskLM.create_from_arg_string("model=tiny", {"batch_size": "auto"})


def test_loglikelihood_rolling_is_refused(lm):
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling"):
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("text",), 0)])


def test_unmask_lm_eval_command_runs_the_bundled_task(capsys, tmp_path, monkeypatch):
    import lm_eval.tasks

    from unmask.cli import main

    class WithoutBuiltinTasks(lm_eval.tasks.TaskManager):
        """lm-eval's own tasks take half a minute to index; the command under test adds unmask's."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, include_defaults=False, **kwargs)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", WithoutBuiltinTasks)  # restored after the test

    code = main([
        "lm-eval", "--model", "unmask", "--model_args", "model=tiny,cache=prefix,use_dual=true,threshold=0.9",
        "--tasks", "arith", "--limit", "2", "--device", "cpu", "--output_path", str(tmp_path),
    ])
    out = capsys.readouterr()
    assert code == 0
    assert "|arith|" in out.out and "exact_match" in out.out
    assert "tokens_per_second" in out.err


def test_without_lm_eval_the_command_names_the_extra(monkeypatch, capsys):
    import sys

    from unmask.lmeval.cli import main

    for name in [n for n in sys.modules if n == "lm_eval" or n.startswith("lm_eval.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing lm-eval now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "unmask.lmeval.model")
    assert main(["--tasks", "arith"]) == 2
    assert "pip install 'unmask[lm-eval]'" in capsys.readouterr().err


def test_data_parallel_launch_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="one process"):
        UnmaskLM(model="tiny")
