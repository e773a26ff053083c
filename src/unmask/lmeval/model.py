"""`unmask` as an lm-evaluation-harness model (`--model unmask`).

`--model_args` take the names and values of unmask's Hydra keys, either dotted
(`cache.use_dual=true`, `generation.threshold=0.9`, `model.path=/dir`) or short when the name is
unambiguous (`use_dual=true`, `threshold=0.9`, `path=/dir`, `dtype=bfloat16`); `model=` and
`cache=` pick the groups. They are resolved by `unmask.config.resolve_config`, so defaults,
derived values and checks are those of `unmask eval` (the per-task derived values are arith's,
since the model does not know lm-eval's task). Unknown keys fail before a model loads.
The model's own keys: `mc_num` (128), `mc_batch_size` (32) and `is_check_greedy` (false) for
likelihoods; lm-eval's `--batch_size` is the number of prompts per `unmask.generate` call.

- `generate_until`: requests with identical decoding settings are decoded together,
  `batch_size` at a time, through `unmask.generate`; `max_gen_toks` becomes `gen_length`
  (unless `gen_length` is in --model_args), `do_sample`/`temperature`/`top_p`/`top_k` map to
  the generation options (again unless set in --model_args), and the text is cut at the first
  `until` string. Timing (tokens/s, NFE, ...) is summarized with `unmask.metrics` as `unmask
  eval` does: printed after each call and returned under `config.unmask` in lm-eval's results.
- `loglikelihood`: LLaDA's Monte-Carlo estimate (`unmask.lmeval.likelihood`), seeded per
  request from the run seed and the request's tokens, so a score does not depend on order.
- `loglikelihood_rolling` (perplexity tasks) is refused: the Monte-Carlo bound over whole
  documents is not what LLaDA's evaluation defines.
- Chat template: lm-eval's `--apply_chat_template` renders the conversation with the model's
  format (`apply_chat_template`), and such text is encoded as is. Otherwise `chat` decides, as
  in `unmask eval`: by default true for instruct models (tiny included), which wraps each
  generation context as one user turn, as Fast-dLLM's lm-eval wrapper does for instruct models;
  `chat=false` encodes BOS + context. Likelihood contexts are never wrapped (LLaDA's
  `loglikelihood` scores the text as given), only rendered by `--apply_chat_template`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import zlib
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from .. import metrics
from ..config import EVAL_ONLY, MODEL_TYPES, RunConfig, load_model, resolve_config
from ..evaluation import batch_seed
from ..options import GenerationOptions
from ..parsing import parse_value
from ..tasks.prompting import cut_at_stops
from .likelihood import greedy_matches, mc_loglikelihood

log = logging.getLogger(__name__)

# The model's own settings (not unmask Hydra keys), with their types and defaults.
OWN_KEYS: dict[str, tuple[Any, Any]] = {
    "mc_num": (int, 128),
    "mc_batch_size": (int, 32),
    "is_check_greedy": (bool, False),
}
GROUPS = ("model", "cache", "generation")
TOP_KEYS = ("seed", "attn_implementation")
# lm-eval's generation kwargs and the generation option each becomes.
GEN_KWARGS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k"}


def _text(value: Any) -> str:
    """A model_args value (lm-eval has typed it already) as Hydra override text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _cache_params(args: dict) -> dict[str, Any]:
    from ..caches.registry import registry

    name = args.get("cache")
    if name is None or str(name).lower() in ("null", "none"):
        return {}
    policy = registry().get(str(name))
    return dict(policy.params) if policy is not None else {}


def _caches_with(key: str) -> list[str]:
    from ..caches.registry import registry

    return sorted(name for name, policy in registry().items() if key in policy.params)


def hydra_overrides(args: dict[str, Any]) -> list[str]:
    """unmask's override list for lm-eval's --model_args (without the model's own keys).

    Short keys are looked up among the generation options, the chosen cache's parameters and
    the model keys; a name found in more than one must be written dotted.
    """
    homes = {
        "generation": set(GenerationOptions.names()),
        "cache": set(_cache_params(args)),
        "model": set(MODEL_TYPES) - {"device"},
    }
    out = []
    for key, value in args.items():
        section = key.split(".")[0]
        if section in EVAL_ONLY:
            raise ValueError(
                f"model_args {key}=...: lm-eval chooses the data and the outputs (--tasks, --limit, --output_path); "
                "only model, cache and generation settings go into --model_args"
            )
        if key in GROUPS or "." in key or key in TOP_KEYS:
            out.append(f"{key}={_text(value)}")
            continue
        found = [name for name, keys in homes.items() if key in keys]
        if len(found) > 1:
            raise ValueError(f"model_args {key}= is ambiguous: write {' or '.join(f'{s}.{key}' for s in found)}")
        if not found:
            owners = _caches_with(key)
            if owners:
                raise ValueError(f"model_args {key}= is a parameter of cache={'|'.join(owners)}; choose the cache with cache=... too")
            valid = sorted(set(GROUPS) | set(TOP_KEYS) | set(OWN_KEYS) | {"batch_size", "device"} | set().union(*homes.values()))
            raise ValueError(
                f"unknown model_args key '{key}' for --model unmask (a checkpoint is model=NAME or path=/dir); "
                f"valid keys: {valid} (or dotted Hydra keys)"
            )
        out.append(f"{found[0]}.{key}={_text(value)}")
    return out


def _explicit(overrides: list[str], key: str) -> bool:
    return any(o.split("=", 1)[0] == key for o in overrides)


def _leading_marker(template: str | None) -> str | None:
    """The special token a chat-formatted prompt starts with (`<|startoftext|>`, `<|im_start|>`)."""
    if not template or not template.startswith("<"):
        return None
    end = template.find(">")
    return template[: end + 1] if end > 0 else None


@register_model("unmask")
class UnmaskLM(LM):
    """An lm-eval model that decodes and scores with unmask (see the module docstring)."""

    def __init__(self, batch_size: int | str | None = 1, max_batch_size: int | None = None, device: str | None = None, **model_args: Any):
        super().__init__()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                "--model unmask runs in one process (it does not split lm-eval's requests over ranks); "
                "launch it without accelerate/torchrun, or use `accelerate launch eval.py` for data parallel"
            )
        own = {k: parse_value(k, model_args.pop(k, default), kind) for k, (kind, default) in OWN_KEYS.items()}
        if "trust_remote_code" in model_args:
            raise ValueError("model_args trust_remote_code: unmask runs no code from checkpoints; leave it out")
        if max_batch_size is not None:
            raise ValueError("--max_batch_size applies to --batch_size auto, which unmask does not support; give --batch_size N")
        if isinstance(batch_size, str) and batch_size.startswith("auto"):
            raise ValueError(f"--batch_size {batch_size}: unmask needs a number of prompts per generate call")
        self.overrides = hydra_overrides(model_args)
        if batch_size is not None:
            self.overrides.append(f"batch_size={batch_size}")
        if device is not None and not _explicit(self.overrides, "model.device"):
            if str(device).startswith("cuda") and not torch.cuda.is_available():
                log.warning("unmask: device %s is not available; using model.device=auto (as lm-eval's hf model does)", device)
            else:
                self.overrides.append(f"model.device={device}")
        self.cfg: RunConfig = resolve_config(self.overrides)
        self.mc_num, self.mc_batch_size, self.is_check_greedy = own["mc_num"], own["mc_batch_size"], own["is_check_greedy"]
        if self.mc_num < 1 or self.mc_batch_size < 1 or self.mc_num % self.mc_batch_size:
            raise ValueError(f"mc_num={self.mc_num} must be a positive multiple of mc_batch_size={self.mc_batch_size}")
        torch.manual_seed(self.cfg.seed)
        self.model = load_model(self.cfg)
        self._configs: dict[tuple, RunConfig] = {}
        self._warm = False
        self.records: list[dict] = []
        self.likelihood_stats = {"requests": 0, "forward_passes": 0, "seconds": 0.0}

    # -- lm-eval's interface -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def tokenizer_name(self) -> str:
        return f"unmask:{self.cfg.model['name']}"

    def chat_template(self, chat_template: bool | str = False) -> str:
        return self.model.chat_template or ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation in the model's chat format; one user message gives exactly the prompt
        `unmask eval` builds for a chat task. Without `add_generation_prompt` the last message is
        an assistant prefix the model continues."""
        from ..serve.chat import FORMATS, conversation

        template = self.model.chat_template
        if template is None:
            raise ValueError(f"--apply_chat_template: the model {self.cfg.model['name']} has no chat template")
        pairs = [(m["role"], m["content"]) for m in chat_history]
        prefix = ""
        if not add_generation_prompt:
            if pairs[-1][0] != "assistant":
                raise ValueError("a chat history to continue must end with an assistant message")
            prefix = pairs.pop()[1]
        if len(pairs) == 1 and pairs[0][0] == "user":
            return template.format(content=pairs[0][1]) + prefix
        fmt = FORMATS.get(self.model.cfg.family)
        if fmt is None or template != fmt.single:
            raise ValueError("this checkpoint's chat template formats a single user turn only (no system message or few-shot turns)")
        return conversation(fmt, pairs) + prefix

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        from ..generate import generate

        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(self._decoding_key(request.args[1]), []).append(i)
        out: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="unmask generate", disable=disable_tqdm)
        for (extra, until), indices in groups.items():
            cfg = self._config(extra)
            generation = dict(cfg.generation)
            seed = generation.pop("seed", None)
            for start in range(0, len(indices), cfg.batch_size):
                batch = indices[start : start + cfg.batch_size]
                ids = [self._encode_context(requests[i].args[0], bool(generation["chat"])) for i in batch]
                if not self._warm:  # one untimed generate first, as `unmask eval` does
                    generate(self.model, input_ids=ids[:1], cache=cfg.cache, seed=seed, **generation)
                    self._warm = True
                first = requests[batch[0]]
                batch_id = f"{first.task_name}/{first.doc_id}/{first.idx}/{len(self.records)}"
                result = generate(
                    self.model, input_ids=ids, cache=cfg.cache, seed=batch_seed(seed, f"{first.task_name}/{first.doc_id}"), **generation
                )
                peak = metrics.peak_memory_mb(self.model.device)
                for j, i in enumerate(batch):
                    out[i] = cut_at_stops(result.texts[j], list(until))
                    self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
                    self.records.append({
                        "correct": False, "tokens": int(result.answer_tokens[j]), "nfe": int(result.nfe[j]),
                        "seconds": float(result.seconds[j]), "batch": batch_id, "batch_seconds": float(result.total_seconds),
                        "refresh_fraction": float(result.refresh_fraction), "row_fraction": float(result.row_fraction),
                        "peak_memory_mb": peak,
                    })
                bar.update(len(batch))
        bar.close()
        if requests:
            print(metrics.format_table(self.generation_summary(), title=f"unmask generate: {self.cfg.model['name']} / {self.cfg.cache_name}"), file=sys.stderr)
        return out  # type: ignore[return-value]

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        cfg_scale = float(self.cfg.generation.get("cfg_scale") or 0.0)
        mask = self.model.special.mask
        started = time.perf_counter()
        for request in tqdm(requests, desc="unmask loglikelihood", disable=disable_tqdm):
            prefix, target = self.encode_pair(*request.args)
            score = self.score(prefix, target)
            greedy = bool(greedy_matches(self.model.module, prefix, target, mask, cfg_scale)) if self.is_check_greedy else False
            out.append((score, greedy))
            self.cache_hook.add_partial("loglikelihood", request.args, (score, greedy))
            passes = self.mc_num // self.mc_batch_size + (len(target) if self.is_check_greedy else 0)
            self.likelihood_stats["forward_passes"] += passes * (2 if cfg_scale > 0 else 1)
        self.likelihood_stats["requests"] += len(requests)
        self.likelihood_stats["seconds"] += time.perf_counter() - started
        return out

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            "--model unmask does not compute loglikelihood_rolling (perplexity tasks such as wikitext): a masked "
            "diffusion model has no exact token-by-token likelihood and LLaDA's evaluation defines only the "
            "Monte-Carlo bound of a continuation given a context (loglikelihood / multiple-choice tasks)"
        )

    def get_model_info(self) -> dict:
        """Merged into lm-eval's results["config"]: unmask's resolved settings and timing."""
        return {
            "unmask": {
                "overrides": list(self.overrides),
                "model": self.cfg.model,
                "cache": self.cfg.cache,
                "generation": self.cfg.generation,
                "batch_size": self.cfg.batch_size,
                "mc_num": self.mc_num,
                "mc_batch_size": self.mc_batch_size,
                "is_check_greedy": self.is_check_greedy,
                "generate": self.generation_summary() if self.records else None,
                "loglikelihood": dict(self.likelihood_stats) if self.likelihood_stats["requests"] else None,
            }
        }

    # -- unmask's side ---------------------------------------------------------------------------
    def generation_summary(self) -> dict:
        """`unmask eval`'s speed numbers over the requests generated so far (accuracy is lm-eval's)."""
        summary = metrics.summarize(self.records)
        summary.pop("accuracy")
        return {"requests": summary.pop("samples"), **summary}

    def score(self, prefix: list[int], target: list[int]) -> float:
        """The Monte-Carlo log-likelihood of `target` after `prefix` (token ids), seeded by both."""
        if len(prefix) + len(target) > self.model.cfg.max_position:
            raise ValueError(
                f"context + continuation ({len(prefix)} + {len(target)} tokens) exceed the model's maximum length "
                f"of {self.model.cfg.max_position}"
            )
        key = zlib.crc32(repr((prefix, target)).encode())
        generator = torch.Generator().manual_seed((int(self.cfg.seed) + key) % 2**31)
        return mc_loglikelihood(
            self.model.module, prefix, target, self.model.special.mask, generator,
            mc_num=self.mc_num, batch_size=self.mc_batch_size, cfg_scale=float(self.cfg.generation.get("cfg_scale") or 0.0),
        )

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids as lm-eval's causal models split them: trailing spaces of
        the context move to the continuation, and the continuation is what encoding the whole
        text adds after the context's own encoding."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        prefix = self._encode_context(context, chat=False)
        whole = self._encode_context(context + continuation, chat=False)
        target = whole[len(prefix) :]
        if not target:
            raise ValueError(f"the continuation {continuation!r} encodes to no tokens after its context")
        return prefix, target

    def _encode_context(self, text: str, chat: bool) -> list[int]:
        """Token ids of a context: chat-formatted text (lm-eval applied the template) as is, else
        as one user turn of the model's template when `chat`, else BOS + text."""
        from ..models.tokenizer import encode_prompts

        marker = _leading_marker(self.model.chat_template)
        if marker is not None and text.startswith(marker):
            return self.model.tokenizer.encode(text)
        return encode_prompts(self.model, [text], chat)[0]

    def _decoding_key(self, gen_kwargs: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(extra overrides, stop strings) of one request: what decides which requests share a batch."""
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None) or []
        until = (until,) if isinstance(until, str) else tuple(until)
        extra = []
        max_gen_toks = kwargs.pop("max_gen_toks", None)
        if max_gen_toks is not None and not _explicit(self.overrides, "generation.gen_length"):
            extra.append(f"generation.gen_length={int(max_gen_toks)}")
        do_sample = kwargs.pop("do_sample", None)
        if do_sample is False:
            kwargs["temperature"] = 0.0  # greedy, whatever temperature says (as transformers' generate)
        elif do_sample and kwargs.get("temperature") is None:
            kwargs["temperature"] = 1.0  # sampling at transformers' default temperature
        for key, option in GEN_KWARGS.items():
            value = kwargs.pop(key, None)
            if value is not None and not _explicit(self.overrides, f"generation.{option}"):
                extra.append(f"generation.{option}={_text(value)}")
        if kwargs:
            raise ValueError(
                f"generation kwargs {sorted(kwargs)} have no unmask equivalent; handled: "
                f"until, max_gen_toks, do_sample, {', '.join(GEN_KWARGS)}"
            )
        return tuple(extra), until

    def _config(self, extra: tuple[str, ...]) -> RunConfig:
        """The run config with one request group's generation settings (resolved once per group)."""
        if extra not in self._configs:
            self._configs[extra] = resolve_config(self.overrides + list(extra))
        return self._configs[extra]


__all__ = ["UnmaskLM", "hydra_overrides"]
