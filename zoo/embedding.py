"""Running a model over examples in batches, in this process — the one loop behind frozen-encoder features (the
protocols that score pooled embeddings with a classical model: Point-MAE's linear SVM, GraphMAE's graph SVM,
CoLES' gradient boosting) and a classifier's predictions. (With DataLoader workers, for data of any size:
``pipelines.data.iter_batches``.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data import ExampleSet
from .plugin import Encoder, Processor

__all__ = ["map_batches", "pooled_features"]


@torch.no_grad()
def map_batches(fn: Callable[[dict[str, Tensor]], Tensor], processor: Processor, examples: Sequence[Any], *,
                names: Sequence[str] | None = None, batch_size: int = 64,
                device: torch.device | str = "cpu") -> Iterator[Tensor]:
    """``fn(batch)`` (on CPU) for consecutive batches of ``examples``, each processed (named by ``names`` in any
    error), collated and moved to ``device``."""
    for lo in range(0, len(examples), batch_size):
        items = [processor(examples[i], name=names[i] if names is not None else f"example {i}")
                 for i in range(lo, min(lo + batch_size, len(examples)))]
        yield fn({k: v.to(device) for k, v in processor.collate(items).items()}).cpu()


def pooled_features(encoder: Encoder, processor: Processor, data: ExampleSet, batch_size: int = 64) -> np.ndarray:
    """``[N, D]`` pooled embeddings of every example of ``data``, in order, the encoder in eval mode."""
    encoder.eval()
    device = next(encoder.parameters()).device
    names = [data.name(i) for i in range(len(data))]
    out = list(map_batches(lambda b: encoder(b).pooled.float(), processor, data.examples, names=names,
                           batch_size=batch_size, device=device))
    return torch.cat(out).numpy() if out else np.zeros((0, encoder.dim), dtype=np.float32)
