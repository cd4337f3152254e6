"""A tiny labelled video set for the conformance suite: red, green or blue squares moving over grey, as mp4 files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.plugin import SampleData

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220)}


def sample_data(root: Path, per_class: int = 10, seed: int = 0, frames: int = 16, size: int = 32) -> SampleData:
    """``root/clips/<colour>/<colour>_<i>.mp4``: a square of the class's colour moving in a random direction."""
    from .data import write_mp4
    rng = np.random.default_rng(seed)
    data = Path(root) / "clips"
    for colour, rgb in COLOURS.items():
        (data / colour).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            clip = np.full((frames, size, size, 3), 110, dtype=np.uint8)
            side = int(rng.integers(8, 14))
            y, x = rng.integers(0, size - side, 2)
            dy, dx = rng.choice([-1, 0, 1], 2)
            for t in range(frames):
                yy, xx = int(np.clip(y + dy * t, 0, size - side)), int(np.clip(x + dx * t, 0, size - side))
                clip[t, yy:yy + side, xx:xx + side] = rgb
            write_mp4(clip, data / colour / f"{colour}_{i}.mp4", fps=8)
    inputs = [data / "red" / "red_0.mp4", data / "blue" / "blue_1.mp4"]
    return SampleData(data=data, recipe="video-videomae-tiny", num_classes=len(COLOURS), predict_inputs=inputs,
                      predict_names=[str(p) for p in inputs], predict_all=sorted(data.rglob("*.*")),
                      pretrain_overrides=["train.steps=4", "train.batch_size=8", "train.warmup_steps=1",
                                          "train.num_workers=0", "encoder.depth=2", "encoder.image_size=32",
                                          "processor.image_size=32", "encoder.num_frames=8",
                                          "processor.num_frames=8", "processor.frame_stride=2"],
                      finetune_args=["--lr", "0.002"])
