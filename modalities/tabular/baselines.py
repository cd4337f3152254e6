"""Raw-feature baseline for the probe harness: the processor's own encoding (standardised numbers, a
missing flag per number, one-hot categories)."""

from __future__ import annotations

from typing import Any

import torch

from .processor import TabularProcessor


def raw_features(examples: Any, processor: TabularProcessor | None = None) -> torch.Tensor:
    if processor is None:
        processor = TabularProcessor().fit(examples)
    t = processor.transform(examples)
    onehots = [torch.nn.functional.one_hot(t["cat"][:, j], n).float() for j, n in enumerate(processor.cardinalities)]
    return torch.cat([t["num"], t["num_missing"].float(), *onehots], dim=1)
