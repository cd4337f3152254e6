"""Learning-rate schedules (linear warmup, then cosine or linear decay to a floor) and the per-step mask generator."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["lr_at", "step_generator"]


def lr_at(step: int, cfg: Any) -> float:
    """Linear warmup over ``warmup_steps`` (at most ``steps``) then decay to ``min_lr_ratio * lr``: cosine, or
    with ``schedule: linear`` a straight line (fairseq's polynomial decay of power 1, as wav2vec 2.0)."""
    warmup = min(cfg.warmup_steps, cfg.steps)
    if warmup and step < warmup:
        return cfg.lr * (step + 1) / warmup
    span = max(cfg.steps - warmup, 1)
    frac = min(max(step - warmup, 0) / span, 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "linear":
        return floor + (cfg.lr - floor) * (1.0 - frac)
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator a pretrainer draws its masks from at one step (a pure function of seed, step, rank)."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step) * 4099 + rank)
