"""Hand-crafted aggregates of an entity's history, the baseline of the CoLES paper (Babaev et al. 2022, §4.2):
the number of events, per numerical field its sum, mean, std, min and max, the time gaps' mean and std, and per
value of each categorical field the share of events with that value and the mean of every numerical field over
those events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .processor import EventProcessor


def history_aggregates(item: dict[str, Tensor], cardinalities: Sequence[int], top: int = 32) -> Tensor:
    """One processed history → its aggregate vector (the first ``top`` ids of each categorical field: missing,
    unknown and the most frequent values; a rarer value counts as unknown)."""
    num = item["num"].double()
    present = (~item["num_missing"]).double()
    t = float(len(item["dt"]))
    count = present.sum(0).clamp(min=1)
    mean = (num * present).sum(0) / count
    std = (((num - mean) ** 2 * present).sum(0) / count).sqrt()
    big = torch.finfo(torch.float64).max
    lo = num.masked_fill(present == 0, big).min(0).values.masked_fill(present.sum(0) == 0, 0)
    hi = num.masked_fill(present == 0, -big).max(0).values.masked_fill(present.sum(0) == 0, 0)
    dt = item["dt"].double()
    parts = [torch.tensor([t, float(torch.log1p(torch.tensor(t)))], dtype=torch.float64),
             (num * present).sum(0), mean, std, lo, hi, dt.mean()[None], dt.std(unbiased=False)[None]]
    for j, card in enumerate(cardinalities):
        width = min(card, top)
        ids = item["cat"][:, j].clamp(max=width - 1)
        ids = torch.where(item["cat"][:, j] >= width, torch.ones_like(ids), ids)      # rarer values → unknown
        onehot = torch.nn.functional.one_hot(ids, width).double()                       # [T, V]
        n_v = onehot.sum(0)
        parts.append(n_v / t)
        per_value = (onehot.T @ (num * present)) / (onehot.T @ present).clamp(min=1)    # [V, F_num]
        parts.append(per_value.reshape(-1))
    return torch.cat(parts).float()


def aggregate_features(examples: Sequence[Any], processor: EventProcessor | None = None, top: int = 32, *,
                       names: Sequence[str] | None = None) -> Tensor:
    """``[N, F]`` aggregates of every history (through the fitted ``processor``; ``names``: what an error calls
    each, e.g. its entity id)."""
    if processor is None:
        raise ValueError("aggregates need the model's fitted processor (its schema names the fields)")
    cards = processor.schema.cardinalities
    rows = [history_aggregates(processor(examples[i], name=names[i] if names else f"history {i}"), cards, top)
            for i in range(len(examples))]
    return torch.stack(rows)
