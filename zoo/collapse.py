"""Collapse signals (docs/architecture.md, "Run lifecycle"): numbers a training step already has that show a run
settling on a trivial solution, and the rules that read them.

- wav2vec 2.0's codebook: the perplexity of the codes the frames actually pick (hard, as fairseq's
  ``code_perplexity``), and its share of ``G·V``; a collapsed quantizer uses a handful of codes.
- Embedding methods (T-JEPA, CoLES, GraphMAE): the standard deviation of the L2-normalised embeddings across the
  batch, times ``√D`` (SimSiam, Chen & He 2021, §4: about 1 for spread-out embeddings, 0 for a constant one), and
  the mean pairwise cosine.
- Masked autoencoders (VideoMAE, Point-MAE): the spread of the predictions across masked patches over the
  targets' (``prediction_spread``: 0 when the decoder predicts the same thing for every patch), and the
  reconstruction loss over the loss of predicting the mean patch (``recon_vs_mean``, logged: a small decoder
  early in training sits near 1 while still learning, so it is no alarm on its own).
- Fine-tuning: the entropy of the predicted classes over the entropy of the labels in the batch (0 when every
  example gets the same class)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SIGNALS", "CollapseRule", "code_perplexity", "normalised_std", "mean_pairwise_cosine", "embedding_signals",
           "mse_vs_mean", "prediction_spread", "loss_vs_mean_patch", "class_entropy_ratio"]


#: the signals this module computes: the ones a step logs go on the card, alarmed or not
SIGNALS = ("code_perplexity", "code_share", "embedding_std", "mean_cosine", "recon_vs_mean", "prediction_spread",
           "class_entropy_ratio")


@dataclass(frozen=True)
class CollapseRule:
    """``signal`` (a key of the step's metrics) crossing ``threshold`` (``below=True``: under it) means collapse;
    ``remedy`` is what usually helps. A missing or non-finite signal never crosses. ``settle_steps``: crossings
    count only after this many steps (and after the warmup), for a signal that starts on the wrong side of its
    threshold at random initialisation whatever the warmup (docs/reliability.md, "Collapse alarms")."""

    signal: str
    threshold: float
    below: bool
    remedy: str
    settle_steps: int = 0

    def crossed(self, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.signal)
        if value is None or not math.isfinite(value):
            return False
        return value < self.threshold if self.below else value > self.threshold

    def describe(self, value: float) -> str:
        side = "below" if self.below else "above"
        return f"{self.signal} = {value:.4g}, {side} {self.threshold:g}"


def code_perplexity(codes: Tensor, num_codes: int) -> Tensor:
    """``exp`` of the entropy of the codes chosen in one group (``codes [N]`` long, values < ``num_codes``)."""
    p = torch.bincount(codes.reshape(-1), minlength=num_codes).float()
    p = p / p.sum().clamp(min=1)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())


def normalised_std(z: Tensor) -> Tensor:
    """SimSiam's collapse measure: ``√D ·`` mean over dimensions of the std across the batch of ``z / ‖z‖``."""
    if z.shape[0] < 2:
        return torch.tensor(float("nan"))
    u = torch.nn.functional.normalize(z.float(), dim=-1)
    return u.std(dim=0).mean() * math.sqrt(z.shape[-1])


def mean_pairwise_cosine(z: Tensor) -> Tensor:
    """The mean cosine similarity over distinct pairs of the batch's rows."""
    n = z.shape[0]
    if n < 2:
        return torch.tensor(float("nan"))
    u = torch.nn.functional.normalize(z.float(), dim=-1)
    s = u.sum(dim=0)
    return ((s @ s) - (u * u).sum()) / (n * (n - 1))


def embedding_signals(z: Tensor) -> dict[str, float]:
    """``embedding_std`` and ``mean_cosine`` of a batch of embeddings ``[B, D]``."""
    with torch.no_grad():
        return {"embedding_std": float(normalised_std(z)), "mean_cosine": float(mean_pairwise_cosine(z))}


def mse_vs_mean(pred: Tensor, target: Tensor) -> float:
    """The MSE of ``pred`` over that of predicting the mean target (``[N, P]`` rows: the masked patches' targets
    as the loss sees them): the target's variance across patches."""
    with torch.no_grad():
        t = target.float().reshape(-1, target.shape[-1])
        base = (t - t.mean(dim=0)).pow(2).mean()
        loss = (pred.float().reshape(t.shape) - t).pow(2).mean()
        return float(loss / base.clamp(min=1e-12))


def prediction_spread(pred: Tensor, target: Tensor) -> float:
    """The predictions' standard deviation across patches over the targets' (``[N, ...]`` rows, averaged over the
    remaining dimensions): 0 when the decoder predicts the same thing for every masked patch."""
    with torch.no_grad():
        p, t = pred.float().reshape(pred.shape[0], -1), target.float().reshape(target.shape[0], -1)
        return float(p.std(dim=0).mean() / t.std(dim=0).mean().clamp(min=1e-12))


def loss_vs_mean_patch(loss_fn, loss: Tensor, target: Tensor) -> float:
    """``loss`` (the step's ``loss_fn(pred, target)``) over ``loss_fn`` of predicting, for every patch, the mean
    patch (the average of the ``[N, K, 3]`` targets point by point: their points come sorted by distance from the
    centre)."""
    with torch.no_grad():
        mean = target.float().mean(dim=0, keepdim=True).expand_as(target)
        return float(loss.detach().float() / loss_fn(mean, target.float()).clamp(min=1e-12))


def class_entropy_ratio(predicted: Tensor, labels: Tensor, num_classes: int) -> float:
    """Entropy of the predicted class distribution over the labels' (NaN when the batch has one label).
    ``predicted``: class ids ``[B]`` (their histogram), or probabilities ``[B, C]`` (their mean: a head that has not
    learned yet spreads its probability and does not read as collapsed; one that gives every input the same class
    with certainty does)."""
    def entropy(p: Tensor) -> float:
        p = p / p.sum().clamp(min=1e-12)
        return max(0.0, float(-(p * torch.log(p.clamp(min=1e-12))).sum()))

    def histogram(x: Tensor) -> Tensor:
        return torch.bincount(x.reshape(-1), minlength=num_classes).float()

    h_labels = entropy(histogram(labels))
    shares = predicted.float().mean(0) if predicted.is_floating_point() else histogram(predicted)
    return entropy(shares) / h_labels if h_labels > 1e-9 else float("nan")
