"""What both trainers share: the learning-rate schedule and where a run keeps its resumable state.

`cfg` is any run config with lr, warmup_steps, min_lr_ratio, max_steps and minutes
(unmask.train.TrainConfig, unmask.train_vision.VisionTrainConfig).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path

import torch

STATE_DIR = "train_state"
STATE_FILE = "state.pt"


class Schedule:
    """Linear warm-up by steps, then cosine decay over progress (the larger of step and time used)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.step = 0
        self.elapsed = 0.0  # training seconds over all runs of this output dir

    def progress(self) -> float:
        c = self.cfg
        parts = []
        if c.max_steps:
            parts.append(self.step / c.max_steps)
        if c.minutes:
            parts.append(self.elapsed / (60 * c.minutes))
        return min(1.0, max(parts))

    def done(self) -> bool:
        return self.progress() >= 1.0

    def lr(self) -> float:
        c = self.cfg
        if self.step < c.warmup_steps:
            return c.lr * (self.step + 1) / c.warmup_steps
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress()))
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * cosine)

    def state_dict(self) -> dict:
        return {"step": self.step, "elapsed": self.elapsed}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])


def save_state(out: Path, state: dict) -> None:
    """Write a run's resumable state atomically (a crash mid-write leaves the previous state)."""
    folder = Path(out) / STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, folder / STATE_FILE)


class ResumableRun:
    """What a trainer's run saves besides its checkpoint, for both trainers: the config, the modules'
    weights (`modules()`, named as in the saved state), optimizer, schedule, problem stream and mask RNG.
    Subclasses are dataclasses with cfg, optimizer, schedule, stream and gen fields."""

    def modules(self) -> dict:
        raise NotImplementedError

    def state(self) -> dict:
        weights = {name: module.state_dict() for name, module in self.modules().items()}
        return {
            "config": dataclasses.asdict(self.cfg),
            **weights,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "stream": self.stream.state(),
            "mask_rng": self.gen.get_state(),
        }

    def restore(self, state: dict) -> None:
        for name, module in self.modules().items():
            module.load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.stream.load_state(state["stream"])
        self.gen.set_state(state["mask_rng"])


def saved_state(out: Path, cfg, arch_keys: tuple[str, ...], shape: str) -> dict | None:
    """The state to resume `out` from, if any (and `cfg.resume`): refuses a config whose `arch_keys`
    differ (`shape` names what they describe), reports other changed settings."""
    file = Path(out) / STATE_DIR / STATE_FILE
    if not (cfg.resume and file.exists()):
        return None
    state = torch.load(file, map_location="cpu", weights_only=True)
    saved = state["config"]
    differ = [k for k in arch_keys if saved.get(k) != getattr(cfg, k)]
    if differ:
        raise ValueError(
            f"{file}: cannot resume, {shape} differs ({', '.join(f'{k}={saved[k]}' for k in differ)} "
            "saved); pass the same sizes, another out=, or resume=false to start over"
        )
    changed = [f"{k}: {saved[k]} -> {v}" for k, v in dataclasses.asdict(cfg).items() if k in saved and saved[k] != v]
    if changed:
        print(f"resuming {out} with changed settings: {'; '.join(changed)}", file=sys.stderr)
    return state
