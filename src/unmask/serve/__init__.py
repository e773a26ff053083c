"""`unmask serve`: an OpenAI-compatible HTTP server for diffusion LMs.

    unmask serve model=tiny cache=prefix generation.threshold=0.9 port=8000 max_batch=8

By default batching is continuous (`serve.continuous`): a request joins a running batch at its
next denoising step and leaves it when done; `continuous=false` runs whole batches of requests
that arrived together (`serve.batcher`).

Model, cache and generation overrides are those of `unmask eval` (unmask.config); the
server's own settings are listed in SERVE_KEYS. Routes: POST /v1/chat/completions,
POST /v1/completions, GET /v1/models, GET /health.
"""

from __future__ import annotations

import sys

SERVE_KEYS: dict[str, type] = {
    "host": str,
    "port": int,
    "continuous": bool,  # requests join and leave running batches between denoising steps
    "max_batch": int,  # requests per batch (default 8; with continuous batching 16)
    # canvas positions per batch: requests x (longest prompt + gen_length); continuous: over all running
    # batches, the admission budget (a request that does not fit waits)
    "max_batch_tokens": int,
    "max_queue": int,  # waiting requests before new ones get 503
    "workers": int,  # engine threads: batches denoised concurrently (default 2; with continuous batching 1)
    "batch_wait_ms": float,  # how long the oldest request waits for batch companions (continuous=false)
    "log_level": str,
}
DEFAULTS = {
    "host": "127.0.0.1",
    "port": 8000,
    "continuous": True,
    "max_batch": 8,
    "max_batch_tokens": 16384,
    "max_queue": 64,
    "workers": 2,
    "batch_wait_ms": 5.0,
    "log_level": "info",
}
# With continuous batching (measured on the bundled model, 2-core CPU: more engine threads contend for
# the GIL; batches of 16 beat 8 at 16 and 64 clients).
CONTINUOUS_DEFAULTS = {"workers": 1, "max_batch": 16}
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

USAGE = """usage: unmask serve [model=...] [cache=NAME cache.KEY=VALUE ...] [generation.KEY=VALUE ...] [SETTING=VALUE ...]

settings (defaults): """ + " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in DEFAULTS.items()) + """
  (with continuous=true: """ + " ".join(f"{k}={v}" for k, v in CONTINUOUS_DEFAULTS.items()) + ")"


def _settings(own: dict) -> dict:
    settings = {**DEFAULTS, **own}
    if settings["continuous"]:  # its own defaults: one engine thread steps every running request
        settings.update({key: value for key, value in CONTINUOUS_DEFAULTS.items() if key not in own})
    if not 1 <= settings["port"] <= 65535:
        raise ValueError(f"port={settings['port']} must be in 1..65535")
    for key in ("max_batch", "max_batch_tokens", "max_queue", "workers"):
        if settings[key] < 1:
            raise ValueError(f"{key}={settings[key]} must be >= 1")
    if settings["batch_wait_ms"] < 0:
        raise ValueError(f"batch_wait_ms={settings['batch_wait_ms']} must be >= 0")
    if settings["log_level"] not in LOG_LEVELS:
        raise ValueError(f"log_level={settings['log_level']!r}; valid choices: {list(LOG_LEVELS)}")
    return settings


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, load the model and serve until interrupted; 2 on bad input."""
    from ..config import command_main

    return command_main("serve", USAGE, argv, _serve)


def _serve(argv: list[str]) -> int:
    import uvicorn

    app, settings, label = build_app(argv)
    print(
        f"unmask serve: model {label} on http://{settings['host']}:{settings['port']}/v1",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=settings["host"], port=settings["port"], log_level=settings["log_level"])
    return 0


def build_app(argv: list[str], model=None):
    """(app, server settings, a description of the model and cache) from `unmask serve`'s arguments;
    `model`, if given, is served instead of loading the configured one (the load benchmark's in-process
    servers share one)."""
    from ..config import load_model, reject_eval_only, resolve_config, split_overrides
    from .app import create_app
    from .prepare import ServeSettings

    own, overrides = split_overrides(argv, SERVE_KEYS)
    settings = _settings(own)
    cfg = resolve_config(overrides)
    reject_eval_only(cfg, "unmask serve")
    model = model if model is not None else load_model(cfg)
    serve_settings = ServeSettings(model, overrides, cfg)
    app = create_app(serve_settings, make_batcher(model, settings))
    return app, settings, f"'{serve_settings.name}' (cache={cfg.cache_name})"


def make_batcher(model, settings: dict):
    """The request scheduler the settings ask for: continuous batches or whole batches."""
    from .batcher import RequestBatcher
    from .continuous import ContinuousBatcher

    if settings["continuous"]:
        return ContinuousBatcher(model, max_batch=settings["max_batch"], max_queue=settings["max_queue"],
                                 max_batch_tokens=settings["max_batch_tokens"], workers=settings["workers"])
    return RequestBatcher(
        model,
        max_batch=settings["max_batch"],
        max_queue=settings["max_queue"],
        max_batch_tokens=settings["max_batch_tokens"],
        workers=settings["workers"],
        batch_wait=settings["batch_wait_ms"] / 1000,
    )


__all__ = ["main", "SERVE_KEYS"]
