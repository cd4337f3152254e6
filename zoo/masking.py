"""Masks shared by every modality. ``True`` always means *hidden from the encoder*.

Every function is vectorised torch, takes an explicit ``torch.Generator`` and works on CPU and CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "NodeMask",
    "FeatureSubsets",
    "random_mask",
    "span_mask",
    "tube_mask",
    "feature_subsets",
    "subset_sizes",
    "block_masks_1d",
    "node_mask",
    "subsequence_slices",
    "valid_mask",
]


def _lengths(batch: int, length: int, valid_lengths: Tensor | None, device: torch.device) -> Tensor:
    if valid_lengths is None:
        return torch.full((batch,), length, dtype=torch.long, device=device)
    valid_lengths = torch.as_tensor(valid_lengths, device=device).long()
    if valid_lengths.shape != (batch,):
        raise ValueError(f"valid_lengths must have shape ({batch},), got {tuple(valid_lengths.shape)}")
    if bool((valid_lengths < 0).any()) or bool((valid_lengths > length).any()):
        raise ValueError(f"valid_lengths must lie in [0, {length}], got {valid_lengths.tolist()}")
    return valid_lengths


def _device(device: torch.device | str | None, generator: torch.Generator | None) -> torch.device:
    """The device asked for, else the generator's, else the CPU."""
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def valid_mask(lengths: Tensor, length: int) -> Tensor:
    """``[B, length]`` bool, ``True`` where the position is inside the row's valid length."""
    return torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]


def _ranks(scores: Tensor) -> Tensor:
    """Rank of each entry along the last dim under ascending order (a random permutation for random scores)."""
    order = scores.argsort(dim=-1)
    ar = torch.arange(scores.shape[-1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, ar)


def _choose(eligible: Tensor, counts: Tensor, generator: torch.Generator | None) -> Tensor:
    """Pick exactly ``counts[b]`` positions uniformly among ``eligible[b]`` (without replacement)."""
    scores = torch.rand(eligible.shape, generator=generator, device=eligible.device)
    scores = scores.masked_fill(~eligible, 2.0)  # ineligible positions sort last
    return _ranks(scores) < counts[:, None]


def random_mask(
    batch: int,
    length: int,
    ratio: float | None = None,
    *,
    count: int | Tensor | None = None,
    generator: torch.Generator | None = None,
    valid_lengths: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Hide exactly ``round(ratio * valid_length)`` (or ``count``) random positions of every row.

    Positions past a row's valid length are never hidden. Returns ``[batch, length]`` bool.
    """
    device = _device(device, generator)
    lengths = _lengths(batch, length, valid_lengths, device)
    if (ratio is None) == (count is None):
        raise ValueError("give exactly one of ratio or count")
    if ratio is not None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
        counts = torch.round(lengths.double() * ratio).long()
    else:
        counts = torch.as_tensor(count, device=device).long().expand(batch)
        if bool((counts > lengths).any()) or bool((counts < 0).any()):
            raise ValueError(f"count {counts.tolist()} exceeds the valid lengths {lengths.tolist()}")
    return _choose(valid_mask(lengths, length), counts, generator)


def span_mask(
    batch: int,
    length: int,
    mask_prob: float,
    span: int,
    *,
    generator: torch.Generator | None = None,
    valid_lengths: Tensor | None = None,
    min_spans: int = 0,
    same_count: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Span masking of wav2vec 2.0 (Baevski et al. 2020, §3.2), as fairseq's ``compute_mask_indices``.

    Each row of valid length ``L`` draws ``n = max(min_spans, floor(mask_prob * L / span + u))`` span starts
    (``u ~ U[0, 1)`` for probabilistic rounding) uniformly without replacement from ``[0, L - span - 1]``;
    when that range holds ``n`` or fewer starts it is widened to ``[0, n]``, as the reference does. Each
    start hides ``span`` frames, cut at ``L``; spans may overlap, so about ``mask_prob`` of the frames are
    hidden before overlap. Frames past ``L`` are never hidden. A row too short for its spans may end up
    hidden entirely; fairseq raises "the entire sequence is masked" there, we keep the row.

    ``same_count`` (fairseq's ``require_same_masks``): every row then keeps a random subset of its hidden
    frames of the size of the batch's smallest count, so all rows hide the same number of frames.
    Returns ``[batch, length]`` bool.
    """
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must lie in [0, 1], got {mask_prob}")
    device = _device(device, generator)
    lengths = _lengths(batch, length, valid_lengths, device)
    u = torch.rand(batch, generator=generator, device=device)
    counts = torch.floor(mask_prob * lengths / span + u).long().clamp(min=min_spans)
    room = lengths - span                                       # starts 0 .. L - span - 1
    room = torch.where(room <= counts, counts + 1, room)
    width = max(length, int(room.max())) if batch else length
    starts = _choose(valid_mask(room, width), counts, generator)
    # A frame t is hidden when a span starts in (t - span, t]: a windowed sum of the start indicators.
    csum = starts.cumsum(dim=1)
    shifted = torch.nn.functional.pad(csum, (span, 0))[:, :width]
    hidden = ((csum - shifted) > 0)[:, :length] & valid_mask(lengths, length)
    if same_count and batch:
        fewest = hidden.sum(dim=1).min()
        hidden = _choose(hidden, fewest.expand(batch), generator)
    return hidden


def tube_mask(
    batch: int,
    frames: int,
    patches_per_frame: int,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Tube masking of VideoMAE (Tong et al. 2022, §3.3): one spatial mask shared by every time step.

    Returns ``[batch, frames * patches_per_frame]`` bool in time-major token order, hiding exactly
    ``int(ratio * patches_per_frame)`` patches in every frame of every clip (rounded down, as the reference's
    ``TubeMaskingGenerator``: 90% of 196 hides 176), so every clip keeps the same number of visible tokens.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
    count = int(ratio * patches_per_frame)
    spatial = random_mask(batch, patches_per_frame, count=count, generator=generator, device=device)
    return spatial[:, None, :].expand(batch, frames, patches_per_frame).reshape(batch, -1)


@dataclass
class FeatureSubsets:
    """JEPA context and target sets over ``F`` positions (features or tokens).

    ``context_hidden [B, F]``: ``True`` = hidden from the context encoder (the convention of this module).
    ``targets [B, M, F]``: ``True`` = position belongs to target set ``m``; never in the context.
    """

    context_hidden: Tensor
    targets: Tensor


def feature_subsets(
    batch: int,
    num_features: int,
    num_targets: int,
    target_size: int,
    context_size: int,
    *,
    overlapping_targets: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> FeatureSubsets:
    """Context and target feature sets for tabular JEPA (Thimonier et al. 2025, ``src/mask.py``).

    Per row, a random context of exactly ``context_size`` features; then ``num_targets`` target sets of
    exactly ``target_size`` features from the features outside the context. With ``overlapping_targets``
    (the reference) each target set is drawn anew from that whole remaining pool, so target sets may
    overlap one another; otherwise they are disjoint.
    """
    pooled = target_size if overlapping_targets else num_targets * target_size
    if min(num_targets, target_size, context_size) < 1 or context_size + pooled > num_features:
        raise ValueError(
            f"context {context_size} + targets {pooled if overlapping_targets else f'{num_targets} x {target_size}'}"
            f" must fit in num_features={num_features} with every size >= 1")
    device = _device(device, generator)
    ranks = _ranks(torch.rand(batch, num_features, generator=generator, device=device))
    context = ranks < context_size
    if overlapping_targets:
        scores = torch.rand(batch, num_targets, num_features, generator=generator, device=device)
        targets = _ranks(scores.masked_fill(context[:, None, :], 2.0)) < target_size
    else:
        lo = context_size + torch.arange(num_targets, device=device)[None, :, None] * target_size
        targets = (ranks[:, None, :] >= lo) & (ranks[:, None, :] < lo + target_size)
    return FeatureSubsets(context_hidden=~context, targets=targets)


def subset_sizes(num_features: int, context_share: tuple[float, float], target_share: tuple[float, float], *,
                 overlapping_targets: bool = True, num_targets: int = 1,
                 generator: torch.Generator | None = None) -> tuple[int, int]:
    """One batch's ``(context_size, target_size)`` as T-JEPA's mask collator: each ``lo + round((hi - lo) * u)``
    with ``lo, hi = round(F * share)``, drawn again until they fit in ``F`` (``lo`` at least 1: the reference
    refuses tables so small that a share rounds to 0)."""
    (c_lo, c_hi), (t_lo, t_hi) = [(max(1, round(num_features * a)), max(1, round(num_features * b)))
                                  for a, b in (context_share, target_share)]
    if c_lo > c_hi or t_lo > t_hi:
        raise ValueError(f"shares {context_share} / {target_share} of {num_features} features give sizes "
                         f"[{c_lo}, {c_hi}] / [{t_lo}, {t_hi}]: each needs min <= max")
    per_target = 1 if overlapping_targets else num_targets
    if c_lo + per_target * t_lo > num_features:
        raise ValueError(f"the smallest context ({c_lo}) and targets ({per_target} x {t_lo}) do not fit in "
                         f"{num_features} features")
    while True:
        u = torch.rand(2, generator=generator, device=generator.device if generator else None).tolist()
        c, t = c_lo + round((c_hi - c_lo) * u[0]), t_lo + round((t_hi - t_lo) * u[1])
        if c + per_target * t <= num_features:
            return c, t


def block_masks_1d(
    batch: int,
    length: int,
    num_blocks: int,
    block_len: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> FeatureSubsets:
    """Multi-block masks of I-JEPA (Assran et al. 2023) on a 1-D token axis.

    ``num_blocks`` contiguous target blocks of ``block_len`` tokens (they may overlap each other); the
    context is every token outside all target blocks.
    """
    if block_len < 1 or block_len > length or num_blocks < 1:
        raise ValueError(f"need 1 <= block_len <= length={length} and num_blocks >= 1")
    device = _device(device, generator)
    starts = torch.randint(0, length - block_len + 1, (batch, num_blocks), generator=generator,
                           device=device)
    pos = torch.arange(length, device=device)[None, None, :]
    targets = (pos >= starts[..., None]) & (pos < starts[..., None] + block_len)
    return FeatureSubsets(context_hidden=targets.any(dim=1), targets=targets)


@dataclass
class NodeMask:
    """GraphMAE node masking (Hou et al. 2022, §3.2).

    ``mask [N]``: nodes whose input features are hidden. Of those, ``token [N]`` get the learnable
    [MASK] token and ``noise [N]`` get the features of ``noise_source`` (random nodes) instead.
    """

    mask: Tensor
    token: Tensor
    noise: Tensor
    noise_source: Tensor

    def apply(self, x: Tensor, mask_token: Tensor) -> Tensor:
        """Features with the [MASK] token and the random replacements put in place."""
        out = x.clone()
        out[self.noise] = x[self.noise_source[self.noise]]
        out[self.token] = mask_token.to(x.dtype)
        return out


def node_mask(
    num_nodes: int,
    mask_rate: float,
    replace_rate: float = 0.0,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> NodeMask:
    """Hide exactly ``round(mask_rate * N)`` nodes; ``round(replace_rate * hidden)`` of them get random
    other nodes' features, the rest the [MASK] token."""
    if not 0.0 <= mask_rate <= 1.0 or not 0.0 <= replace_rate <= 1.0:
        raise ValueError(f"mask_rate and replace_rate must lie in [0, 1], got {mask_rate}, {replace_rate}")
    if num_nodes < 1:
        raise ValueError("cannot mask an empty graph (0 nodes)")
    device = _device(device, generator)
    perm = torch.randperm(num_nodes, generator=generator, device=device)
    n_mask = int(round(mask_rate * num_nodes))
    n_noise = int(round(replace_rate * n_mask))
    mask = torch.zeros(num_nodes, dtype=torch.bool, device=device)
    mask[perm[:n_mask]] = True
    noise = torch.zeros_like(mask)
    noise[perm[:n_noise]] = True
    token = mask & ~noise
    source = torch.randint(0, num_nodes, (num_nodes,), generator=generator, device=device)
    return NodeMask(mask=mask, token=token, noise=noise, noise_source=source)


def subsequence_slices(
    lengths: Tensor,
    num_views: int,
    min_len: int,
    max_len: int,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Random slices of CoLES (Babaev et al. 2022): ``num_views`` contiguous subsequences per sequence.

    A view of a sequence of length ``L`` has length uniform in ``[min(min_len, L), min(max_len, L)]`` and a
    uniform start. Returns ``(starts, view_lengths)``, both ``[B, num_views]`` long.
    """
    lengths = torch.as_tensor(lengths).long()
    if bool((lengths < 1).any()):
        bad = int((lengths < 1).nonzero()[0, 0])
        raise ValueError(f"sequence {bad} has length 0: cannot slice a zero-length sequence")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    device = lengths.device
    lo = lengths.clamp(max=min_len)[:, None]
    hi = lengths.clamp(max=max_len)[:, None]
    u = torch.rand(lengths.shape[0], num_views, generator=generator, device=device)
    view_len = lo + torch.floor(u * (hi - lo + 1)).long()
    u = torch.rand(lengths.shape[0], num_views, generator=generator, device=device)
    starts = torch.floor(u * (lengths[:, None] - view_len + 1)).long()
    return starts, view_len
