"""Turn a validated API request into engine inputs: prompt ids, cache spec and generate() options.

The server's defaults are the run configuration of its command line (`unmask.config`), so
`unmask serve cache=dllm generation.threshold=0.9` means what it means for `unmask eval`.
A request that names another cache is resolved with the same command line, its cache
swapped, so that method's own decoding defaults (and the per-task ones) apply as they would
on the command line. Everything is validated here, before a request is queued, so bad input
is a 400 and never reaches a batch.
"""

from __future__ import annotations

import json
import re
import threading
import typing
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ..caches.registry import resolve_cache
from ..config import RunConfig, resolve_config
from ..image_inputs import ids_with_placeholders, vision_of
from ..models.model import LoadedModel
from ..models.tokenizer import encode_prompts
from ..options import GenerationOptions
from .chat import chat_prompt
from .images import request_images, spliced_length
from .schemas import APIError, ChatRequest, CompletionRequest

# generate() options that standard request fields (or the endpoint) decide.
FROM_STANDARD_FIELDS = ("gen_length", "temperature", "top_p", "seed", "chat")
_NAME = re.compile(r"[A-Za-z_]\w*")
_PLAIN = re.compile(r"[\w.\-]+")
MAX_CACHED_CONFIGS = 64


@dataclass
class Prepared:
    """One request, ready for the batcher."""

    input_ids: list[int]
    cache: dict | None
    options: dict[str, Any]  # keyword options of unmask.generate, gen_length included
    max_tokens: int  # the answer is cut here (gen_length is rounded up to whole blocks)
    stops: list[str]
    key: str  # requests with equal keys may share a batch
    stream: bool
    include_usage: bool
    group: str = ""  # requests with equal groups (cache method) may share a continuous batch
    images: list | None = None  # preprocessed images (vision.processor.ProcessedImage), one per -200 in input_ids
    prompt_tokens: int = 0  # canvas rows of the prompt (image features included)


def unmask_keys() -> list[str]:
    """Keys the request's `unmask` object accepts: the cache plus every generation option the
    standard fields do not already set."""
    return ["cache"] + [k for k in GenerationOptions.names() if k not in FROM_STANDARD_FIELDS]


class ServeSettings:
    """The server-wide defaults, resolved once per cache method a request asks for."""

    def __init__(self, model: LoadedModel, overrides: list[str], cfg: RunConfig):
        self.model = model
        self.cfg = cfg
        self.name = str(self.cfg.model["name"])
        self.default_max_tokens = int(self.cfg.generation["gen_length"])
        self._overrides = [o for o in overrides if o.split("=", 1)[0].split(".")[0] != "cache"]
        self._lock = threading.Lock()  # Hydra's compose state is process-wide
        self._resolved: dict[str, tuple[dict | None, dict]] = {}

    def check_model(self, name: str | None) -> None:
        """404 for a model name other than the one served (None: the client did not say)."""
        if name is not None and name != self.name:
            raise APIError(404, f"model '{name}' is not served here; this server serves '{self.name}'",
                           param="model", code="model_not_found")

    def defaults(self, cache_request: Any = ...) -> tuple[dict | None, dict[str, Any]]:
        """(cache spec, generate options) for the server's cache (`...`) or a requested one."""
        if cache_request is ...:
            return self.cfg.cache, self._options(self.cfg)
        overrides = _cache_overrides(cache_request)
        key = json.dumps(overrides)
        with self._lock:
            if key not in self._resolved:
                try:
                    cfg = resolve_config(self._overrides + overrides)
                except ValueError as exc:
                    raise APIError(400, f"unmask.cache: {exc}", param="unmask.cache") from None
                if len(self._resolved) >= MAX_CACHED_CONFIGS:
                    self._resolved.pop(next(iter(self._resolved)))
                self._resolved[key] = (cfg.cache, self._options(cfg))
            cache, options = self._resolved[key]
        return cache, dict(options)

    @staticmethod
    def _options(cfg: RunConfig) -> dict[str, Any]:
        """The config's generation options minus what each request decides (length, chat, seed)
        and minus values derived from the config's gen_length (steps)."""
        options = {k: v for k, v in cfg.generation.items() if k not in FROM_STANDARD_FIELDS}
        if "generation.steps" not in cfg.explicit:
            options.pop("steps")
        if {"seed", "generation.seed"} & cfg.explicit:
            options["seed"] = cfg.generation["seed"]  # an operator-chosen seed is the default of every request
        return options


def _cache_overrides(cache: Any) -> list[str]:
    """The request's cache as command-line overrides (cache=NAME cache.KEY=VALUE)."""
    if cache is None or (isinstance(cache, str) and cache.lower() in ("null", "none")):
        return ["cache=null"]
    if isinstance(cache, str):
        cache = {"name": cache}
    if not isinstance(cache, dict) or "name" not in cache:
        raise APIError(400, "unmask.cache must be null, a method name or an object with 'name'", param="unmask.cache")
    out = []
    for key, value in cache.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            raise APIError(400, f"unmask.cache: invalid parameter name {key!r}", param="unmask.cache")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        elif isinstance(value, str) and _PLAIN.fullmatch(value):
            text = value
        else:
            raise APIError(400, f"unmask.cache.{key}={value!r} must be a number, a boolean or a plain word", param="unmask.cache")
        out.append(f"cache={text}" if key == "name" else f"cache.{key}={text}")
    return sorted(out)


def _check_prompt_bytes(model: LoadedModel, text: str, param: str) -> None:
    """Refuse, before tokenizing it, a prompt too long in bytes to fit the context in tokens."""
    size = len(text.encode("utf-8"))
    limit = max_prompt_bytes(model)
    if size > limit:
        raise APIError(
            400, f"the prompt is {size} bytes; no prompt over {limit} bytes fits the model's maximum length of "
            f"{model.cfg.max_position} tokens", param=param, code="context_length_exceeded",
        )


def max_prompt_bytes(model: LoadedModel) -> int:
    """Bytes beyond which a prompt cannot fit the context: max_position tokens of the longest
    vocabulary entry, times 4 for normalizers that compose several characters into one."""
    return 4 * model.cfg.max_position * model.tokenizer.longest_token_bytes()


def _prompt_ids(model: LoadedModel, request: ChatRequest | CompletionRequest) -> list[int]:
    if isinstance(request, ChatRequest):
        text = chat_prompt(model, request.messages)
        _check_prompt_bytes(model, text, "messages")
        if vision_of(model) is not None:
            return ids_with_placeholders(model, text)  # -200 at each <image> (image parts included)
        return model.tokenizer.encode(text)
    prompt = request.prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) != 1:
            raise APIError(400, "one prompt per request (send concurrent requests; the server batches them)", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        _check_prompt_bytes(model, prompt, "prompt")
        return encode_prompts(model, [prompt], chat=False)[0]
    if len(prompt) >= model.cfg.max_position:
        return list(prompt)  # refused by its length; no need to scan it
    vocab, mask = model.cfg.vocab_size, model.special.mask
    outside = [t for t in prompt if not 0 <= t < vocab]
    if outside:
        raise APIError(400, f"prompt token ids {outside[:5]} are outside the vocabulary [0, {vocab})", param="prompt")
    if mask in prompt:
        raise APIError(
            400, f"prompt token id {mask} is the mask token, which is not allowed in a prompt (it marks the positions "
            "the model fills in)", param="prompt",
        )
    return list(prompt)


@cache
def _unmask_schema() -> type[BaseModel]:
    """A strict model of the generation keys the `unmask` object may set (types from GenerationOptions)."""
    hints = typing.get_type_hints(GenerationOptions)
    fields: dict[str, Any] = {name: (hints[name], None) for name in unmask_keys() if name != "cache"}
    return create_model("UnmaskOptions", __config__=ConfigDict(strict=True, allow_inf_nan=False), **fields)


def _generation_keys(unmask: dict[str, Any]) -> dict[str, Any]:
    """The `unmask` object's generation keys, type-checked (each problem names its key)."""
    valid = unmask_keys()
    unknown = sorted(set(unmask) - set(valid))
    if unknown:
        raise APIError(400, f"unknown key(s) {unknown} in 'unmask'; valid keys: {valid}", param=f"unmask.{unknown[0]}")
    keys = {k: v for k, v in unmask.items() if k != "cache"}
    try:
        return _unmask_schema().model_validate(keys).model_dump(exclude_unset=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0])
        raise APIError(400, f"invalid value for 'unmask.{name}': {first['msg']}", param=f"unmask.{name}") from None


def is_stochastic(opts: GenerationOptions) -> bool:
    """Whether the answer depends on random draws (then a seed pins it)."""
    return opts.temperature > 0 or opts.alg_temp > 0 or opts.alg in ("random", "origin")


def prepare(settings: ServeSettings, request: ChatRequest | CompletionRequest) -> Prepared:
    """Validate a parsed request against the model and defaults; APIError on anything unusable."""
    model = settings.model
    settings.check_model(request.model)
    unmask = dict(request.unmask or {})
    generation = _generation_keys(unmask)
    cache, options = settings.defaults(unmask["cache"]) if "cache" in unmask else settings.defaults()
    options.update(generation)
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.top_p is not None:
        options["top_p"] = request.top_p
    if request.seed is not None:
        options["seed"] = request.seed

    max_tokens = request.max_tokens
    extra = getattr(request, "max_completion_tokens", None)
    if extra is not None:
        if max_tokens is not None and max_tokens != extra:
            raise APIError(400, "max_tokens and max_completion_tokens disagree; send one", param="max_tokens")
        max_tokens = extra
    max_tokens = max_tokens or settings.default_max_tokens
    limit = model.cfg.max_position
    if max_tokens >= limit:
        raise APIError(
            400, f"max_tokens={max_tokens} leaves no room for a prompt within the model's maximum length of {limit}",
            param="max_tokens", code="context_length_exceeded",
        )
    block = options.get("block_length")
    gen_length = max_tokens if block is None or block <= 0 else -(-max_tokens // block) * block
    options["gen_length"] = gen_length

    try:
        opts = GenerationOptions.build(model.cfg.family, **options)
        policy_cls, cache_settings = resolve_cache(cache)
        policy_cls.validate(cache_settings, opts, model.cfg.family)  # its own checks (e.g. elastic's tau)
    except (ValueError, TypeError) as exc:
        raise APIError(400, str(exc), param="unmask") from None

    images = request_images(model, request.messages) if isinstance(request, ChatRequest) else []
    ids = _prompt_ids(model, request)
    if not ids:
        raise APIError(400, "the prompt is empty", param="prompt")
    placeholders = ids.count(-200) if vision_of(model) is not None else 0
    if placeholders != len(images):
        raise APIError(400, f"the prompt has {placeholders} '<image>' placeholder(s) but {len(images)} image part(s); "
                       "send images as image_url parts and no literal '<image>' text", param="messages")
    n_prompt = spliced_length(model, ids, images) if images else len(ids)
    if n_prompt >= limit:
        param = "messages" if isinstance(request, ChatRequest) else "prompt"
        raise APIError(
            400, f"the prompt has {n_prompt} tokens{' (image features included)' if images else ''}; the model's "
            f"maximum length is {limit}", param=param, code="context_length_exceeded",
        )
    if n_prompt + gen_length > limit:
        raise APIError(
            400,
            f"prompt ({n_prompt} tokens) + max_tokens ({max_tokens}, canvas {gen_length} in whole blocks) exceeds the "
            f"model's maximum length of {limit}; lower max_tokens to at most {limit - n_prompt}",
            param="max_tokens", code="context_length_exceeded",
        )

    stochastic = is_stochastic(opts)
    shared = {k: v for k, v in options.items() if stochastic or k != "seed"}  # greedy ignores the seed
    key = json.dumps({"cache": cache, "options": shared}, sort_keys=True)
    group = "null" if cache is None else str(cache["name"])  # cache settings and options are held per sequence
    if stochastic and opts.seed is not None:
        key += uuid.uuid4().hex  # a seeded sample runs alone: its answer must not depend on other traffic
        group = key
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    return Prepared(
        input_ids=ids, cache=cache, options=options, max_tokens=max_tokens, stops=request.stop_strings(),
        key=key, stream=request.stream, include_usage=include_usage, group=group,
        images=images or None, prompt_tokens=n_prompt,
    )
