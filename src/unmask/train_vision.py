"""`unmask train family=llada-v`: teach a LLaDA-format LM to read pictures (the bundled `tiny-v`).

A small SigLIP tower, the `mlp2x_gelu` projector and the image newline are trained from scratch
on the `arith-v` task, on top of a language model that starts from a LLaDA checkpoint (`tiny`,
the bundled one, by default) and is tuned at its own, lower learning rate (`lm_lr=0` freezes it).
The loss is the LM's masked-diffusion SFT loss of `unmask.train` (answer masked with probability
t, cross-entropy on masked tokens / t), computed on prompts whose `<image>` rows are the packed
image features, exactly as decoding later builds them (anyres preprocessing, splicing at -200).

The output directory is a checkpoint in LLaDA-V's hub layout (`save_llada_v_checkpoint`) that
`unmask.load` reads, with the LM's tokenizer and its own chat template (LLaDA's, without
LLaDA-V's long system prompt, which a word-level tokenizer would spell out letter by letter);
`train_state/` beside it lets an interrupted run continue exactly where it stopped.

    unmask train family=llada-v out=training/tiny-v minutes=40 threads=1
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .models.checkpoint import load, resolve_path, save_llada_v_checkpoint
from .models.families import LLADA_CHAT
from .models.model import DiffusionLM
from .tasks import arith_v
from .tasks.arith_v_task import ArithVTask
from .train_cli import parse_fields, run_and_report
from .train_schedule import ResumableRun, Schedule, save_state, saved_state
from .vision.encoder import VisionEncoder
from .vision.processor import ImageProcessorConfig, process_image
from .vision.prompt import IMAGE_PLACEHOLDER, IMAGE_TEXT, splice_images
from .vision.tower import SiglipConfig

FAMILY = "llada-v"
# Settings that change the parameters' shapes: a run cannot resume with others.
ARCH_KEYS = ("tile_size", "patch_size", "vision_hidden", "vision_intermediate", "vision_layers", "vision_heads")


@dataclass
class VisionTrainConfig:
    """Every knob of a llada-v run; `main` sets them from `key=value` arguments."""

    family: str = FAMILY
    out: str = "training/tiny-v"
    init_from: str = "tiny"  # the language model to start from (a LLaDA checkpoint dir or `tiny`)
    # vision tower (SigLIP layout; `vision_layers` = the layers stored and used)
    tile_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_intermediate: int = 256
    vision_layers: int = 2
    vision_heads: int = 4
    # Grid pinpoints: every rows x cols canvas of tiles with rows, cols <= max_grid. With 1 (the
    # default) every picture is one tile plus the base, both showing the whole picture, so every
    # patch row can carry its count; with 2x2 tiles most rows see a quarter of it, and the LM
    # learned to read the count several times slower (measured: 25 % vs 55 % of counts read
    # after 400 steps).
    max_grid: int = 1
    max_tiles: int = 1  # the N of anyres_max_N
    # data
    response_length: int = 64  # answer + EOT + EOS padding; the gen_length arith-v decodes with
    full_length_fraction: float = 0.1
    mask_eps: float = 1e-3
    # An auxiliary loss (0 = off): every feature of the picture's base tile, read through the LM's
    # input embedding as logits, should name the picture's count. It points those rows at the
    # number's own token so that the LM's copying finds them sooner; the card says what it changed.
    count_weight: float = 1.0
    # optimisation
    batch_size: int = 16
    lr: float = 3e-3  # vision tower, projector, newline
    lm_lr: float = 1e-4  # the language model (0 = frozen); 1e-3 broke its arithmetic (see the tiny-v card)
    min_lr_ratio: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    bf16: bool = True
    # budget: stop at whichever comes first (at least one must be set)
    max_steps: int = 0
    minutes: float = 0.0
    # bookkeeping
    seed: int = 0
    threads: int = 0
    save_every: int = 200
    resume: bool = True
    progress: bool = True

    def tower(self) -> SiglipConfig:
        return SiglipConfig(
            hidden_size=self.vision_hidden, intermediate_size=self.vision_intermediate, num_layers=self.vision_layers,
            num_heads=self.vision_heads, image_size=self.tile_size, patch_size=self.patch_size,
        )

    def processor(self) -> ImageProcessorConfig:
        sizes = range(1, self.max_grid + 1)
        return ImageProcessorConfig(
            tile_size=self.tile_size, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
            grid_pinpoints=tuple((self.tile_size * r, self.tile_size * c) for r in sizes for c in sizes),
            max_tiles=self.max_tiles,
        )


# -- data ---------------------------------------------------------------------------------


def prompt_ids(tokenizer, template: str, content: str) -> list[int]:
    """Chat-formatted prompt ids with -200 where `<image>` stands (each text piece tokenized alone,
    as `unmask.generate` lays out an image prompt)."""
    text = template.format(content=content)
    ids: list[int] = []
    for i, piece in enumerate(text.split(IMAGE_TEXT)):
        if i:
            ids.append(IMAGE_PLACEHOLDER)
        ids.extend(tokenizer.encode(piece))
    return ids


@dataclass
class Batch:
    """Model inputs with the response still clean: ids (image rows = pad), embeds, masks."""

    ids: Tensor  # [B, T]
    embeds: Tensor  # [B, T, d]: text, image features and padding rows
    attention: Tensor  # [B, T]
    response: Tensor  # [B, T] bool
    base_features: Tensor  # [B, patches, d]: each picture's base-tile rows (the whole picture, first in the packing)
    counts: Tensor  # [B] the picture's count


class Collator:
    """Problems -> a left-padded Batch whose prompt rows hold the spliced image features."""

    def __init__(self, tokenizer, special, template: str, vision: VisionEncoder, lm: DiffusionLM, response_length: int):
        self.tok, self.special, self.template = tokenizer, special, template
        self.vision, self.lm, self.response_length = vision, lm, response_length

    def __call__(self, problems: list[dict], full: bool) -> Batch:
        pad, eot = self.special.pad, self.special.eot
        samples = [ArithVTask.sample(p) for p in problems]  # the prompt and picture evaluation sees
        images = [process_image(s.images[0], self.vision.processor) for s in samples]
        features = self.vision.encode(images)
        spliced = [splice_images(prompt_ids(self.tok, self.template, s.prompt), [f], self.lm.embed, pad)
                   for s, f in zip(samples, features)]
        answers = [(self.tok.encode(p["answer"]) + [eot])[: self.response_length] for p in problems]
        width = max(len(s.ids) for s in spliced)
        length = self.response_length if full else max(len(a) for a in answers)
        rows, embeds, attn = [], [], []
        pad_row = self.lm.embed(torch.tensor([pad]))
        for s, answer in zip(spliced, answers):
            left = width - len(s.ids)
            rows.append([pad] * left + s.ids + answer + [pad] * (length - len(answer)))
            embeds.append(torch.cat([pad_row.expand(left, -1), s.embeds]))
            attn.append([0] * left + [1] * (len(s.ids) + length))
        ids = torch.tensor(rows)
        response = torch.zeros_like(ids, dtype=torch.bool)
        response[:, width:] = True
        return Batch(ids=ids, embeds=torch.stack(embeds), attention=torch.tensor(attn), response=response,
                     base_features=torch.stack([f[: self.vision.tower.cfg.num_patches] for f in features]),
                     counts=torch.tensor([p["count"] for p in problems]))


def diffusion_loss(lm: DiffusionLM, batch: Batch, mask_id: int, eps: float, gen: torch.Generator) -> Tensor:
    """`unmask.train.diffusion_loss` on a batch whose prompt comes as embeddings.

    The response rows are embedded here (masked ones as the mask token) after the prompt's rows.
    """
    b, width = batch.ids.shape[0], int((~batch.response[0]).sum())
    u = (torch.rand(1, generator=gen) + torch.arange(b) / b) % 1.0
    t = (eps + (1 - eps) * u[torch.randperm(b, generator=gen)]).unsqueeze(1)
    masked = (torch.rand(batch.ids.shape, generator=gen) < t) & batch.response
    noisy = torch.where(masked, torch.full_like(batch.ids, mask_id), batch.ids)
    embeds = torch.cat([batch.embeds, lm.embed(noisy[:, width:])], dim=1)
    logits = lm(None, attention_mask=batch.attention, inputs_embeds=embeds)
    ce = F.cross_entropy(logits[masked].float(), batch.ids[masked], reduction="none")
    weight = (1.0 / t).expand_as(batch.ids)[masked]
    return (ce * weight).sum() / (b * batch.response[0].sum())


def count_loss(lm: DiffusionLM, batch: Batch, count_ids: Tensor) -> Tensor:
    """Cross-entropy of each base-tile row, scored against the LM's input embedding, with the
    picture's count token. Only base rows: the tower sees one tile at a time, and only the base
    tile shows the whole picture."""
    features = batch.base_features.float().flatten(0, 1)
    targets = count_ids[batch.counts].repeat_interleave(batch.base_features.shape[1])
    return F.cross_entropy(features @ lm.embed.weight.float().T, targets)


# -- run ----------------------------------------------------------------------------------


@dataclass
class Run(ResumableRun):
    """Everything a run mutates, and what `train_state/` saves of it."""

    cfg: VisionTrainConfig
    out: Path
    lm: DiffusionLM
    vision: VisionEncoder
    optimizer: torch.optim.AdamW
    schedule: Schedule
    stream: arith_v.ProblemStream
    gen: torch.Generator
    collator: Collator
    special: Any
    count_ids: Tensor
    hub_config: dict

    def save(self) -> None:
        """Write the loadable checkpoint, then (atomically) the state a resumed run continues from."""
        save_llada_v_checkpoint(self.lm, self.vision, self.out, self.hub_config)
        save_state(self.out, self.state())

    def modules(self) -> dict:
        return {"lm": self.lm, "vision": self.vision}


def _saved_state(out: Path, cfg: VisionTrainConfig) -> dict | None:
    """The state to resume from, if any; refuses another tower shape, reports other changes."""
    return saved_state(out, cfg, ARCH_KEYS, "the vision tower's shape")


def _optimizer(cfg: VisionTrainConfig, lm: DiffusionLM, vision: VisionEncoder) -> torch.optim.AdamW:
    groups = [{"params": list(vision.parameters()), "lr": cfg.lr, "base_lr": cfg.lr}]
    if cfg.lm_lr > 0:
        groups.append({"params": list(lm.parameters()), "lr": cfg.lm_lr, "base_lr": cfg.lm_lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))


def build_run(cfg: VisionTrainConfig) -> tuple[Run, bool]:
    """The LM (from init_from, or the run's own state), a fresh vision encoder, optimizer, data."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = _saved_state(out, cfg)
    source = resolve_path(cfg.init_from)
    start = load(source, dtype="float32", device="cpu")
    if start.vision is not None:
        raise ValueError(f"init_from={cfg.init_from}: a LLaDA-V checkpoint; start from a text LLaDA model (e.g. tiny)")
    torch.manual_seed(cfg.seed)
    lm = DiffusionLM(dataclasses.replace(start.cfg, family=FAMILY))
    lm.load_state_dict(start.module.state_dict())
    lm.requires_grad_(cfg.lm_lr > 0)
    vision = VisionEncoder(cfg.tower(), lm.cfg.hidden_size, cfg.processor(), post_layernorm=False)
    shutil.copyfile(source / "tokenizer.json", out / "tokenizer.json")
    special, tok = start.special, start.tokenizer
    counts = torch.zeros(max(arith_v.COUNTS) + 1, dtype=torch.long)
    for k in arith_v.COUNTS:
        ids = tok.encode(str(k))
        if len(ids) != 1:
            raise ValueError(f"init_from={cfg.init_from}: its tokenizer splits the number {k}; count_weight needs one token")
        counts[k] = ids[0]
    hub_config = {
        "bos_token_id": special.bos, "eos_token_id": special.eos, "pad_token_id": special.pad,
        "mask_token_id": special.mask, "eot_token_id": special.eot, "unmask_chat_template": LLADA_CHAT,
    }
    run = Run(
        cfg=cfg, out=out, lm=lm, vision=vision, optimizer=_optimizer(cfg, lm, vision), schedule=Schedule(cfg),
        stream=arith_v.ProblemStream(cfg.seed), gen=torch.Generator().manual_seed(cfg.seed),
        collator=Collator(tok, special, LLADA_CHAT, vision, lm, cfg.response_length), special=special,
        count_ids=counts, hub_config=hub_config,
    )
    if state is not None:
        run.restore(state)
    return run, state is not None


def train_step(run: Run) -> float:
    """One optimizer step on a fresh batch; returns the loss."""
    cfg = run.cfg
    full = bool(torch.rand(1, generator=run.gen) < cfg.full_length_fraction)
    scale = run.schedule.lr() / cfg.lr
    for group in run.optimizer.param_groups:
        group["lr"] = group["base_lr"] * scale
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        batch = run.collator([next(run.stream) for _ in range(cfg.batch_size)], full=full)
        loss = diffusion_loss(run.lm, batch, run.special.mask, cfg.mask_eps, run.gen)
        if cfg.count_weight:
            loss = loss + cfg.count_weight * count_loss(run.lm, batch, run.count_ids)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in run.optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    run.optimizer.step()
    return float(loss.detach())


def train(config: VisionTrainConfig | dict) -> dict[str, Any]:
    """Train (or resume) into `config.out`; returns a summary (steps, minutes, loss, the modules)."""
    from tqdm import tqdm

    cfg = config if isinstance(config, VisionTrainConfig) else VisionTrainConfig(**config)
    if cfg.family != FAMILY:
        raise ValueError(f"family={cfg.family!r}: family= selects the {FAMILY} trainer (text LLaDA models train without family=)")
    if not (cfg.max_steps or cfg.minutes):
        raise ValueError("set max_steps or minutes (or both): training needs a budget")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run, resumed = build_run(cfg)
    sched = run.schedule
    run.lm.train()
    run.vision.train()
    start_step, start_elapsed = sched.step, sched.elapsed
    first_loss, ema, interrupted = None, None, False
    bar = tqdm(total=cfg.max_steps or None, initial=sched.step, disable=not cfg.progress, unit="step", dynamic_ncols=True)
    clock = time.perf_counter()
    try:
        while not sched.done():
            loss = train_step(run)
            sched.step += 1
            sched.elapsed = start_elapsed + time.perf_counter() - clock
            first_loss = loss if first_loss is None else first_loss
            ema = loss if ema is None else 0.98 * ema + 0.02 * loss
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.4f}", lr=f"{sched.lr():.2e}", min=f"{sched.elapsed / 60:.1f}", refresh=False)
            if cfg.save_every and sched.step % cfg.save_every == 0:
                run.save()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        run.save()
    run.lm.eval()
    run.vision.eval()
    return {
        "out": str(run.out), "resumed": resumed, "interrupted": interrupted, "steps": sched.step,
        "steps_this_run": sched.step - start_step, "minutes": sched.elapsed / 60, "first_loss": first_loss,
        "loss_ema": ema, "vision_parameters": sum(p.numel() for p in run.vision.parameters()),
        "lm": run.lm, "vision": run.vision,
    }


def parse_overrides(argv: list[str]) -> VisionTrainConfig:
    """`key=value` arguments onto VisionTrainConfig, each read as its field's type."""
    return parse_fields(VisionTrainConfig, argv, f"unmask train family={FAMILY}")


def main(argv: list[str]) -> int:
    """`unmask train family=llada-v key=value ...`; SIGTERM saves like Ctrl-C."""
    return run_and_report(train, parse_overrides(argv), hidden=("lm", "vision"))
