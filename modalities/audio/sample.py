"""A tiny labelled audio set for the conformance suite: tones of three pitch bands as WAV files in class folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.plugin import SampleData

BANDS = {"low": (180.0, 260.0), "mid": (600.0, 800.0), "high": (1800.0, 2400.0)}


def sample_data(root: Path, per_class: int = 12, seed: int = 0) -> SampleData:
    """``root/tones/<band>/<band>_<i>.wav``: 0.5–0.9 s at 16 kHz, a tone with two harmonics, random phase,
    loudness and noise; the bands are a linear model's task (a spectrum tells them apart)."""
    import soundfile as sf
    rng = np.random.default_rng(seed)
    data = Path(root) / "tones"
    for band, (lo, hi) in BANDS.items():
        (data / band).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            sr, dur = 16000, rng.uniform(0.5, 0.9)
            t = np.arange(int(sr * dur)) / sr
            f = rng.uniform(lo, hi)
            wave = sum(a * np.sin(2 * np.pi * f * k * t + rng.uniform(0, 2 * np.pi)) for k, a in ((1, 1.0), (2, 0.4),
                                                                                                   (3, 0.2)))
            wave = rng.uniform(0.2, 0.6) * wave / 1.6 + rng.normal(0, 0.02, t.shape)
            sf.write(data / band / f"{band}_{i}.wav", wave.astype(np.float32), sr)
    inputs = [data / "low" / "low_0.wav", data / "high" / "high_1.wav"]
    return SampleData(data=data, recipe="audio-wav2vec2-tiny", num_classes=len(BANDS), predict_inputs=inputs,
                      predict_names=[str(p) for p in inputs], predict_all=sorted(data.rglob("*.*")),
                      pretrain_overrides=["train.steps=4", "train.batch_size=8", "train.warmup_steps=1",
                                          "encoder.depth=2", "pretraining.num_negatives=10"],
                      finetune_args=["--lr", "0.002"])
