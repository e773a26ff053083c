"""Masked-diffusion SFT of a small LLaDA-format model on the arithmetic task, on a CPU.

Follows LLaDA's SFT: the prompt (chat template + question) is never masked; the response
(answer, `<|eot_id|>`, then `<|endoftext|>` padding, so the model learns where to stop) is masked
token by token with probability t ~ U(eps, 1) per sample, and the loss is the cross-entropy on
masked tokens weighted by 1/t, divided by the number of response tokens.

Most batches are padded only to their longest response (as LLaDA pads within a mini-batch); a
share `full_length_fraction` is padded to the fixed `response_length` (the gen_length used to
decode), so the model also sees long all-mask canvases. Measured on this task: a canvas that is
mostly padding dilutes attention so much that a 1M-parameter model did not learn to copy numbers
within 2,500 steps, while short canvases learn it within ~1,000.

The output directory is a LLaDA checkpoint `unmask.load` reads (config.json, model.safetensors,
tokenizer.json); `train_state/` beside it holds what a resumed run needs to continue exactly
where it stopped (weights, optimizer, schedule, data-stream position and RNG states).

    python -m unmask.train out=runs/tiny n_layers=4 d_model=128 minutes=60
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .models.checkpoint import save_llada_checkpoint
from .models.model_config import ModelConfig
from .models.families import LLADA_CHAT
from .models.model import DiffusionLM
from .tasks import arith
from .tasks.tokenizer_build import build_tokenizer
from .train_cli import parse_fields, run_and_report
from .train_schedule import ResumableRun, Schedule, save_state, saved_state

# Settings that change the parameters (or what they mean). max_sequence_length is not one: the
# rotary table is computed, so a run may resume with a longer context (to train longer canvases).
ARCH_KEYS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "mlp_hidden_size", "rope_theta")


@dataclass
class TrainConfig:
    """Every knob of a run; `main` sets them from `key=value` arguments."""

    out: str = "runs/tiny"
    # model
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int = 0  # 0 = n_heads
    mlp_hidden_size: int = 0  # 0 = 3 * d_model
    max_sequence_length: int = 512
    rope_theta: float = 10000.0
    init_std: float = 0.0  # 0 = 1/sqrt(d_model); 0.02 made attention (copying) learn far slower
    number_init: str = "random"  # "fourier": number tokens start on a number line (init_number_rows)
    # data
    response_length: int = 256  # answer + EOT + EOS padding; match the gen_length used to decode
    full_length_fraction: float = 0.25  # batches padded to response_length; the rest to their longest answer
    mask_eps: float = 1e-3
    tokenizer_samples: int = 5000
    whole_numbers: bool = True  # numbers 0..999 are single tokens (tokenizer_build); false = one per digit
    copy_fraction: float = 0.0  # share of auxiliary "repeat the question" problems (arith.copy_problem)
    drill_fraction: float = 0.0  # share of auxiliary "work out these equations" problems (arith.drill_problem)
    # optimisation (at lr 3e-3 the model had not learned to copy after 6,000 steps; 5e-4..1e-3 did)
    batch_size: int = 16
    lr: float = 6e-4
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta2: float = 0.99
    grad_clip: float = 1.0
    bf16: bool = True  # bf16 autocast: 2x the tokens/s of float32 on this AVX512-BF16 CPU
    # budget: stop at whichever comes first (0 = no limit; at least one must be set)
    max_steps: int = 0
    minutes: float = 0.0
    # bookkeeping
    seed: int = 0
    threads: int = 0  # 0 = torch's default
    save_every: int = 500
    resume: bool = True
    # A new run's starting weights and tokenizer: a LLaDA checkpoint dir or `tiny` (the shipped model),
    # with a fresh optimizer, schedule and data stream. Ignored (with a note) when out= resumes.
    init_from: str = ""
    progress: bool = True

    def ffn(self) -> int:
        return self.mlp_hidden_size or 3 * self.d_model

    def std(self) -> float:
        return self.init_std or self.d_model**-0.5


# -- model --------------------------------------------------------------------------------


def model_config(cfg: TrainConfig, vocab: int) -> ModelConfig:
    return ModelConfig(
        family="llada",
        hidden_size=cfg.d_model,
        num_layers=cfg.n_layers,
        num_heads=cfg.n_heads,
        num_kv_heads=cfg.n_kv_heads or cfg.n_heads,
        intermediate_size=cfg.ffn(),
        vocab_size=vocab,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=1e-5,
        max_position=cfg.max_sequence_length,
        qkv_bias=False,
        shift_logits=False,
    )


def checkpoint_config(cfg: TrainConfig, vocab: int, embedding: int, ids: dict[str, int]) -> dict:
    """config.json in LLaDA's OLMo-style keys plus the special-token ids `unmask.load` reads."""
    return {
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        "d_model": cfg.d_model,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads or cfg.n_heads,
        "mlp_hidden_size": cfg.ffn(),
        "vocab_size": vocab,
        "embedding_size": embedding,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": 1e-5,
        "max_sequence_length": cfg.max_sequence_length,
        "include_bias": False,
        "weight_tying": False,
        "mask_token_id": ids["mask"],
        "eos_token_id": ids["eos"],
        "eot_token_id": ids["eot"],
        "bos_token_id": ids["bos"],
        "pad_token_id": ids["eos"],
    }


def init_weights(module: DiffusionLM, std: float) -> None:
    """GPT-style init: N(0, std), residual outputs scaled by 1/sqrt(2 * layers), norms at 1."""
    n_layers = len(module.layers)
    for name, p in module.named_parameters():
        if p.dim() < 2:
            torch.nn.init.ones_(p)
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            torch.nn.init.normal_(p, std=std / math.sqrt(2 * n_layers))
        else:
            torch.nn.init.normal_(p, std=std)


NUMBER_INIT = ("random", "fourier")
# Whole periods, so every phase is exact modular arithmetic: the periods 10, 100, 1000 carry a
# number's last one, two and three digits (carries included), the small ones its residues.
FOURIER_PERIODS = (2, 3, 4, 5, 7, 8, 9, 10, 20, 25, 50, 100, 200, 250, 500, 1000)
FOURIER_DIMS = 2 * len(FOURIER_PERIODS)


def init_number_rows(module: DiffusionLM, vocab: dict[str, int], std: float) -> int:
    """Start every whole-number token's input and output rows on a number line.

    The first FOURIER_DIMS dimensions of number n become cos/sin(2 pi n / P) over the periods
    FOURIER_PERIODS, the rest stay random. Adding or subtracting two numbers is then a rotation
    of these features (products of two of them, which the gated MLP computes directly) and
    reading out a result is a dot product with the same features, the solution small
    transformers otherwise find only after long training on modular arithmetic. Measured on the
    bundled task: with periods spaced geometrically from 2 to 2,000 (none of them 10, 100 or
    1000), additions came out close but mostly not exact after 7,500 steps; whole periods make
    the units phase exact. Returns how many rows were set.
    """
    periods = torch.tensor(FOURIER_PERIODS, dtype=torch.float64)
    numbers = {tok: int(tok) for tok in vocab if tok.isdigit() and (tok == "0" or not tok.startswith("0"))}
    if not numbers:
        return 0
    rows = torch.tensor([vocab[t] for t in numbers])
    values = torch.tensor(list(numbers.values()), dtype=torch.float64).unsqueeze(1)
    angles = 2 * math.pi * values / periods
    features = torch.cat([angles.cos(), angles.sin()], dim=1) * std * math.sqrt(2)
    with torch.no_grad():
        for weight in (module.embed.weight, module.lm_head.weight):
            weight[rows, :FOURIER_DIMS] = features.to(weight.dtype)
    return len(rows)


# -- data ---------------------------------------------------------------------------------


class SFTCollator:
    """Turns problems into (input ids, attention mask, response mask) with left-padded prompts.

    The response is the answer, `<|eot_id|>`, then `<|endoftext|>` up to `response_length`
    (`full=True`) or, as LLaDA's SFT pads within a mini-batch, up to the batch's longest response.
    """

    def __init__(self, tokenizer, ids: dict[str, int], response_length: int):
        self.tok, self.ids, self.response_length = tokenizer, ids, response_length

    def encode(self, problem: dict) -> tuple[list[int], list[int]]:
        prompt = self.tok.encode(LLADA_CHAT.format(content=problem["question"]), add_special_tokens=False).ids
        answer = self.tok.encode(problem["answer"], add_special_tokens=False).ids + [self.ids["eot"]]
        return prompt, answer[: self.response_length]

    def __call__(self, problems: list[dict], full: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        pairs = [self.encode(p) for p in problems]
        width = max(len(p) for p, _ in pairs)
        length = self.response_length if full else max(len(r) for _, r in pairs)
        rows, attn = [], []
        for prompt, response in pairs:
            pad = width - len(prompt)
            rows.append([self.ids["eos"]] * pad + prompt + response + [self.ids["eos"]] * (length - len(response)))
            attn.append([0] * pad + [1] * (len(prompt) + length))
        input_ids = torch.tensor(rows, dtype=torch.long)
        attention = torch.tensor(attn, dtype=torch.long)
        response_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        response_mask[:, width:] = True
        return input_ids, attention, response_mask


def diffusion_loss(
    module: DiffusionLM, batch: tuple[Tensor, Tensor, Tensor], mask_id: int, eps: float, gen: torch.Generator
) -> Tensor:
    """LLaDA's SFT loss: mask response tokens w.p. t, CE on masked tokens / t, per response token.

    Each sample's t is uniform; the batch's t are stratified (one per 1/B interval, MDLM's
    low-discrepancy sampler) so every batch sees nearly-clean and nearly-masked responses.
    """
    input_ids, attention, response = batch
    b = input_ids.shape[0]
    u = (torch.rand(1, generator=gen) + torch.arange(b) / b) % 1.0
    t = (eps + (1 - eps) * u[torch.randperm(b, generator=gen)]).unsqueeze(1)
    masked = (torch.rand(input_ids.shape, generator=gen) < t) & response
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    logits = module(noisy, attention_mask=attention)
    ce = F.cross_entropy(logits[masked].float(), input_ids[masked], reduction="none")
    weight = (1.0 / t).expand_as(input_ids)[masked]
    return (ce * weight).sum() / (b * response[0].sum())


# -- optimizer ----------------------------------------------------------------------------


def make_optimizer(module: DiffusionLM, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on norms and embeddings."""
    decay, keep = [], []
    for name, p in module.named_parameters():
        (decay if p.dim() >= 2 and not name.startswith("embed") else keep).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))


# -- run state ----------------------------------------------------------------------------


@dataclass
class Run(ResumableRun):
    """Everything a training run mutates, and what `train_state/` saves of it."""

    cfg: TrainConfig
    out: Path
    module: DiffusionLM
    optimizer: torch.optim.AdamW
    schedule: Schedule
    stream: arith.ProblemStream
    gen: torch.Generator
    collator: SFTCollator
    ids: dict[str, int]
    checkpoint_cfg: dict

    def save(self) -> None:
        """Write the loadable checkpoint, then (atomically) the state a resumed run continues from."""
        save_llada_checkpoint(self.module, self.out, self.checkpoint_cfg)
        save_state(self.out, self.state())

    def modules(self) -> dict:
        return {"model": self.module}


def _special_ids(tokenizer) -> dict[str, int]:
    names = {"mask": "<|mdm_mask|>", "eos": "<|endoftext|>", "eot": "<|eot_id|>", "bos": "<|startoftext|>"}
    return {role: tokenizer.token_to_id(tok) for role, tok in names.items()}


def _tokenizer(cfg: TrainConfig, out: Path, resuming: bool):
    """The run's tokenizer: reuse out/tokenizer.json when resuming, else build it from sample problems."""
    from tokenizers import Tokenizer

    path = out / "tokenizer.json"
    if not (resuming and path.exists()):
        sample = arith.ProblemStream(seed=10_000 + cfg.seed, exclude=set())
        texts = [f"{p['question']}\n{p['answer']}" for p, _ in zip(sample, range(cfg.tokenizer_samples))]
        texts += [" ".join(arith.lexicon()), LLADA_CHAT, arith.COPY_PROMPT]
        build_tokenizer(out, texts, whole_numbers=cfg.whole_numbers)
    return Tokenizer.from_file(str(path))


def _saved_state(out: Path, cfg: TrainConfig) -> dict | None:
    """The state to resume from, if any; refuses another model shape, warns about other changes."""
    return saved_state(out, cfg, ARCH_KEYS, "the model shape")


def _start_weights(cfg: TrainConfig, out: Path) -> DiffusionLM | None:
    """The module of `init_from` (its tokenizer copied into out/), checked against this run's shape."""
    import shutil

    from .models.checkpoint import load, resolve_path

    source = resolve_path(cfg.init_from)
    saved = json.loads((source / "config.json").read_text())
    wanted = {
        "n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads or cfg.n_heads, "mlp_hidden_size": cfg.ffn(), "rope_theta": cfg.rope_theta,
    }
    differ = [f"{k}={saved.get(k)}" for k, v in wanted.items() if saved.get(k) != v]
    if differ:
        raise ValueError(
            f"init_from={cfg.init_from}: its shape differs from this run's ({', '.join(differ)} in {source}/config.json); "
            "pass the same sizes"
        )
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "tokenizer.json", out / "tokenizer.json")
    return load(source, dtype="float32", device="cpu").module


def build_run(cfg: TrainConfig) -> tuple[Run, bool]:
    """Create (or restore from out/train_state) the model, optimizer, schedule and data stream."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = _saved_state(out, cfg)
    start = None
    if cfg.init_from and state is not None:
        print(f"{out} resumes its own run; init_from={cfg.init_from} applies to new runs only", file=sys.stderr)
    elif cfg.init_from:
        start = _start_weights(cfg, out)
    tokenizer = _tokenizer(cfg, out, resuming=state is not None or start is not None)
    ids = _special_ids(tokenizer)
    vocab = tokenizer.get_vocab_size()
    embedding = -(-vocab // 64) * 64  # rows padded for faster matmuls; the extra ids are never targets
    torch.manual_seed(cfg.seed)
    module = DiffusionLM(model_config(cfg, embedding))
    init_weights(module, cfg.std())
    if cfg.number_init == "fourier":
        init_number_rows(module, tokenizer.get_vocab(), cfg.std())
    if start is not None:
        module.load_state_dict(start.state_dict())
    run = Run(
        cfg=cfg,
        out=out,
        module=module,
        optimizer=make_optimizer(module, cfg),
        schedule=Schedule(cfg),
        stream=arith.ProblemStream(cfg.seed, copy_fraction=cfg.copy_fraction, drill_fraction=cfg.drill_fraction),
        gen=torch.Generator().manual_seed(cfg.seed),
        collator=SFTCollator(tokenizer, ids, cfg.response_length),
        ids=ids,
        checkpoint_cfg=checkpoint_config(cfg, vocab, embedding, ids),
    )
    if state is not None:
        run.restore(state)
    return run, state is not None


def train_step(run: Run) -> tuple[float, int]:
    """One optimizer step on a fresh batch; returns (loss, tokens in the batch)."""
    cfg, module = run.cfg, run.module
    full = bool(torch.rand(1, generator=run.gen) < cfg.full_length_fraction)
    batch = run.collator([next(run.stream) for _ in range(cfg.batch_size)], full=full)
    for group in run.optimizer.param_groups:
        group["lr"] = run.schedule.lr()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        loss = diffusion_loss(module, batch, run.ids["mask"], cfg.mask_eps, run.gen)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
    run.optimizer.step()
    return float(loss.detach()), batch[0].numel()


def train(config: TrainConfig | dict) -> dict[str, Any]:
    """Train (or resume) into `config.out`; returns a summary (steps, minutes, loss, tokens/s, the module)."""
    from tqdm import tqdm

    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    if not (cfg.max_steps or cfg.minutes):
        raise ValueError("set max_steps or minutes (or both): training needs a budget")
    if cfg.number_init not in NUMBER_INIT:
        raise ValueError(f"number_init={cfg.number_init!r}; valid choices: {list(NUMBER_INIT)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run, resumed = build_run(cfg)
    module, sched = run.module, run.schedule
    module.train()
    start_step, start_elapsed = sched.step, sched.elapsed
    first_loss, ema, tokens, interrupted = None, None, 0, False
    bar = tqdm(total=cfg.max_steps or None, initial=sched.step, disable=not cfg.progress, unit="step", dynamic_ncols=True)
    clock = time.perf_counter()
    try:
        while not sched.done():
            loss, n = train_step(run)
            sched.step += 1
            sched.elapsed = start_elapsed + time.perf_counter() - clock
            tokens += n
            first_loss = loss if first_loss is None else first_loss
            ema = loss if ema is None else 0.98 * ema + 0.02 * loss
            rate = tokens / max(1e-9, sched.elapsed - start_elapsed)
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.4f}", tok_s=f"{rate:.0f}", lr=f"{run.schedule.lr():.2e}", refresh=False)
            if cfg.save_every and sched.step % cfg.save_every == 0:
                run.save()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        run.save()
    module.eval()
    seconds = sched.elapsed - start_elapsed
    return {
        "out": str(run.out),
        "resumed": resumed,
        "interrupted": interrupted,
        "steps": sched.step,
        "steps_this_run": sched.step - start_step,
        "minutes": sched.elapsed / 60,
        "first_loss": first_loss,
        "loss_ema": ema,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "parameters": sum(p.numel() for p in module.parameters()),
        "module": module,
    }


# -- command line -------------------------------------------------------------------------


def parse_overrides(argv: list[str]) -> TrainConfig:
    """`key=value` arguments onto TrainConfig, each read as its field's type (`unmask.parsing`)."""
    return parse_fields(TrainConfig, argv, "unmask train")


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m unmask.train key=value ...` and `unmask train`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a.lstrip("-").startswith("family=") for a in argv):  # family=llada-v: train_vision
        from .train_vision import main as main_vision

        return main_vision(argv)
    return run_and_report(train, parse_overrides(argv), hidden=("module",))


if __name__ == "__main__":
    raise SystemExit(main())
