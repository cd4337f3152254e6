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
    """Rank of each entry of every row under ascending order (a random permutation for random scores)."""
    order = scores.argsort(dim=1)
    ar = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ar)


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
    device: torch.device | str | None = None,
) -> Tensor:
    """Span masking of wav2vec 2.0 (Baevski et al. 2020, §3.2).

    Each row of valid length ``L`` draws ``n = floor(mask_prob * L / span + u)`` span starts
    (``u ~ U[0, 1)`` for probabilistic rounding), at least ``min_spans``, at most ``L - span + 1``,
    uniformly without replacement from ``[0, L - span]``. Each start hides ``span`` frames; spans
    may overlap, so about ``mask_prob`` of the frames are hidden before overlap. Frames past ``L``
    are never hidden; a row shorter than ``span`` is left unmasked. Returns ``[batch, length]`` bool.
    """
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must lie in [0, 1], got {mask_prob}")
    device = _device(device, generator)
    lengths = _lengths(batch, length, valid_lengths, device)
    starts_available = (lengths - span + 1).clamp(min=0)
    u = torch.rand(batch, generator=generator, device=device)
    counts = torch.floor(mask_prob * lengths / span + u).long().clamp(min=min_spans)
    counts = torch.minimum(counts, starts_available)
    starts = _choose(valid_mask(starts_available, length), counts, generator)
    # A frame t is hidden when a span starts in (t - span, t]: a windowed sum of the start indicators.
    csum = starts.cumsum(dim=1)
    shifted = torch.nn.functional.pad(csum, (span, 0))[:, :length]
    return (csum - shifted) > 0


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
    ``targets [B, M, F]``: ``True`` = position belongs to target set ``m``; disjoint from the context.
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
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> FeatureSubsets:
    """Disjoint context and target feature sets for tabular JEPA (Thimonier et al. 2025).

    Per row, a random permutation of the features gives ``num_targets`` disjoint target sets of exactly
    ``target_size`` features followed by a context of exactly ``context_size`` features.
    """
    need = num_targets * target_size + context_size
    if min(num_targets, target_size, context_size) < 1 or need > num_features:
        raise ValueError(
            f"{num_targets} targets x {target_size} + context {context_size} = {need} must be in "
            f"[3, num_features={num_features}] with every size >= 1")
    device = _device(device, generator)
    ranks = _ranks(torch.rand(batch, num_features, generator=generator, device=device))
    lo = torch.arange(num_targets, device=device)[None, :, None] * target_size
    targets = (ranks[:, None, :] >= lo) & (ranks[:, None, :] < lo + target_size)
    start = num_targets * target_size
    context = (ranks >= start) & (ranks < start + context_size)
    return FeatureSubsets(context_hidden=~context, targets=targets)


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
