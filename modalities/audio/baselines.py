"""Hand-crafted baseline features for the probe harness: MFCC statistics (Davis & Mermelstein 1980) with their
first and second time derivatives (Furui 1986)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .processor import AudioProcessor

DELTA_WIDTH = 9          # frames of the derivatives' regression window (librosa's default)


def mfcc_features(examples: Sequence[Any], processor: AudioProcessor | None = None, n_mfcc: int = 20) -> torch.Tensor:
    """Per-clip mean and standard deviation of ``n_mfcc`` MFCCs, their deltas and delta-deltas (librosa) over the
    whole clip, never cut at ``max_seconds`` (docs/architecture.md, "Long inputs") → ``[N, 6 * n_mfcc]``. A clip
    of fewer frames than the delta window uses the widest odd window it holds (none below 3 frames: zero deltas)."""
    import librosa
    processor = processor or AudioProcessor()
    sr = processor.config.sample_rate
    rows = []
    for i, ex in enumerate(examples):
        x = processor.whole(ex, name=str(ex) if isinstance(ex, str) else str(i))["input_values"].numpy()
        m = librosa.feature.mfcc(y=x, sr=sr, n_mfcc=n_mfcc, n_fft=min(512, len(x)), hop_length=160)
        width = min(DELTA_WIDTH, m.shape[1] - (1 - m.shape[1] % 2))
        if width >= 3:
            d1, d2 = librosa.feature.delta(m, width=width), librosa.feature.delta(m, width=width, order=2)
        else:
            d1 = d2 = np.zeros_like(m)
        feats = np.concatenate([m, d1, d2])
        rows.append(np.concatenate([feats.mean(axis=1), feats.std(axis=1)]))
    return torch.tensor(np.stack(rows), dtype=torch.float32)
