"""The run configuration every command shares (`unmask eval`, `eval.py`, bench, serve).

Command-line overrides use Hydra's spelling (`cache=dllm cache.kp=50 generation.gen_length=256
model=llada-inst model.path=/dir`). `resolve_config` composes the YAML groups in `unmask/conf`,
fills the derived defaults (per task and per model) for the keys the user did not set, and
validates everything, so a typo fails before a model loads and names the valid choices.

Precedence, highest first: the command line, the cache method's own decoding defaults
(`CachePolicy.default_options`), per-task / per-model derived values, the YAML defaults.
"""

from __future__ import annotations

import json
import os
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from .parsing import NULL_WORDS, parse_value

CONF_DIR = Path(__file__).parent / "conf"
GROUPS = ("model", "cache", "generation")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
DTYPES = ("float32", "bfloat16")

# Directory names of the published checkpoints under $UNMASK_MODELS_DIR (weights are never downloaded).
CHECKPOINT_DIRS = {
    "llada-base": "LLaDA-8B-Base",
    "llada-inst": "LLaDA-8B-Instruct",
    "llada-1.5": "LLaDA-1.5",
    "dream-base": "Dream-v0-Base-7B",
    "dream-inst": "Dream-v0-Instruct-7B",
}
MODELS_DIR_ENV = "UNMASK_MODELS_DIR"
# The bundled models (src/unmask/assets) and their own tasks, the default dataset.name for each.
BUNDLED_TASKS = {"tiny": "arith", "tiny-v": "arith-v"}
BUNDLED_MODELS = tuple(BUNDLED_TASKS)

INSTRUCT_BLOCK_LENGTH = 32
# run-config keys that only mean something for evaluation runs
EVAL_ONLY = ("dataset", "batch_size", "output_dir", "allow_code_execution", "harness")


@dataclass
class RunConfig:
    """A resolved run: every value final, plus which keys the user set."""

    model: dict  # name, path, dtype, device, instruct, family
    cache: dict | None  # None = no cache; else exactly what unmask.generate(cache=...) accepts
    generation: dict  # keyword arguments for unmask.generate
    dataset: dict  # name, path, limit, n_shot, split
    batch_size: int = 1
    seed: int = 1234
    attn_implementation: str = "sdpa"
    output_dir: str | None = None
    allow_code_execution: bool = False
    harness: str = "unmask"  # whose task definitions render prompts and score: unmask | lm-eval
    explicit: set[str] = field(default_factory=set)

    def to_dict(self) -> dict:
        """The resolved config as plain JSON-able data (what the records store)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "explicit"}
        out = json.loads(json.dumps(out))
        out["explicit"] = sorted(self.explicit)
        return out

    @property
    def cache_name(self) -> str:
        return "null" if self.cache is None else str(self.cache["name"])


# -- override parsing -----------------------------------------------------------------------


def _parse(overrides: list[str]) -> list[tuple[str, Any, str]]:
    """(key, value, raw text) per override, through Hydra's own parser (quoting, types)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    out = []
    parser = OverridesParser.create()
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"override {item!r} is not key=value (e.g. cache=prefix, generation.gen_length=128)")
        try:
            (ov,) = parser.parse_overrides([item])
        except HydraException as exc:
            raise ValueError(f"cannot parse override {item!r}: {exc}") from None
        if ov.is_add() or ov.is_delete() or ov.is_force_add() or ov.package is not None:
            raise ValueError(f"override {item!r}: only plain key=value overrides are accepted (no +, ++, ~ or @)")
        value = ov.value()
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise ValueError(f"override {item!r}: expected a single value, not {type(value).__name__}")
        out.append((ov.key_or_group, value, item.split("=", 1)[1]))
    seen: set[str] = set()
    for key, _, _ in out:
        if key in seen:
            raise ValueError(f"'{key}' is set more than once on the command line")
        seen.add(key)
    return out


def split_overrides(overrides: list[str], own: dict[str, Any]) -> tuple[dict, list[str]]:
    """Pull a command's own `key=value` settings (e.g. bench's methods=, serve's port=) out of the
    overrides, read as the given types (`unmask.parsing`); the rest go to resolve_config."""
    mine: dict[str, Any] = {}
    rest: list[str] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in own:
            rest.append(item)
            continue
        if key in mine:
            raise ValueError(f"'{key}' is set more than once on the command line")
        mine[key] = parse_value(key, raw, own[key])
    return mine, rest


# -- Hydra composition ------------------------------------------------------------------------


def group_choices(group: str) -> list[str]:
    """The named configs of one group (the YAML files in conf/<group>/)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _compose(overrides: list[str]) -> dict:
    """Compose conf/config.yaml with Hydra's compose API; leaves no global Hydra state behind."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
        return OmegaConf.to_container(cfg, resolve=True)
    finally:
        GlobalHydra.instance().clear()


def _valid_keys(node: Any, prefix: str) -> list[str]:
    return sorted(f"{prefix}{k}" for k in node) if isinstance(node, dict) else []


def _check_key(base: dict, key: str) -> None:
    """Raise naming the valid keys when a dotted key is not in the composed config."""
    parts = key.split(".")
    if parts[0] == "cache" and base.get("cache") is None:
        raise ValueError(f"'{key}' needs a cache method first: cache={'|'.join(group_choices('cache'))}")
    if key == "cache.name":
        raise ValueError(f"choose the method with cache=<name>, not cache.name; valid: {group_choices('cache')}")
    node: Any = base
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        if not isinstance(node, dict) or part not in node:
            if depth == 0:
                valid = sorted(set(base) | set(GROUPS))
                raise ValueError(f"unknown key '{key}'; valid top-level keys: {valid}")
            raise ValueError(f"unknown key '{key}'; valid keys: {_valid_keys(node, prefix + '.')}")
        node = node[part]
    if isinstance(node, dict):
        raise ValueError(f"'{key}' is a group of settings; set one of {_valid_keys(node, key + '.')}")


def _assign(cfg: dict, key: str, value: Any) -> None:
    """Set a checked dotted key to its Hydra-parsed value (what composing with it would give:
    the YAML has no interpolations), so the config is composed once per resolve."""
    *path, leaf = key.split(".")
    node = cfg
    for part in path:
        node = node[part]
    node[leaf] = value


# -- value checks -----------------------------------------------------------------------------


def _choice(key: str, value: Any, valid: list[str] | tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"{key}={value!r}; valid choices: {list(valid)}")
    return value


TOP_TYPES: dict[str, Any] = {
    "batch_size": int,
    "seed": int,
    "attn_implementation": str,
    "output_dir": str | None,
    "allow_code_execution": bool,
    "harness": str,
}
DATASET_TYPES: dict[str, Any] = {"name": str, "path": str | None, "limit": int | None, "n_shot": int | None, "split": str | None}
MODEL_TYPES: dict[str, Any] = {
    "name": str,
    "path": str | None,
    "dtype": str,
    "device": str,
    "instruct": bool,
    "family": str | None,
}


def _typed(section: str, values: dict, schema: dict[str, Any]) -> dict:
    return {k: parse_value(f"{section}{k}", values[k], schema[k]) for k in schema}


# -- model ------------------------------------------------------------------------------------


def _checkpoint_family(path: str, key: str) -> str:
    """The family a checkpoint directory holds, from its config.json alone (no weights read)."""
    from .models.checkpoint import read_config, resolve_path

    if path not in BUNDLED_MODELS and not (Path(path).expanduser() / "config.json").is_file():
        raise ValueError(f"{key}={path}: no config.json there (expected a checkpoint directory)")
    return read_config(resolve_path(path))[1].name


def _resolve_model(model: dict, explicit: set[str], group_choice: str) -> dict:
    model = dict(model)
    model["dtype"] = _choice("model.dtype", model["dtype"], DTYPES)
    if model["device"] != "auto":
        import torch

        try:
            torch.device(model["device"])
        except RuntimeError:
            raise ValueError(f"model.device={model['device']!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    named = group_choice not in BUNDLED_MODELS
    if model["path"] is None and named:
        root = os.environ.get(MODELS_DIR_ENV)
        candidate = Path(root) / CHECKPOINT_DIRS.get(group_choice, group_choice) if root else None
        if candidate is not None and (candidate / "config.json").is_file():
            model["path"] = str(candidate)
    if model["path"] is not None:
        family = _checkpoint_family(model["path"], "model.path")
        if "model" in explicit or named:
            if "model.family" not in explicit and model["family"] not in (None, family):
                raise ValueError(
                    f"model={group_choice} is a {model['family']} model but model.path={model['path']} holds a "
                    f"{family} checkpoint; pick the matching model= config or leave model= unset"
                )
        else:
            # model.path alone: describe the checkpoint itself rather than the bundled default.
            if "model.name" not in explicit:
                model["name"] = Path(model["path"]).expanduser().resolve().name
            if "model.instruct" not in explicit:
                model["instruct"] = "base" not in model["name"].lower()
        if "model.family" not in explicit:
            model["family"] = family
    if model["family"] is not None:
        model["family"] = _choice("model.family", model["family"], ("llada", "dream", "llada-v"))
    return model


def require_model_path(cfg: RunConfig) -> str:
    """The checkpoint to load; named published models need their weights on disk."""
    if cfg.model["path"] is not None:
        return cfg.model["path"]
    if cfg.model["name"] in BUNDLED_MODELS:
        return cfg.model["name"]
    folder = CHECKPOINT_DIRS.get(cfg.model["name"], cfg.model["name"])
    raise ValueError(
        f"model={cfg.model['name']} needs model.path=/dir/of/{folder} (a local checkpoint directory with "
        f"config.json, safetensors and tokenizer.json), or {MODELS_DIR_ENV}=/dir holding {folder}/; "
        "unmask never downloads weights"
    )


def resolve_device(spec: str) -> str:
    """`auto` = this process's GPU (cuda:<LOCAL_RANK>) when CUDA is usable, else cpu.

    `accelerate launch --cpu` (ACCELERATE_USE_CPU) forces cpu."""
    if spec != "auto":
        return spec
    import torch

    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if torch.cuda.is_available() and not forced_cpu:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return "cpu"


def load_model(cfg: RunConfig, device: str | None = None):
    """unmask.load with the config's checkpoint, dtype, device and attention implementation."""
    from .models.checkpoint import load

    return load(
        require_model_path(cfg),
        dtype=cfg.model["dtype"],
        device=device or resolve_device(cfg.model["device"]),
        attn_implementation=cfg.attn_implementation,
    )


# -- cache and generation -------------------------------------------------------------------


def _resolve_cache(raw: dict | None, explicit: set[str], task_name: str) -> tuple[dict | None, type | None]:
    from .caches.registry import registry, resolve_cache

    if raw is None:
        return None, None
    raw = dict(raw)
    policy = registry().get(str(raw.get("name")))
    for key, value in (policy.task_params.get(task_name, {}) if policy else {}).items():
        if f"cache.{key}" not in explicit:
            raw[key] = value
    for key, value in raw.items():
        if key != "name" and not isinstance(value, (bool, int, float, str)):
            raise ValueError(f"cache.{key}={value!r} must be a single value")
    cls, settings = resolve_cache(raw)
    return {"name": cls.name, **settings}, cls


def _generation_types() -> dict[str, Any]:
    from .options import GenerationOptions

    return typing.get_type_hints(GenerationOptions)


def _resolve_generation(
    raw: dict, explicit: set[str], task_cls: type, model: dict, seed: int, cache_cls: type | None, cache: dict | None
) -> dict:
    from .options import GenerationOptions

    gen = dict(raw)
    unknown = sorted(set(gen) - set(GenerationOptions.names()))
    if unknown:
        raise ValueError(f"unknown generation option(s) {unknown}; valid options: {GenerationOptions.names()}")

    def derive(key: str, value: Any) -> None:
        if f"generation.{key}" not in explicit:
            gen[key] = value

    derive("gen_length", task_cls.default_gen_length)
    derive("block_length", INSTRUCT_BLOCK_LENGTH if model["instruct"] else None)
    derive("chat", bool(model["instruct"] and task_cls.use_chat_template))
    derive("seed", seed)
    for key, value in GenerationOptions.family_defaults(model["family"]).items():
        derive(key, value)
    if cache_cls is not None:
        settings = {k: v for k, v in cache.items() if k != "name"}
        for key, value in cache_cls.default_options(settings, model["family"] or "llada").items():
            derive(key, value)
    hints = _generation_types()
    gen = {k: parse_value(f"generation.{k}", gen[k], hints[k]) for k in GenerationOptions.names()}
    if gen["threshold"] is None and gen["factor"] is None:
        derive("steps", gen["gen_length"])
    return gen


def _check_generation(gen: dict, family: str | None, cache_cls: type | None, cache: dict | None) -> None:
    """Run the same checks unmask.generate runs (the options', then the cache method's); no model needed."""
    from .options import GenerationOptions

    fam = family or "llada"
    opts = GenerationOptions.build(fam, **gen)
    if cache_cls is not None:
        cache_cls.validate({k: v for k, v in cache.items() if k != "name"}, opts, fam)


# -- the entry point ------------------------------------------------------------------------------


def resolve_config(overrides: list[str]) -> RunConfig:
    """Compose, derive and validate a run config from Hydra-style overrides (ValueError on bad input)."""
    from .lmeval.harness import HARNESSES, task_class
    from .tasks.registry import TASKS

    parsed = _parse(list(overrides))
    explicit = {key for key, _, _ in parsed}
    selections = {"model": "tiny", "cache": None, "generation": "vanilla"}
    dotted: list[tuple[str, Any, str]] = []
    model_path_from_group: str | None = None
    for key, value, raw in parsed:
        if key in GROUPS:
            if value is None or (isinstance(value, str) and value.lower() in NULL_WORDS):
                if key != "cache":
                    raise ValueError(f"{key}=null is not allowed; valid choices: {group_choices(key)}")
                selections[key] = None
                continue
            choices = group_choices(key)
            text = str(value)
            if key == "model" and text not in choices and ("/" in text or Path(text).expanduser().is_dir()):
                model_path_from_group = raw  # model=/dir is shorthand for model.path=/dir
                continue
            selections[key] = _choice(key, text, choices)
        else:
            dotted.append((key, value, raw))
    if model_path_from_group is not None:
        if "model.path" in explicit:
            raise ValueError("model=/dir and model.path= both name a checkpoint; give one")
        explicit.discard("model")
        explicit.add("model.path")
        dotted.append(("model.path", model_path_from_group, model_path_from_group))

    group_overrides = [f"{g}={c}" for g, c in selections.items() if c is not None]
    raw_cfg = _compose(group_overrides)
    for key, value, _ in dotted:
        _check_key(raw_cfg, key)
        _assign(raw_cfg, key, value)

    if "dataset.name" not in explicit and selections["model"] in BUNDLED_TASKS:  # a bundled model's own task
        raw_cfg["dataset"]["name"] = BUNDLED_TASKS[selections["model"]]
    top = _typed("", raw_cfg, TOP_TYPES)
    top["attn_implementation"] = _choice("attn_implementation", top["attn_implementation"], ATTN_IMPLEMENTATIONS)
    if top["batch_size"] < 1:
        raise ValueError(f"batch_size={top['batch_size']} must be >= 1")
    dataset = _typed("dataset.", raw_cfg["dataset"], DATASET_TYPES)
    dataset["name"] = _choice("dataset.name", dataset["name"], sorted(TASKS))
    if dataset["limit"] is not None and dataset["limit"] < 1:
        raise ValueError(f"dataset.limit={dataset['limit']} must be >= 1 (or null for all samples)")
    if dataset["n_shot"] is not None and dataset["n_shot"] < 0:
        raise ValueError(f"dataset.n_shot={dataset['n_shot']} must be >= 0")
    top["harness"] = _choice("harness", top["harness"], HARNESSES)
    task_cls = task_class(dataset["name"], top["harness"])

    model = _resolve_model(_typed("model.", raw_cfg["model"], MODEL_TYPES), explicit, selections["model"])
    cache, cache_cls = _resolve_cache(raw_cfg.get("cache"), explicit, dataset["name"])
    generation = _resolve_generation(
        raw_cfg["generation"], explicit, task_cls, model, top["seed"], cache_cls, cache
    )
    _check_generation(generation, model["family"], cache_cls, cache)
    return RunConfig(model=model, cache=cache, generation=generation, dataset=dataset, explicit=explicit, **top)


def reject_eval_only(cfg: RunConfig, command: str, allowed: tuple[str, ...] = ()) -> None:
    """Commands that do not evaluate refuse evaluation-only keys rather than ignore them."""
    unused = sorted(k for k in cfg.explicit if k.split(".")[0] in EVAL_ONLY and k not in allowed)
    if unused:
        raise ValueError(f"{unused} only apply to evaluation runs, not to {command}")


def command_main(name: str, usage: str, argv: list[str] | None, body: Callable[[list[str]], int | None]) -> int:
    """The shell the override-driven subcommands share: `--help` prints `usage`; bad input exits 2
    with a one-line message instead of a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        return 0
    try:
        from .threads import apply_policy

        apply_policy()
        return body(argv) or 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"unmask {name}: error: {exc}", file=sys.stderr)
        return 2
