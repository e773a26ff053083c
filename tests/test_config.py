"""The shared run configuration: Hydra groups, derived defaults, validation before any model loads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from conftest import make_checkpoint
from unmask import config as C
from unmask.caches.registry import registry, resolve_cache
from unmask.options import GenerationOptions
from unmask.tasks.arith_task import ArithTask
from unmask.tasks.base import Task
from unmask.tasks.registry import TASKS

# What the brief and algorithms.md say the benchmark tasks look like; used to check the real
# registry entries, and as stand-ins only while a task is not registered yet.
TASK_FACTS = {
    "gsm8k": dict(default_gen_length=256, executes_code=False),
    "math-500": dict(default_gen_length=256, executes_code=False),
    "humaneval": dict(default_gen_length=512, executes_code=True),
    "humaneval_instruct": dict(default_gen_length=512, executes_code=True),
    "mbpp": dict(default_gen_length=512, executes_code=True),
}


@pytest.fixture(autouse=True)
def _no_models_dir(monkeypatch):
    monkeypatch.delenv(C.MODELS_DIR_ENV, raising=False)


@pytest.fixture
def benchmark_tasks(monkeypatch):
    """The real benchmark tasks where registered, otherwise stand-ins with the documented facts."""
    for name, facts in TASK_FACTS.items():
        if name in TASKS:
            for attr, value in facts.items():
                assert getattr(TASKS[name], attr) == value, (name, attr)
        else:
            standin = type(f"StandIn_{name}", (Task,), {"name": name, **facts})
            monkeypatch.setitem(TASKS, name, standin)
    return TASKS


def load_yaml(*parts: str) -> dict:
    return yaml.safe_load((C.CONF_DIR.joinpath(*parts)).read_text())


# -- the YAML groups agree with the code ------------------------------------------------------


def test_cache_yaml_matches_policy_params():
    policies = registry()
    assert set(C.group_choices("cache")) == set(policies) - {"null"}
    for name in C.group_choices("cache"):
        data = load_yaml("cache", f"{name}.yaml")
        assert data.pop("name") == name
        assert data == policies[name].params, name
        for key, value in data.items():  # same types, so command-line coercion matches the yaml
            assert type(value) is type(policies[name].params[key]), (name, key)


def test_generation_yaml_lists_every_option_with_the_dataclass_defaults():
    data = load_yaml("generation", "vanilla.yaml")
    assert list(data) == GenerationOptions.names()
    defaults = {f.name: f.default for f in dataclasses.fields(GenerationOptions)}
    derived = {"gen_length", "block_length", "steps", "seed", "chat"}
    for key, value in data.items():
        if key in derived:
            assert value is None, key
        else:
            assert value == defaults[key], key


def test_model_group_covers_the_named_checkpoints():
    from unmask.models.checkpoint import NAMED_CHECKPOINTS

    assert set(C.group_choices("model")) == set(NAMED_CHECKPOINTS) | {"tiny"}
    assert set(C.CHECKPOINT_DIRS) == set(NAMED_CHECKPOINTS)
    for name in C.group_choices("model"):
        data = load_yaml("model", f"{name}.yaml")
        assert data["name"] == name
        assert data["family"] == ("dream" if name.startswith("dream") else "llada")
        assert data["instruct"] == (not name.endswith("-base"))
        assert set(data) == set(C.MODEL_TYPES)


# -- the three reference commands ---------------------------------------------------------

CMD1 = "dataset.name=humaneval batch_size=1 seed=1234 cache=prefix generation=vanilla generation.block_length=32 model=llada-base"
CMD2 = "dataset.name=math-500 batch_size=1 seed=1234 cache=dllm cache.rou=0.25 cache.kp=50 cache.kr=1 generation=vanilla model=dream-inst"
CMD3 = (
    "dataset.name=humaneval_instruct batch_size=1 seed=1234 attn_implementation=eager cache=d2cache "
    "cache.rollout_p=0.1 cache.current_k=32 cache.sigma=10 cache.inflate_w=4 generation.sigma=0"
)


def test_reference_command_1(benchmark_tasks):
    cfg = C.resolve_config(CMD1.split())
    assert cfg.model == {"name": "llada-base", "path": None, "dtype": "bfloat16", "device": "auto", "instruct": False, "family": "llada"}
    assert cfg.cache == {"name": "prefix", "use_dual": False, "dream_start": "commit"}
    g = cfg.generation
    assert (g["gen_length"], g["block_length"], g["steps"]) == (512, 32, 512)
    assert g["chat"] is False  # base model: raw prompts
    assert g["seed"] == 1234 and g["threshold"] is None and g["sigma"] == 0.0
    assert cfg.dataset == {"name": "humaneval", "path": None, "limit": None, "n_shot": None, "split": None}
    assert (cfg.batch_size, cfg.seed, cfg.attn_implementation) == (1, 1234, "sdpa")
    assert "generation.block_length" in cfg.explicit and "generation.gen_length" not in cfg.explicit
    with pytest.raises(ValueError, match=r"model\.path=/dir/of/LLaDA-8B-Base"):
        C.require_model_path(cfg)


def test_reference_command_2(benchmark_tasks):
    cfg = C.resolve_config(CMD2.split())
    assert cfg.model["name"] == "dream-inst" and cfg.model["family"] == "dream" and cfg.model["instruct"] is True
    assert cfg.cache == {"name": "dllm", "kp": 50, "kr": 1, "rou": 0.25}
    g = cfg.generation
    assert (g["gen_length"], g["block_length"], g["steps"]) == (256, 32, 256)
    assert g["chat"] is TASKS["math-500"].use_chat_template
    assert g["alg"] is None  # Dream's default (entropy) is chosen by the family at generate time


def test_reference_command_3(benchmark_tasks):
    cfg = C.resolve_config(CMD3.split())
    assert cfg.model["name"] == "tiny"
    assert cfg.attn_implementation == "eager"
    assert cfg.cache == {"name": "d2cache", "rollout_p": 0.1, "current_k": 32, "sigma": 10.0, "inflate_w": 4}
    g = cfg.generation
    assert g["sigma"] == 0.0  # the command line beats d2Cache's own sigma=10
    assert g["block_length"] is None  # d2Cache decodes without blocks
    assert (g["gen_length"], g["steps"]) == (512, 512)


def test_use_dual_selects_dual_cache():
    cfg = C.resolve_config(["cache=prefix", "cache.use_dual=true"])
    cls, settings = resolve_cache(cfg.cache)
    assert cls.name == "prefix" and settings == {"use_dual": True, "dream_start": "commit"}
    assert C.resolve_config(["cache=prefix"]).cache["use_dual"] is False


def test_resolved_config_round_trips_as_json():
    import json

    cfg = C.resolve_config(["cache=elastic", "generation.gen_length=64"])
    data = cfg.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["explicit"] == ["cache", "generation.gen_length"]


# -- derived defaults and explicit overrides ------------------------------------------------------


def test_derived_defaults_for_the_bundled_model():
    cfg = C.resolve_config([])
    g = cfg.generation
    assert cfg.dataset["name"] == "arith" and cfg.model["name"] == "tiny" and cfg.cache is None
    assert (g["gen_length"], g["block_length"], g["steps"], g["chat"], g["seed"]) == (256, 32, 256, True, 1234)


@pytest.mark.parametrize(
    "overrides, key, value",
    [
        (["generation.gen_length=64"], "gen_length", 64),
        (["generation.gen_length=64"], "steps", 64),
        (["generation.gen_length=64", "generation.steps=32"], "steps", 32),
        (["generation.block_length=null"], "block_length", None),
        (["generation.block_length=8"], "block_length", 8),
        (["model=llada-base"], "block_length", None),
        (["model=llada-base", "generation.block_length=32"], "block_length", 32),
        (["model=llada-base"], "chat", False),
        (["model=llada-base", "generation.chat=true"], "chat", True),
        (["generation.chat=false"], "chat", False),
        (["seed=7"], "seed", 7),
        (["seed=7", "generation.seed=3"], "seed", 3),
        (["generation.seed=null"], "seed", None),
        (["generation.threshold=0.9"], "steps", None),
        (["generation.threshold=1"], "threshold", 1.0),
        (["cache=d2cache"], "sigma", 10.0),
        (["cache=d2cache", "generation.sigma=0"], "sigma", 0.0),
        (["cache=d2cache", "generation.block_length=32"], "block_length", 32),
        (["cache=elastic"], "threshold", 0.9),
        (["cache=elastic", "cache.tau=0.8"], "threshold", 0.8),
        (["cache=elastic"], "block_length", None),
    ],
)
def test_command_line_wins_over_derived_defaults(overrides, key, value):
    assert C.resolve_config(overrides).generation[key] == value


@pytest.mark.parametrize(
    "task, kp, kr", [("gsm8k", 50, 7), ("math-500", 50, 1), ("mbpp", 100, 5), ("humaneval", 25, 5), ("arith", 50, 7)]
)
def test_dllm_per_task_refresh_intervals(benchmark_tasks, task, kp, kr):
    cfg = C.resolve_config(["cache=dllm", f"dataset.name={task}"])
    assert (cfg.cache["kp"], cfg.cache["kr"]) == (kp, kr)
    cfg = C.resolve_config(["cache=dllm", f"dataset.name={task}", "cache.kr=3"])
    assert (cfg.cache["kp"], cfg.cache["kr"]) == (kp, 3)


def test_per_task_gen_length(benchmark_tasks):
    for name, facts in TASK_FACTS.items():
        assert C.resolve_config([f"dataset.name={name}"]).generation["gen_length"] == facts["default_gen_length"]


def test_task_that_wants_raw_prompts_turns_the_chat_template_off(monkeypatch):
    raw = type("RawArith", (ArithTask,), {"name": "raw_arith", "use_chat_template": False})
    monkeypatch.setitem(TASKS, "raw_arith", raw)
    assert C.resolve_config(["dataset.name=raw_arith"]).generation["chat"] is False
    assert C.resolve_config(["dataset.name=raw_arith", "generation.chat=true"]).generation["chat"] is True


# -- models: paths and the models folder ------------------------------------------------------------


def test_model_path_alone_describes_the_checkpoint(tmp_path):
    ckpt = make_checkpoint(tmp_path / "Dream-v0-Base-7B", "dream")
    cfg = C.resolve_config([f"model.path={ckpt}"])
    assert cfg.model["path"] == str(ckpt)
    assert (cfg.model["name"], cfg.model["family"], cfg.model["instruct"]) == ("Dream-v0-Base-7B", "dream", False)
    assert cfg.generation["chat"] is False and cfg.generation["block_length"] is None
    assert C.resolve_config([f"model={ckpt}"]).model == cfg.model  # model=/dir is the same thing
    inst = C.resolve_config([f"model.path={ckpt}", "model.instruct=true"])
    assert inst.model["instruct"] is True and inst.generation["chat"] is True


def test_named_model_with_a_path_of_another_family_is_refused(tmp_path):
    ckpt = make_checkpoint(tmp_path / "x", "dream")
    with pytest.raises(ValueError, match="llada model but model.path=.* holds a dream checkpoint"):
        C.resolve_config(["model=llada-inst", f"model.path={ckpt}"])
    cfg = C.resolve_config(["model=dream-inst", f"model.path={ckpt}"])
    assert cfg.model["name"] == "dream-inst" and C.require_model_path(cfg) == str(ckpt)


def test_models_dir_environment_finds_named_checkpoints(tmp_path, monkeypatch):
    make_checkpoint(tmp_path / "LLaDA-8B-Instruct", "llada")
    monkeypatch.setenv(C.MODELS_DIR_ENV, str(tmp_path))
    cfg = C.resolve_config(["model=llada-inst"])
    assert cfg.model["path"] == str(tmp_path / "LLaDA-8B-Instruct")
    with pytest.raises(ValueError, match="LLaDA-1.5"):  # not in the folder: still a clear error
        C.require_model_path(C.resolve_config(["model=llada-1.5"]))


def test_load_model_passes_dtype_device_and_attention(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m", "llada")
    cfg = C.resolve_config([f"model.path={ckpt}", "attn_implementation=eager", "model.device=cpu"])
    model = C.load_model(cfg)
    assert model.path == str(ckpt) and str(model.device) == "cpu"
    assert {layer.attn_implementation for layer in model.module.layers} == {"eager"}
    import torch

    assert C.load_model(C.resolve_config(["model.dtype=bfloat16", "model.device=cpu"])).dtype == torch.bfloat16


# -- every invalid value and unknown key fails before any model loads ---------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["foo=1"], r"unknown key 'foo'; valid top-level keys: \[.*'batch_size'"),
        (["generation.foo=1"], r"unknown key 'generation.foo'; valid keys: \[.*'generation.gen_length'"),
        (["dataset.foo=1"], r"unknown key 'dataset.foo'; valid keys: \[.*'dataset.limit'"),
        (["model.foo=1"], r"unknown key 'model.foo'; valid keys: \[.*'model.path'"),
        (["cache=dllm", "cache.kq=3"], r"unknown key 'cache.kq'; valid keys: \[.*'cache.kp', 'cache.kr'"),
        (["cache=prefix", "cache.kp=3"], r"unknown key 'cache.kp'; valid keys: \[.*'cache.use_dual'"),
        (["cache.kp=3"], r"needs a cache method first: cache=d2cache\|dllm\|elastic\|prefix"),
        (["cache=dllm", "cache.name=prefix"], r"choose the method with cache=<name>"),
        (["cache=foo"], r"cache='foo'; valid choices: \['d2cache', 'dllm', 'elastic', 'prefix'\]"),
        (["model=gpt"], r"model='gpt'; valid choices: \[.*'llada-base'.*'tiny'\]"),
        (["model=null"], r"model=null is not allowed"),
        (["generation=fast"], r"generation='fast'; valid choices: \['vanilla'\]"),
        (["dataset=3"], r"'dataset' is a group of settings; set one of"),
        (["dataset.name=nope"], r"dataset.name='nope'; valid choices: \[.*'arith'"),
        (["attn_implementation=flash"], r"valid choices: \['sdpa', 'eager'\]"),
        (["model.dtype=fp16"], r"model.dtype='fp16'; valid choices: \['float32', 'bfloat16'\]"),
        (["model.family=gpt"], r"model.family='gpt'; valid choices: \['llada', 'dream', 'llada-v'\]"),
        (["model.device=gpu"], r"model.device='gpu' is not a device; use auto, cpu, cuda or cuda:N"),
        (["model.instruct=maybe"], r"model.instruct='maybe' is not a valid bool"),
        (["batch_size=0"], r"batch_size=0 must be >= 1"),
        (["batch_size=two"], r"batch_size='two' is not a valid int"),
        (["seed=1.5"], r"seed=1.5 is not a valid int"),
        (["allow_code_execution=maybe"], r"allow_code_execution='maybe' is not a valid bool"),
        (["dataset.limit=0"], r"dataset.limit=0 must be >= 1"),
        (["dataset.n_shot=-1"], r"dataset.n_shot=-1 must be >= 0"),
        (["generation.gen_length=abc"], r"generation.gen_length='abc' is not a valid int"),
        (["generation.gen_length=1.5"], r"generation.gen_length=1.5 is not a valid int"),
        (["generation.threshold=high"], r"generation.threshold='high' is not a valid float or null"),
        (["generation.gen_length=100"], r"multiple of generation.block_length=32"),
        (["generation.steps=7"], r"generation.steps=7 must be a positive multiple of the number of blocks"),
        (["generation.threshold=0.9", "generation.steps=256"], r"generation.steps has no effect"),
        (["generation.threshold=0.9", "generation.factor=1"], r"threshold or generation.factor, not both"),
        (["generation.alg=best"], r"generation.alg='best'; valid choices"),
        (["generation.schedule=cosine"], r"generation.schedule='cosine'; valid choices"),
        (["cache=dllm", "cache.kp=x"], r"cache.kp='x' is not a valid int"),
        (["cache=dllm", "cache.rou=2"], r"cache.rou=2.0 must be in \[0, 1\]"),
        (["cache=dllm", "cache.kr=0"], r"must be >= 1"),
        (["cache=d2cache", "cache.rollout_p=2"], r"cache.rollout_p=2.0 must be in \(0, 1\]"),
        (["cache=elastic", "cache.drift_axis=cols"], r"cache.drift_axis='cols'; valid choices"),
        (["cache=elastic", "generation.threshold=0.5"], r"conflicts with cache.tau=0.9"),
        (["cache=prefix", "generation.cfg_scale=1"], r"does not support generation.cfg_scale"),
        (["cache=prefix", "cache.use_dual=maybe"], r"cache.use_dual='maybe' is not a valid bool"),
        (["seed=1", "seed=2"], r"'seed' is set more than once"),
        (["+foo=1"], r"only plain key=value overrides"),
        (["~seed"], r"is not key=value"),
        (["seed"], r"is not key=value"),
        (["model.path=/no/such/dir"], r"model.path=/no/such/dir: no config.json there"),
    ],
)
def test_invalid_overrides_name_the_valid_choices(overrides, message):
    with pytest.raises(ValueError, match=message):
        C.resolve_config(overrides)


def test_hydra_leaves_no_global_state():
    from hydra.core.global_hydra import GlobalHydra

    a = C.resolve_config(["cache=dllm"])
    b = C.resolve_config(["cache=dllm"])
    assert a == b
    assert not GlobalHydra.instance().is_initialized()


def test_split_overrides_pulls_out_a_commands_own_keys():
    own, rest = C.split_overrides(
        ["methods=null,prefix", "port=8000", "cache=prefix", "verbose=true", "n=3.5"],
        {"methods": list, "port": int, "verbose": bool, "n": float},
    )
    assert own == {"methods": ["null", "prefix"], "port": 8000, "verbose": True, "n": 3.5}
    assert rest == ["cache=prefix"]
    with pytest.raises(ValueError, match="port='x' is not a valid int"):
        C.split_overrides(["port=x"], {"port": int})
    with pytest.raises(ValueError, match="set more than once"):
        C.split_overrides(["port=1", "port=2"], {"port": int})


def test_conf_files_are_package_data():
    text = (Path(C.__file__).parents[2] / "pyproject.toml").read_text()
    assert "conf/**/*.yaml" in text
