"""Hand-crafted baseline for the probe harness: FPFH descriptors (Rusu et al. 2009, open3d) pooled per cloud."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .processor import PointCloudProcessor


def fpfh_features(examples: Sequence[Any], processor: PointCloudProcessor | None = None) -> torch.Tensor:
    """Per cloud: mean and standard deviation of the 33-bin FPFH histograms of its points (normals estimated from
    the 16 nearest neighbours within radius 0.2 of the unit-sphere cloud, FPFH over 32 neighbours within 0.3)
    → ``[N, 66]``."""
    import open3d as o3d
    processor = processor or PointCloudProcessor()
    rows = []
    for i, ex in enumerate(examples):
        pts = processor(ex, name=str(ex) if isinstance(ex, str) else f"example {i}")["points"][:, :3].double().numpy()
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=0.2, max_nn=16))
        f = np.asarray(o3d.pipelines.registration.compute_fpfh_feature(
            cloud, o3d.geometry.KDTreeSearchParamHybrid(radius=0.3, max_nn=32)).data)      # [33, N]
        rows.append(np.concatenate([f.mean(axis=1), f.std(axis=1)]))
    return torch.tensor(np.stack(rows), dtype=torch.float32)
