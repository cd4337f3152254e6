"""Running a model over examples in batches, in this process — the one loop behind frozen-encoder features (the
protocols that score pooled embeddings with a classical model: Point-MAE's linear SVM, GraphMAE's graph SVM,
CoLES' gradient boosting) and a classifier's predictions. (With DataLoader workers, for data of any size:
``pipelines.data.iter_batches``.) :func:`embed_long` embeds one input of any length window by window
(docs/architecture.md, "The modality contract": ``Processor.windows``); :func:`window_means` does the same for many
inputs at once (prediction and evaluation of a processor that ``pools_windows``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data import ExampleSet
from .plugin import Encoder, Processor

__all__ = ["map_batches", "pooled_features", "embed_long", "window_means", "LongEmbedding", "POOLINGS"]

POOLINGS = ("mean", "none")


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


@dataclass
class LongEmbedding:
    """What :func:`embed_long` returns: ``embeddings [rows, D]`` (one row with ``pooling="mean"``, one per window
    with ``"none"``), the rows' ``names``, the windows' ``spans`` (``[start, end)`` in ``unit``) and what the
    processor said it left out (``notes``)."""

    embeddings: Tensor
    names: list[str]
    spans: list[tuple[float, float]]
    unit: str
    notes: list[str] = field(default_factory=list)


@torch.no_grad()
def embed_long(encoder: Encoder, processor: Processor, example: Any, *, name: str | None = None,
               pooling: str = "mean", window: float | None = None, hop: float | None = None, batch_size: int = 16,
               device: torch.device | str | None = None) -> LongEmbedding:
    """Embed one input of any length: the processor's windows (``Processor.windows``; ``window``/``hop`` in
    seconds override its own), ``batch_size`` at a time — memory holds that many windows, whatever the input's
    length — through the encoder in eval mode. ``pooling="none"``: one pooled row per window, named
    ``name[start-end]``; ``"mean"``: one row, the mean of the windows' pooled rows weighted by their length (a
    shorter last window counts for its share; summed in float64), an input of one window its row unchanged."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoder.eval()
    device = device if device is not None else next(encoder.parameters()).device
    windows = processor.windows(example, name=name, window=window, hop=hop)
    rows: list[Tensor] = []
    names: list[str] = []
    spans: list[tuple[float, float]] = []
    notes: list[str] = []
    unit, total, weight = "", torch.zeros((), dtype=torch.float64), 0.0
    while chunk := list(islice(windows, batch_size)):
        batch = processor.collate([w.item for w in chunk])
        pooled = encoder({k: v.to(device) for k, v in batch.items()}).pooled.float().cpu()
        w = torch.tensor([max(win.weight, 0.0) for win in chunk], dtype=torch.float64)
        if pooling == "none" or not spans:           # the first row kept as is: a one-window input's row
            rows.append(pooled)
        total = total + (w[:, None] * pooled.double()).sum(0)
        weight += float(w.sum())
        names += [win.name for win in chunk]
        spans += [(win.start, win.end) for win in chunk]
        notes += [f"{win.name}: {win.note}" for win in chunk if win.note]
        unit = chunk[0].unit
    if not spans:
        raise ValueError(f"{name or 'input'}: the processor gave no windows")
    if pooling == "none":
        return LongEmbedding(torch.cat(rows), names, spans, unit, notes)
    if len(spans) == 1:
        return LongEmbedding(rows[0][:1], names, spans, unit, notes)
    mean = (total / weight).float()[None]
    whole = name if name is not None else names[0].rsplit("[", 1)[0]        # the name without the window's span
    return LongEmbedding(mean, [whole], spans, unit, notes)


@torch.no_grad()
def window_means(fn: Callable[[dict[str, Tensor]], Tensor], processor: Processor, examples: Sequence[Any], *,
                 names: Sequence[str] | None = None, batch_size: int = 16,
                 device: torch.device | str = "cpu") -> Tensor:
    """``[N, ...]``: for every example the mean of ``fn(batch) [B, ...]`` over its windows (``Processor.windows``)
    weighted by their length, summed in float64 — with ``fn`` an encoder's pooled output, the row
    :func:`embed_long` (``pooling="mean"``) gives each input (docs/architecture.md, "Long inputs"). The windows of
    all the examples go through ``fn`` ``batch_size`` at a time, in order: memory holds that many windows and one
    row per example, whatever the inputs' length."""
    n = len(examples)
    windows = ((i, w) for i in range(n)
               for w in processor.windows(examples[i], name=names[i] if names is not None else f"example {i}"))
    total: Tensor | None = None
    weight = torch.zeros(n, dtype=torch.float64)
    while chunk := list(islice(windows, batch_size)):
        out = fn({k: v.to(device) for k, v in processor.collate([w.item for _, w in chunk]).items()}).double().cpu()
        idx = torch.tensor([i for i, _ in chunk])
        w = torch.tensor([max(win.weight, 0.0) for _, win in chunk], dtype=torch.float64)
        if total is None:
            total = out.new_zeros((n, *out.shape[1:]))
        total.index_add_(0, idx, w.view(-1, *[1] * (out.dim() - 1)) * out)
        weight.index_add_(0, idx, w)
    if total is None:
        return torch.zeros(0)
    if bool((weight <= 0).any()):
        i = int((weight <= 0).nonzero()[0, 0])
        raise ValueError(f"{names[i] if names is not None else f'example {i}'}: the processor gave no window of "
                         "positive length")
    return (total / weight.view(-1, *[1] * (total.dim() - 1))).float()
