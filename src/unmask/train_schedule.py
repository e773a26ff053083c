"""What both trainers share: the learning-rate schedule and where a run keeps its resumable state.

`cfg` is any run config with lr, warmup_steps, min_lr_ratio, max_steps and minutes
(unmask.train.TrainConfig, unmask.train_vision.VisionTrainConfig).
"""

from __future__ import annotations

import math
import os
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
