"""Self-supervised objectives shared by every modality. Vectorised torch, CPU and CUDA."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .points import square_distances

__all__ = [
    "gather_with_grad",
    "info_nce",
    "clip_loss",
    "sample_negatives",
    "wav2vec_contrastive",
    "codebook_perplexity",
    "diversity_loss",
    "channel_norm_targets",
    "masked_mse",
    "scaled_cosine_error",
    "chamfer_l2",
    "latent_regression",
    "margin_contrastive",
]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every process along dim 0, keeping gradients (identity without DDP).

    Every rank must pass the same shape.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def info_nce(a: Tensor, b: Tensor, temperature: float | Tensor = 0.1, *, symmetric: bool = True,
             gather: bool = False) -> Tensor:
    """InfoNCE / NT-Xent (Oord et al. 2018; Chen et al. 2020): row ``i`` of ``a`` matches row ``i`` of ``b``.

    Both are L2-normalised; logits are cosine similarities over ``temperature``. With ``gather`` the
    negatives come from every DDP rank (the all-gather keeps gradients). ``symmetric`` averages the
    a→b and b→a directions.
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    offset = 0
    all_a, all_b = a, b
    if gather and dist.is_available() and dist.is_initialized():
        all_a, all_b = gather_with_grad(a), gather_with_grad(b)
        offset = dist.get_rank() * a.shape[0]
    labels = torch.arange(a.shape[0], device=a.device) + offset
    loss = F.cross_entropy(a @ all_b.T / temperature, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(b @ all_a.T / temperature, labels))
    return loss


def clip_loss(a: Tensor, b: Tensor, logit_scale: Tensor, *, gather: bool = False) -> Tensor:
    """CLIP's symmetric InfoNCE with a learned temperature (Radford et al. 2021, Fig. 3): row ``i`` of ``a`` and
    row ``i`` of ``b`` are a pair, the others of the batch its negatives; logits are cosine similarities times
    ``exp(logit_scale)`` (the inverse temperature, learned in log space); the mean of both directions."""
    return info_nce(a, b, temperature=torch.exp(-logit_scale), symmetric=True, gather=gather)


def sample_negatives(mask: Tensor, num_negatives: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Distractor indices of wav2vec 2.0 (Baevski et al. 2020, §3.2).

    For every hidden frame ``t`` of row ``b`` (``mask[b, t]``), ``num_negatives`` frame indices drawn
    uniformly with replacement from the *other* hidden frames of the same row: the positive is never
    among them. Returns ``[B, T, K]`` indices; entries of unhidden frames, and of rows with fewer than two
    hidden frames, are ``-1``. Returned as int32 (half the memory of int64; valid as an index).
    """
    b, t = mask.shape
    counts = mask.sum(dim=1)                                    # hidden frames per row
    rank = mask.long().cumsum(dim=1) - 1                        # rank of each hidden frame in its row
    # order[b, j] = time index of the j-th hidden frame of row b (unhidden frames sort past the end)
    order = torch.where(mask, torch.arange(t, device=mask.device), t).sort(dim=1).values
    out = torch.full((b, t, num_negatives), -1, dtype=torch.int32, device=mask.device)
    bi, ti = (mask & (counts >= 2)[:, None]).nonzero(as_tuple=True)
    if bi.numel() == 0:
        return out
    u = torch.rand(bi.numel(), num_negatives, generator=generator, device=mask.device)
    draw = u.mul_((counts[bi] - 1)[:, None]).int()              # uniform in [0, count - 2]
    draw += draw >= rank[bi, ti][:, None].int()                 # skip the positive's own rank
    draw += (bi * t)[:, None].int()
    out[bi, ti] = order.view(-1).int().index_select(0, draw.view(-1)).view(-1, num_negatives)
    return out


def wav2vec_contrastive(context: Tensor, targets: Tensor, mask: Tensor, negatives: Tensor,
                        temperature: float = 0.1) -> tuple[Tensor, Tensor]:
    """Contrastive loss of wav2vec 2.0 (Baevski et al. 2020, eq. 3) over the hidden frames.

    ``context [B, T, D]``, ``targets [B, T, D]`` (quantized), ``mask [B, T]`` and ``negatives [B, T, K]``
    from :func:`sample_negatives`. Logits are cosine similarities / ``temperature``; a distractor equal to
    the positive is excluded. Returns ``(mean loss over hidden frames, logits [M, 1 + K])``.
    """
    rows = mask & (negatives[..., 0] >= 0)
    bi, ti = rows.nonzero(as_tuple=True)
    if bi.numel() == 0:
        return context.sum() * 0.0, context.new_zeros(0, 1 + negatives.shape[-1])
    c = context[bi, ti]                                         # [M, D]
    pos = targets[bi, ti]                                       # [M, D]
    neg = targets[bi[:, None], negatives[bi, ti]]               # [M, K, D]
    cand = torch.cat([pos[:, None], neg], dim=1)                # [M, 1+K, D]
    logits = F.cosine_similarity(c[:, None].float(), cand.float(), dim=-1) / temperature
    same = (neg == pos[:, None]).all(dim=-1)
    logits[:, 1:] = logits[:, 1:].masked_fill(same, float("-inf"))
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels), logits


def codebook_perplexity(probs: Tensor) -> Tensor:
    """Sum over groups of ``exp(entropy)`` of the averaged codeword distribution ``probs [G, V]``."""
    ent = -(probs * torch.log(probs.clamp(min=1e-7))).sum(dim=-1)
    return torch.exp(ent).sum()


def diversity_loss(probs: Tensor) -> Tensor:
    """Codebook diversity loss of wav2vec 2.0 (eq. 4): ``(G·V − perplexity) / (G·V)``.

    ``probs [G, V]`` is the softmax over codewords averaged over the batch's frames.
    """
    gv = probs.shape[0] * probs.shape[1]
    return (gv - codebook_perplexity(probs)) / gv


def _normalise_last(x: Tensor, eps: float) -> Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mean) / (var + eps).sqrt()


def channel_norm_targets(target: Tensor, channels: int, eps: float = 1e-6) -> Tensor:
    """Normalised pixel targets of VideoMAE (Tong et al. 2022): ``target [..., P]`` holds a tubelet's pixels
    channel-last (``P = positions · channels``); each colour channel is normalised within its tubelet,
    ``(x − mean) / (std + eps)`` with the unbiased standard deviation, as the reference computes it."""
    if target.shape[-1] % channels:
        raise ValueError(f"patch size {target.shape[-1]} is not a multiple of {channels} channels")
    x = target.unflatten(-1, (target.shape[-1] // channels, channels))
    x = (x - x.mean(dim=-2, keepdim=True)) / (x.std(dim=-2, keepdim=True) + eps)
    return x.flatten(-2)


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor, *, norm_targets: bool = True,
               eps: float = 1e-6, channels: int | None = None) -> Tensor:
    """Masked reconstruction MSE of MAE / VideoMAE (He et al. 2022; Tong et al. 2022).

    ``pred``/``target [B, N, P]``; the loss is the mean squared error over the hidden tokens
    (``mask [B, N]``). With ``norm_targets`` each target patch is normalised by its own mean and variance
    (MAE); with ``channels`` as well, each channel of a channel-last patch is normalised on its own
    (VideoMAE, :func:`channel_norm_targets`).
    """
    if norm_targets:
        target = channel_norm_targets(target, channels, eps) if channels else _normalise_last(target, eps)
    per_token = ((pred - target) ** 2).mean(dim=-1)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp(min=1.0)


def scaled_cosine_error(x: Tensor, y: Tensor, gamma: float = 2.0) -> Tensor:
    """Scaled cosine error of GraphMAE (Hou et al. 2022, eq. 4): mean of ``(1 − cos(x_i, y_i))^γ``."""
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    cos = F.cosine_similarity(x, y, dim=-1)
    return (1.0 - cos).pow(gamma).mean()


def chamfer_l2(a: Tensor, b: Tensor) -> Tensor:
    """Batched Chamfer distance with squared L2 (Point-MAE, Pang et al. 2022, eq. 2, as its ``ChamferDistanceL2``).

    ``a [B, N, 3]``, ``b [B, M, 3]``: mean over points of the squared distance to the nearest point of the
    other set, summed over both directions, averaged over the batch. Distances are exact (from coordinate
    differences, :func:`zoo.points.square_distances`): no matrix-multiply shortcut that loses near neighbours.
    """
    d = square_distances(a.float(), b.float())                  # [B, N, M]
    return (d.min(dim=2).values.mean(dim=1) + d.min(dim=1).values.mean(dim=1)).mean()


def latent_regression(pred: Tensor, target: Tensor, mask: Tensor | None = None, *,
                      kind: str = "mse") -> Tensor:
    """Latent regression to a stop-gradient EMA teacher (I-JEPA, Assran et al. 2023; T-JEPA).

    ``pred``/``target [..., D]``; the target carries no gradient. ``mask`` (same leading shape) selects
    the positions that count. ``kind``: ``"mse"`` or ``"smooth_l1"``.
    """
    target = target.detach()
    if kind == "mse":
        err = ((pred - target) ** 2).mean(dim=-1)
    elif kind == "smooth_l1":
        err = F.smooth_l1_loss(pred, target, reduction="none").mean(dim=-1)
    else:
        raise ValueError(f"unknown latent regression kind {kind!r}: use 'mse' or 'smooth_l1'")
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp(min=1.0)


def margin_contrastive(embeddings: Tensor, labels: Tensor, margin: float = 0.5,
                       hard_negatives: int | None = None) -> Tensor:
    """Pairwise margin contrastive loss of CoLES (Babaev et al. 2022, eq. 1; Hadsell et al. 2006).

    Positive pairs (same label, ``i < j``) cost ``d²``; negative pairs cost ``max(0, margin − d)²`` where
    ``d`` is the Euclidean distance. With ``hard_negatives = k`` only the ``k`` closest negatives of each
    anchor count. The loss is the mean over the counted pairs.
    """
    n = embeddings.shape[0]
    d = torch.cdist(embeddings, embeddings)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    pos = same & ~eye & torch.ones_like(eye).triu(1)
    neg = ~same
    if hard_negatives is not None and hard_negatives < n:
        score = d.masked_fill(~neg, float("inf"))
        k = min(hard_negatives, n)
        idx = score.topk(k, dim=1, largest=False).indices
        chosen = torch.zeros_like(neg).scatter_(1, idx, True)
        neg = neg & chosen
    else:
        neg = neg & torch.ones_like(eye).triu(1)
    pos_loss = d[pos].pow(2)
    neg_loss = F.relu(margin - d[neg]).pow(2)
    total = pos_loss.numel() + neg_loss.numel()
    if total == 0:
        return embeddings.sum() * 0.0
    return (pos_loss.sum() + neg_loss.sum()) / total
