"""Hand-crafted baseline for the probe harness: appearance and motion statistics of the raw frames (the mean
frame, the mean signed and absolute frame differences, each pooled to a coarse grid), as in classic
motion-energy features (Bobick & Davis 2001: motion-energy and motion-history images)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .processor import VideoProcessor, VideoProcessorConfig


def frame_statistics(examples: Sequence[Any], processor: VideoProcessor | None = None, grid: int = 8) -> torch.Tensor:
    """Per clip: mean frame, mean signed difference, mean absolute difference and the last-minus-first frame, each
    per channel average-pooled to ``grid × grid`` → ``[N, 4 · C · grid²]``. Frames are sampled as the model's
    processor samples them, at their native resolution."""
    processor = processor or VideoProcessor(VideoProcessorConfig(image_size=None))
    rows = []
    for i, ex in enumerate(examples):
        x = processor.frames(ex, str(ex) if isinstance(ex, str) else f"example {i}")      # [T, C, H, W] in [0, 1]
        diff = x[1:] - x[:-1] if x.shape[0] > 1 else torch.zeros_like(x)
        maps = torch.stack([x.mean(0), diff.mean(0), diff.abs().mean(0), x[-1] - x[0]])  # [4, C, H, W]
        rows.append(F.adaptive_avg_pool2d(maps, grid).flatten())
    return torch.stack(rows)
