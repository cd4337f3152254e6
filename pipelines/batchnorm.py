"""BatchNorm statistics that match the weights they are used with.

A fine-tuned encoder with BatchNorm (Point-MAE's mini-PointNet) normalises in eval mode with running averages
collected while its weights moved; at a high learning rate those averages describe earlier weights, and the
saved classifier can predict one class for everything although training accuracy was high. Before a model is
validated or saved, its BatchNorm statistics are recomputed under the final weights over training batches (exact
averages, not momentum) — "precise BN" (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", §3)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["batchnorm_layers", "recompute_batchnorm"]


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers that update their statistics while ``model`` trains (a frozen part in eval mode
    keeps its statistics and is left out)."""
    was = model.training
    model.train()
    found = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
             and m.track_running_stats]
    model.train(was)
    return found


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, forward: Any, batches: Iterable[dict[str, Any]]) -> int:
    """Reset the statistics of :func:`batchnorm_layers` and recompute them as exact averages over ``batches``,
    with every other layer in eval mode (no dropout: no random draws). ``forward(batch)`` runs the model.
    Returns the number of batches seen; the model is left in eval mode."""
    layers = batchnorm_layers(model)
    model.eval()
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None                       # a cumulative average over the batches
        m.train()
    seen = 0
    try:
        for batch in batches:
            forward(batch)
            seen += 1
    finally:
        for m, momentum, (mean, var, count) in zip(layers, momenta, saved):
            m.momentum = momentum
            m.eval()
            if seen == 0:                       # nothing seen: keep the statistics as they were
                m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
    return seen
