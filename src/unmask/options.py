"""Generation options (the Hydra `generation.*` keys) and their validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .decoding.sampling import ALGS, CONFIDENCE_DTYPES, DREAM_ALGS, LLADA_ALGS


# LLaDA-V's official generate never lets a masked position become one of these (it lists the 8B
# tokenizer's ids 126081, 126080, 126346, 126347; unmask resolves them by name).
LLADA_V_SUPPRESSED = ("<|endoftext|>", "<|startoftext|>", "<|start_header_id|>", "<|end_header_id|>")

MAX_SIGMA = 10_000  # the certainty prior's kernel spans 6 sigma; wider is flat over any canvas

# The hub's Dream `diffusion_generate` builds its generation config from the model config, which
# under the transformers version it pins carries top_k=50 (top_p=1.0 keeps every token).
DREAM_HUB_TOP_K = 50

BATCH_STEPS = ("auto", "own", "shared")  # how several prompts of one call step (GenerationOptions.batch_steps)


@dataclass
class GenerationOptions:
    gen_length: int = 256
    block_length: int | None = 32  # None = one block spanning gen_length
    steps: int | None = None  # None = gen_length (one token per step) for scheduled decoding
    temperature: float = 0.0
    alg: str | None = None  # None = low_confidence (LLaDA) or entropy (Dream; maskgit_plus with threshold/factor)
    remasking: str | None = None  # LLaDA's name for alg: low_confidence | random
    alg_temp: float = 0.0
    top_p: float | None = None
    top_k: int | None = None  # None = family default (Dream: 50, as the hub call inherits); 0 = no top-k filter
    eps: float = 1e-3
    # Softmax dtype of low_confidence: auto = what the method's official loop uses (see CachePolicy).
    confidence_dtype: str = "auto"
    schedule: str = "auto"  # linear (LLaDA) | eps (Dream) | auto (by model family)
    threshold: float | None = None
    factor: float | None = None
    sigma: float = 0.0  # certainty prior, 0 = off
    cfg_scale: float = 0.0
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    stop_until_eos: bool | None = None  # None = the family's default (true for llada-v, false otherwise)
    # Once a sequence has committed an EOS/EOT, decode only the masks before the first one (LLaDA-V's
    # stopping rule). None = the family's default (true for llada-v when stop_until_eos).
    commit_before_stop: bool | None = None
    # Token names whose logits are -inf at masked positions (never generated). None = the family's default
    # (llada-v: the four its official generate forbids, those the tokenizer has); [] = none.
    suppress_tokens: list[str] | None = None
    seed: int | None = None
    chat: bool = True  # apply the model's chat template to text prompts
    # Several greedy prompts in one call: "own" = one loop per prompt stepped together (each takes only
    # its own steps), "shared" = one batched loop (every prompt steps until the slowest finishes each
    # block, as the official batched generate), "auto" = own on CPU, shared on accelerators (measured
    # faster there: the batched loop launches fewer kernels per step). Tokens are the same either way.
    batch_steps: str = "auto"

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def build(cls, family: str, **kwargs) -> "GenerationOptions":
        unknown = sorted(set(kwargs) - set(cls.names()))
        if unknown:
            raise ValueError(f"unknown generation option(s) {unknown}; valid options: {cls.names()}")
        opts = cls(**kwargs)
        opts.resolve(family)
        return opts

    # -- derived values ------------------------------------------------------
    @property
    def parallel(self) -> bool:
        return self.threshold is not None or self.factor is not None

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    @staticmethod
    def family_defaults(family: str | None) -> dict:
        """Options whose default depends on the model family (LLaDA-V's official generate stops at EoT)."""
        return {"stop_until_eos": family == "llada-v"}

    def resolve(self, family: str) -> None:
        """Fill family defaults and reject impossible combinations, naming the keys involved."""
        self._resolve_stops(family)
        for name in ("temperature", "alg_temp", "top_p", "eps", "threshold", "factor", "sigma", "cfg_scale"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"generation.{name}={value} must be a finite number")
        if self.remasking is not None:
            if self.alg is not None and self.alg != self.remasking:
                raise ValueError("set only one of generation.alg and generation.remasking (they are the same choice)")
            if self.remasking not in LLADA_ALGS:
                raise ValueError(f"generation.remasking={self.remasking!r}; valid choices: {list(LLADA_ALGS)}")
            self.alg = self.remasking
        if self.alg is None:
            self.alg = self._default_alg(family)
        if self.alg not in ALGS:
            raise ValueError(f"generation.alg={self.alg!r}; valid choices: {list(ALGS)}")
        if self.schedule == "auto":
            self.schedule = "eps" if family == "dream" else "linear"
        if self.schedule not in ("linear", "eps"):
            raise ValueError(f"generation.schedule={self.schedule!r}; valid choices: ['auto', 'linear', 'eps']")
        if self.gen_length <= 0:
            raise ValueError(f"generation.gen_length={self.gen_length} must be positive")
        if self.batch_steps not in BATCH_STEPS:
            raise ValueError(f"generation.batch_steps={self.batch_steps!r}; valid choices: {list(BATCH_STEPS)}")
        if self.block_length is None:
            self.block_length = self.gen_length
        if self.block_length <= 0 or self.gen_length % self.block_length:
            raise ValueError(
                f"generation.gen_length={self.gen_length} must be a multiple of generation.block_length={self.block_length}"
            )
        if self.threshold is not None and self.factor is not None:
            raise ValueError("set generation.threshold or generation.factor, not both")
        if self.parallel and self.steps is not None:
            raise ValueError(
                "generation.steps has no effect with generation.threshold/factor (parallel decoding runs until each "
                "block is done); leave steps unset"
            )
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"generation.threshold={self.threshold} must be in (0, 1]")
        if self.factor is not None and self.factor <= 0:
            raise ValueError(f"generation.factor={self.factor} must be positive")
        if not self.parallel:
            if self.steps is None:
                self.steps = self.gen_length
            if self.steps <= 0 or self.steps % self.num_blocks:
                raise ValueError(
                    f"generation.steps={self.steps} must be a positive multiple of the number of blocks "
                    f"({self.num_blocks} = gen_length {self.gen_length} / block_length {self.block_length})"
                )
            if self.steps > self.gen_length:
                raise ValueError(f"generation.steps={self.steps} exceeds generation.gen_length={self.gen_length}")
        if self.confidence_dtype == "auto" and family == "llada-v" and self.alg == "low_confidence":
            self.confidence_dtype = "float64"  # LLaDA-V's generate: softmax of the float32 logits in float64
        if self.confidence_dtype not in CONFIDENCE_DTYPES:
            raise ValueError(f"generation.confidence_dtype={self.confidence_dtype!r}; valid choices: {list(CONFIDENCE_DTYPES)}")
        if self.confidence_dtype != "auto" and self.alg != "low_confidence":
            raise ValueError(
                f"generation.confidence_dtype applies to alg=low_confidence, not alg={self.alg} "
                "(Dream's algorithms compute in float32, as Dream's code does)"
            )
        if self.temperature < 0:
            raise ValueError(f"generation.temperature={self.temperature} must be >= 0")
        if self.top_p == 1:
            self.top_p = None  # keeps every token: the same as no nucleus filter (OpenAI clients send it)
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"generation.top_p={self.top_p} must be in (0, 1]")
        self._resolve_top_k(family)
        if self.alg in LLADA_ALGS and (self.top_p is not None or self.top_k is not None):
            raise ValueError(f"generation.top_p/top_k apply to the Dream algorithms {list(DREAM_ALGS)}, not alg={self.alg}")
        if self.alg_temp > 0 and (self.alg in LLADA_ALGS or self.alg == "origin" or self.parallel):
            raise ValueError(f"generation.alg_temp applies to scheduled decoding with alg in {list(DREAM_ALGS[:3])}")
        if self.alg == "origin" and self.parallel:
            raise ValueError("generation.alg=origin commits at random and cannot be combined with threshold/factor")
        if self.alg == "entropy" and self.parallel:
            raise ValueError(
                "generation.threshold/factor compare a probability; alg=entropy scores by negative entropy "
                "(use maskgit_plus, Dream's default with threshold/factor, or topk_margin)"
            )
        if not 0 <= self.sigma <= MAX_SIGMA:
            raise ValueError(f"generation.sigma={self.sigma} must be in [0, {MAX_SIGMA}]")
        if not 0 < self.eps < 1:
            raise ValueError(f"generation.eps={self.eps} must be in (0, 1)")
        if self.alg_temp < 0:
            raise ValueError(f"generation.alg_temp={self.alg_temp} must be >= 0")
        if self.sigma > 0 and self.alg in ("entropy", "random", "origin"):
            raise ValueError(
                f"generation.sigma > 0 (certainty prior) needs a probability confidence; alg={self.alg} is not one "
                "(use low_confidence, maskgit_plus or topk_margin)"
            )
        if self.cfg_scale < 0:
            raise ValueError(f"generation.cfg_scale={self.cfg_scale} must be >= 0")

    def _resolve_stops(self, family: str) -> None:
        """LLaDA-V's stopping rule and forbidden tokens by default for its family; explicit values win."""
        if self.stop_until_eos is None:
            self.stop_until_eos = self.family_defaults(family)["stop_until_eos"]
        if self.commit_before_stop is None:
            self.commit_before_stop = family == "llada-v" and self.stop_until_eos
        if self.commit_before_stop and not self.stop_until_eos:
            raise ValueError("generation.commit_before_stop=true needs generation.stop_until_eos=true")
        if self.suppress_tokens is not None:
            if isinstance(self.suppress_tokens, str) or not all(isinstance(t, str) and t for t in self.suppress_tokens):
                raise ValueError(f"generation.suppress_tokens={self.suppress_tokens!r} must be a list of token names")
            self.suppress_tokens = list(self.suppress_tokens)

    def _default_alg(self, family: str) -> str:
        """Dream's official threshold loops (`alg=confidence_threshold`) score by the top probability."""
        if family != "dream":
            return "low_confidence"
        return "maskgit_plus" if self.parallel else "entropy"

    def _resolve_top_k(self, family: str) -> None:
        """None takes the family default (Dream's hub top_k for Dream algorithms); 0 turns the filter off."""
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0):
            raise ValueError(f"generation.top_k={self.top_k!r} must be a whole number >= 0 (0 = no top-k filter)")
        if self.top_k is None and family == "dream" and self.alg in DREAM_ALGS:
            self.top_k = DREAM_HUB_TOP_K
        elif self.top_k == 0:
            self.top_k = None
