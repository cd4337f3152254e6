"""Frozen-encoder features for the evaluation protocols that score pooled embeddings with a classical model
(Point-MAE's linear SVM, CoLES' gradient boosting)."""

from __future__ import annotations

import numpy as np
import torch

from .data import ExampleSet
from .plugin import Encoder, Processor

__all__ = ["pooled_features"]


@torch.no_grad()
def pooled_features(encoder: Encoder, processor: Processor, data: ExampleSet, batch_size: int = 64) -> np.ndarray:
    """``[N, D]`` pooled embeddings of every example of ``data``, in order, the encoder in eval mode."""
    encoder.eval()
    device = next(encoder.parameters()).device
    out = []
    for lo in range(0, len(data), batch_size):
        items = [processor(data.examples[i], name=data.name(i)) for i in range(lo, min(lo + batch_size, len(data)))]
        batch = {k: v.to(device) for k, v in processor.collate(items).items()}
        out.append(encoder(batch).pooled.float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, encoder.dim), dtype=np.float32)
