"""Cross-modal retrieval and zero-shot classification in a bound space (docs/architecture.md, "Binding"): the
measures CLIP (Radford et al. 2021) and ImageBind (Girdhar et al. 2023) report — recall at k and the median rank of
the true partner among held-out pairs, in both directions — and classification of one side by the nearest class
prototype of the other."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["partner_ranks", "retrieval_metrics", "chance_metrics", "prototype_accuracy", "KS"]

KS = (1, 5, 10)


def partner_ranks(query: Tensor, index: Tensor) -> Tensor:
    """``query [N, D]`` and ``index [N, D]`` where row ``i`` of each is a pair: the rank (1 = first) of each query's
    partner among all ``N`` index rows by cosine similarity; a tie counts against the partner (pessimistic)."""
    if query.shape != index.shape or query.shape[0] < 1:
        raise ValueError(f"retrieval needs as many queries as partners, got {tuple(query.shape)} and "
                         f"{tuple(index.shape)}")
    sims = F.normalize(query.float(), dim=-1) @ F.normalize(index.float(), dim=-1).T
    own = sims.diagonal()[:, None]
    others = ~torch.eye(sims.shape[0], dtype=torch.bool, device=sims.device)
    return ((sims >= own) & others).sum(dim=1) + 1


def _summary(ranks: Tensor, ks: Sequence[int]) -> dict[str, float]:
    r = ranks.float()
    return {**{f"R@{k}": float((r <= k).float().mean()) for k in ks}, "median_rank": float(r.median()),
            "mean_rank": float(r.mean())}


def retrieval_metrics(a: Tensor, b: Tensor, names: tuple[str, str] = ("a", "b"),
                      ks: Sequence[int] = KS) -> dict[str, dict[str, float]]:
    """Recall at each k and the median rank, ``a → b`` (each row of ``a`` searches ``b``) and ``b → a``, keyed
    ``"<a>→<b>"`` and ``"<b>→<a>"``. ``torch.median`` takes the lower middle value of an even count."""
    x, y = names
    return {f"{x}→{y}": _summary(partner_ranks(a, b), ks), f"{y}→{x}": _summary(partner_ranks(b, a), ks)}


def chance_metrics(n: int, ks: Sequence[int] = KS) -> dict[str, float]:
    """What a random ranking scores on ``n`` pairs: R@k = min(k, n)/n, and the median rank of a uniform rank in
    1..n (the lower middle, as :func:`retrieval_metrics` takes it)."""
    return {**{f"R@{k}": min(k, n) / n for k in ks}, "median_rank": float((n + 1) // 2), "mean_rank": (n + 1) / 2}


def prototype_accuracy(query: Tensor, query_labels: Sequence[int], other: Tensor,
                       other_labels: Sequence[int]) -> float:
    """Zero-shot classification through the other side: each class's prototype is the normalised mean of the other
    side's embeddings of that class; a query takes the class of its most similar prototype (cosine). Classes the
    other side lacks are never predicted."""
    yq, yo = torch.as_tensor(list(query_labels)), torch.as_tensor(list(other_labels))
    o = F.normalize(other.float(), dim=-1)
    classes = yo.unique()
    protos = F.normalize(torch.stack([o[yo == c].mean(dim=0) for c in classes]), dim=-1)
    pred = classes[(F.normalize(query.float(), dim=-1) @ protos.T).argmax(dim=1)]
    return float((pred == yq).float().mean())
