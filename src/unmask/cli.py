"""The `unmask` command line: generate, eval, bench, serve and train.

Overrides use the Hydra spelling the evaluation framework uses: `cache=prefix
cache.use_dual=true generation.gen_length=128 model=tiny model.path=/dir`, and every subcommand
resolves them through `unmask.config.resolve_config`, so they mean the same thing everywhere.
"""

from __future__ import annotations

import argparse
import re
import sys

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=\S*$")
IMAGE = "image="  # unmask generate "question" image=picture.png: an image for a LLaDA-V model


def cmd_generate(args: argparse.Namespace) -> int:
    """Resolve the overrides exactly as `unmask eval` does (same defaults, model names, checks)."""
    import unmask

    from .config import load_model, reject_eval_only, resolve_config

    overrides = list(args.overrides)
    if args.model is not None:
        overrides.append(f"model={args.model}")  # a config name, or a directory (model=/dir shorthand)
    if args.dtype is not None:
        overrides.append(f"model.dtype={args.dtype}")
    cfg = resolve_config(overrides)
    reject_eval_only(cfg, "unmask generate", allowed=("dataset.name",))
    model = load_model(cfg)
    images = [args.images] if args.images else None
    result = unmask.generate(model, prompts=[args.prompt], images=images, cache=cfg.cache, **cfg.generation)
    print(result.texts[0], flush=True)
    print(
        f"[{result.answer_tokens[0]} tokens in {result.total_seconds:.2f}s: {result.tokens_per_second:.1f} tokens/s, "
        f"NFE {result.nfe[0]}, cache={cfg.cache_name}]",
        file=sys.stderr,
    )
    return 0


def _split_prompt(args: argparse.Namespace) -> None:
    """One positional is the prompt; `image=PATH` (repeatable) are its images; the others are
    `key=value` overrides."""
    args.images = [w[len(IMAGE) :] for w in args.words if w.startswith(IMAGE)]
    words = [w for w in args.words if not w.startswith(IMAGE)]
    if any(not path for path in args.images):
        raise ValueError("image= needs a file path (image=picture.png)")
    overrides = [w for w in words if OVERRIDE.match(w)]
    prompts = [w for w in words if not OVERRIDE.match(w)]
    if len(prompts) != 1:
        raise ValueError(f"expected one prompt (quote it), got {len(prompts)}: {prompts}")
    args.prompt, args.overrides = prompts[0], overrides


# Subcommands whose own module parses the overrides (module, help text).
DELEGATED = {
    "eval": ("unmask.evaluation", "evaluate a model and cache method on a task (accuracy, tokens/s), with records and resume"),
    "bench": ("unmask.bench", "compare methods side by side: table, CSV/JSON and plots"),
    "serve": ("unmask.serve", "OpenAI-compatible HTTP server"),
    "lm-eval": ("unmask.lmeval.cli", "lm-evaluation-harness's command line with --model unmask and unmask's tasks"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unmask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="denoise an answer to one prompt and print it with its speed")
    gen.add_argument("--model", default=None, help="same as model=...: a config name (tiny, llada-inst, ...) or a checkpoint directory")
    gen.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="same as model.dtype=...")
    gen.epilog = ("then the prompt and overrides as in unmask eval: model=... cache=... cache.key=value "
                  "generation.key=value (dataset.name=... takes that task's decoding defaults); image=PATH "
                  "(repeatable) gives a LLaDA-V model an image, placed before the prompt unless it says <image>")
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
            from .threads import apply_policy

            apply_policy()
            return cmd_generate(args)
        if args.command in DELEGATED:
            import importlib

            module = importlib.import_module(DELEGATED[args.command][0])
            return module.main(args.words) or 0
        from .threads import apply_policy

        apply_policy()
        from .train import main as train_main

        return train_main(args.words) or 0
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"unmask: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
