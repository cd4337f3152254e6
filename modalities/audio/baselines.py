"""Hand-crafted baseline features for the probe harness: MFCC statistics (Davis & Mermelstein 1980)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .processor import AudioProcessor


def mfcc_features(examples: Sequence[Any], processor: AudioProcessor | None = None, n_mfcc: int = 20) -> torch.Tensor:
    """Per-clip mean and standard deviation of ``n_mfcc`` MFCCs (librosa) → ``[N, 2 * n_mfcc]``."""
    import librosa
    processor = processor or AudioProcessor()
    sr = processor.config.sample_rate
    rows = []
    for i, ex in enumerate(examples):
        x = processor(ex, name=str(ex) if isinstance(ex, str) else str(i))["input_values"].numpy()
        m = librosa.feature.mfcc(y=x, sr=sr, n_mfcc=n_mfcc, n_fft=min(512, len(x)), hop_length=160)
        rows.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
    return torch.tensor(np.stack(rows), dtype=torch.float32)
