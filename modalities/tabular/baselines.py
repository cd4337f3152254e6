"""Raw-feature baseline for the probe harness: the processor's own encoding (standardised numbers, a
missing flag per number, one-hot categories)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .processor import TabularProcessor


def raw_features(examples: Any, processor: TabularProcessor | None = None, *,
                 names: Sequence[str] | None = None) -> torch.Tensor:
    """The rows as the processor encodes them (``names``: what an error calls each row, e.g. ``file[row]``)."""
    if processor is None:
        processor = TabularProcessor().fit(examples)
    t = processor.transform(examples, list(names) if names is not None else None)
    onehots = [torch.nn.functional.one_hot(t["cat"][:, j], n).float() for j, n in enumerate(processor.cardinalities)]
    return torch.cat([t["num"], t["num_missing"].float(), *onehots], dim=1)
