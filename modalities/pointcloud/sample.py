"""A tiny labelled point-cloud set for the conformance suite: spheres, boxes and discs as .ply and .xyz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.plugin import SampleData

SHAPES = ("sphere", "box", "disc")


def _cloud(shape: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if shape == "sphere":
        p = rng.normal(size=(n, 3))
        p /= np.linalg.norm(p, axis=1, keepdims=True)
    elif shape == "box":
        p = rng.uniform(-1, 1, size=(n, 3))
        face = rng.integers(0, 3, n)
        p[np.arange(n), face] = np.sign(rng.uniform(-1, 1, n))
    else:
        r, a = np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * np.pi, n)
        p = np.stack([r * np.cos(a), r * np.sin(a), rng.normal(0, 0.02, n)], 1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))                   # a random rotation
    return (p * rng.uniform(0.5, 2.0, 3)) @ q.T + rng.normal(0, 0.01, (n, 3))


def sample_data(root: Path, per_class: int = 14, seed: int = 0, points: int = 1024) -> SampleData:
    """``root/shapes/<shape>/<shape>_<i>.{ply,xyz}`` (alternating), written with open3d."""
    import open3d as o3d
    rng = np.random.default_rng(seed)
    data = Path(root) / "shapes"
    for shape in SHAPES:
        (data / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_cloud(shape, points, rng)))
            o3d.io.write_point_cloud(str(data / shape / f"{shape}_{i}.{'ply' if i % 2 == 0 else 'xyz'}"), pc)
    inputs = [data / "sphere" / "sphere_0.ply", data / "disc" / "disc_1.xyz"]
    return SampleData(data=data, recipe="pointcloud-pointmae-tiny", num_classes=len(SHAPES), predict_inputs=inputs,
                      predict_names=[str(p) for p in inputs], predict_all=sorted(data.rglob("*.*")),
                      pretrain_overrides=["train.steps=4", "train.batch_size=8", "train.warmup_steps=1",
                                          "train.num_workers=0", "encoder.depth=2"],
                      finetune_args=["--lr", "0.002"])
