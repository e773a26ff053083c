"""The `unmask` command line: generate, eval, bench, serve and train.

Overrides use the Hydra spelling the evaluation framework uses: `cache=prefix
cache.use_dual=true generation.gen_length=128 model=tiny model.path=/dir`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any


OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=\S*$")


def _value(text: str) -> Any:
    """Parse an override value: JSON scalars (numbers, true/false, null) or a plain string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: list[str]) -> tuple[dict[str, Any], dict[str, Any] | str | None, dict[str, Any]]:
    """Split `key=value` overrides into (model settings, cache spec, generation options)."""
    model: dict[str, Any] = {}
    cache: dict[str, Any] = {}
    cache_name: str | None = None
    generation: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override '{item}' is not key=value")
        key, raw = item.split("=", 1)
        value = _value(raw)
        if key == "model":
            model["name"] = raw
        elif key.startswith("model."):
            model[key[len("model.") :]] = value
        elif key == "cache":
            cache_name = "null" if value is None else raw
        elif key.startswith("cache."):
            cache[key[len("cache.") :]] = value
        elif key.startswith("generation."):
            generation[key[len("generation.") :]] = value
        elif key == "generation":
            if raw != "vanilla":
                raise ValueError(f"generation={raw}: the only generation preset is 'vanilla'")
        else:
            raise ValueError(f"unknown override '{key}'; valid groups: model, model.*, cache, cache.*, generation.*")
    if cache and cache_name is None:
        raise ValueError(f"cache.* settings {sorted(cache)} given without cache=<name>")
    spec = None if cache_name is None else {"name": cache_name, **cache}
    return model, spec, generation


def cmd_generate(args: argparse.Namespace) -> int:
    import unmask

    model_cfg, cache, generation = parse_overrides(args.overrides)
    path = args.model or model_cfg.get("path") or model_cfg.get("name") or "tiny"
    unknown = sorted(set(model_cfg) - {"name", "path", "dtype", "device"})
    if unknown:
        raise ValueError(f"unknown model setting(s) {unknown}; valid: model.path, model.dtype, model.device")
    model = unmask.load(path, dtype=model_cfg.get("dtype", args.dtype), device=model_cfg.get("device", "cpu"))
    result = unmask.generate(model, prompts=[args.prompt], cache=cache, **generation)
    print(result.texts[0], flush=True)
    seconds = result.total_seconds
    print(
        f"[{result.answer_tokens[0]} tokens in {seconds:.2f}s: {result.tokens_per_second:.1f} tokens/s, "
        f"NFE {result.nfe[0]}, cache={(cache or {}).get('name', 'null')}]",
        file=sys.stderr,
    )
    return 0


def _split_prompt(args: argparse.Namespace) -> None:
    """One positional is the prompt; the others are `key=value` overrides."""
    overrides = [w for w in args.words if OVERRIDE.match(w)]
    prompts = [w for w in args.words if not OVERRIDE.match(w)]
    if len(prompts) != 1:
        raise ValueError(f"expected one prompt (quote it), got {len(prompts)}: {prompts}")
    args.prompt, args.overrides = prompts[0], overrides


# Subcommands whose own module parses the overrides (module, help text).
DELEGATED = {
    "eval": ("unmask.evaluation", "evaluate a model and cache method on a task (accuracy, tokens/s), with records and resume"),
    "bench": ("unmask.bench", "compare methods side by side: table, CSV/JSON and plots"),
    "serve": ("unmask.serve", "OpenAI-compatible HTTP server"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unmask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="denoise an answer to one prompt and print it with its speed")
    gen.add_argument("--model", default=None, help="checkpoint directory, or 'tiny' (default) for the bundled model")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    gen.epilog = "then the prompt and overrides: cache=... cache.key=value generation.key=value model.path=..."
    train = sub.add_parser("train", help="masked-diffusion training of a small LLaDA-format model")
    train.epilog = "settings as key=value, e.g. out=runs/tiny minutes=60"
    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False).epilog = "Hydra-style overrides, e.g. model=tiny cache=prefix"
    args, rest = parser.parse_known_args(argv)
    flags = [w for w in rest if w.startswith("-")]
    if flags and args.command not in DELEGATED:
        parser.error(f"unrecognized options: {flags}")
    args.words = rest
    try:
        if args.command == "generate":
            _split_prompt(args)
            return cmd_generate(args)
        if args.command in DELEGATED:
            import importlib

            module = importlib.import_module(DELEGATED[args.command][0])
            return module.main(args.words) or 0
        from .train import main as train_main

        return train_main(args.words) or 0
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"unmask: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
