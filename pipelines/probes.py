"""Probes of frozen features: a linear probe and a k-NN classifier, the same for every modality (docs/architecture.md,
"Baselines" and "Online quality")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["linear_probe", "knn_accuracy", "standardise"]


def linear_probe(train_x: torch.Tensor, train_y: Sequence[int], test_x: torch.Tensor,
                 test_y: Sequence[int], *, seed: int = 0) -> float:
    """Accuracy of a logistic regression on standardised frozen embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    clf.fit(train_x.numpy(), np.asarray(train_y))
    return float(clf.score(test_x.numpy(), np.asarray(test_y)))


def standardise(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets with each dimension centred and scaled by ``train_x``'s mean and standard deviation (as a
    standardised linear probe sees them); a dimension constant over ``train_x`` (std at most 1e-6 of the largest)
    carries no information there and becomes 0 in both."""
    mean, std = train_x.mean(dim=0), train_x.std(dim=0, unbiased=False)
    live = std > 1e-6 * float(std.max())
    scale = torch.where(live, std, torch.ones_like(std))
    return (train_x - mean) / scale * live, (test_x - mean) / scale * live


def knn_accuracy(train_x: torch.Tensor, train_y: Sequence[int], test_x: torch.Tensor,
                 test_y: Sequence[int], k: int = 20, temperature: float | None = None,
                 balanced: bool = False, standardised: bool = False) -> float:
    """Cosine k-NN accuracy with a majority vote (ties → the smaller label), or with ``temperature`` each
    neighbour's vote weighted by ``exp(cos / temperature)`` (Wu et al. 2018, as DINO's k-NN evaluation).

    ``balanced``: each vote is divided by its class's share of ``train_y`` (a prior correction: a class that fills
    most of the reference set no longer wins by being most neighbours) and the score is the balanced accuracy, the
    mean over the classes of ``test_y`` of their recall; equal to the plain score on balanced sets.

    ``standardised``: the cosine is taken after :func:`standardise` (``train_x``'s statistics), so that no dimension
    weighs by its scale alone: the neighbours a standardised linear probe would see."""
    if standardised:
        train_x, test_x = standardise(train_x.float(), test_x.float())
    a = F.normalize(train_x.float(), dim=1)
    b = F.normalize(test_x.float(), dim=1)
    ty = torch.as_tensor(list(train_y))
    k = min(k, a.shape[0])
    sims, idx = (b @ a.T).topk(k, dim=1)
    weight = torch.ones_like(sims) if temperature is None else (sims / temperature).exp()
    n_classes = int(ty.max()) + 1
    votes = (F.one_hot(ty[idx], n_classes) * weight[..., None]).sum(dim=1)
    yt = torch.as_tensor(list(test_y))
    if not balanced:
        return float((votes.argmax(dim=1) == yt).float().mean())
    share = torch.bincount(ty, minlength=n_classes).float() / len(ty)
    pred = (votes / share.clamp_min(1e-12)).argmax(dim=1)
    recalls = [float((pred[yt == c] == c).float().mean()) for c in yt.unique().tolist()]
    return sum(recalls) / len(recalls)
