"""Point-cloud processor: files through open3d (point clouds: ply, pcd, xyz, xyzn, xyzrgb, pts; meshes: off, obj, stl,
ply with faces, sampled uniformly over their surface), arrays ``[N, 3]`` or ``[N, 3 + C]``; centred on the centroid
and scaled into the unit sphere (Point-MAE, Pang et al. 2022), then a fixed number of points by farthest point
sampling or a seeded random choice. Bad input gets :class:`BadExample` naming the file and the field.

A cloud with fewer points than ``num_points`` but at least ``min_points`` is padded by repeating its points (FPS
order: the farthest spread first) — documented policy; fewer than ``min_points`` (one patch) is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo import BadExample, Processor, ProcessorConfig
from zoo.plugin import example_name, numeric_array
from zoo.points import farthest_from_centroid, farthest_point_sample

from .ply import MAX_FILE_POINTS, check_vertices

MESH_SUFFIXES = (".off", ".obj", ".stl", ".gltf", ".glb")
CLOUD_SUFFIXES = (".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts")
SAMPLING = ("fps", "random")
EXTRAS = ("colors", "normals")          # a file's per-point attributes that extra channels can hold


@dataclass
class PointCloudProcessorConfig(ProcessorConfig):
    """``num_points`` per cloud by ``sampling`` (``fps``: farthest point sampling from the point farthest from the
    centroid, so the result does not depend on the order of the points; ``random``:
    a choice seeded by ``seed``, the same for a given cloud every time). ``extra_channels``: how many channels after
    x, y, z to keep, filled from a file's ``extras`` in that order (``colors``, ``normals``: 3 channels each; a file
    that lacks one the channels need is refused, so that no file's normals stand where another's colours do); the
    encoder's ``in_channels`` follows (``3 + extra_channels``). ``mesh_points``: points drawn uniformly over a mesh's
    surface before sampling. ``min_points``: fewer is an error (a patch needs at least this many). ``augment_*``: the
    training view (:meth:`PointCloudProcessor.augmented`); inference never uses them."""

    num_points: int = 1024
    sampling: str = "fps"
    normalize: bool = True
    extra_channels: int = 0
    extras: list[str] = field(default_factory=lambda: ["colors", "normals"])
    mesh_points: int = 8192
    min_points: int = 32
    seed: int = 0
    augment_resample: bool = True     # training: a fresh random subset of num_points each epoch (Point-MAE)
    augment_scale: list[float] = field(default_factory=lambda: [2 / 3, 3 / 2])   # training: per-axis scale range
    augment_shift: float = 0.2        # training: per-axis shift drawn from [-shift, shift]

    def validate(self) -> None:
        super().validate()
        self.check(self.num_points >= 1, "num_points", "must be >= 1")
        self.check(self.sampling in SAMPLING, "sampling", f"must be one of {SAMPLING}")
        self.check(self.extra_channels >= 0, "extra_channels", "must be >= 0")
        self.check(set(self.extras) <= set(EXTRAS) and len(set(self.extras)) == len(self.extras), "extras",
                   f"must name each of {list(EXTRAS)} at most once")
        self.check(self.extra_channels <= 3 * len(self.extras), "extra_channels",
                   f"must be at most 3 per attribute of extras ({self.extras})")
        self.check(self.mesh_points >= self.num_points, "mesh_points", "must be >= num_points")
        self.check(1 <= self.min_points <= self.num_points, "min_points", "must lie in [1, num_points]")
        self.check(len(self.augment_scale) == 2 and 0 < self.augment_scale[0] <= self.augment_scale[1],
                   "augment_scale", "must be [low, high] with 0 < low <= high ([1, 1]: off)")
        self.check(self.augment_shift >= 0, "augment_shift", "must be >= 0 (0: off)")


def read_points(path: str, mesh_points: int = 8192, seed: int = 0, max_points: int = MAX_FILE_POINTS,
                extras: list[str] | None = None) -> np.ndarray:
    """A file → ``[N, 3 + C]`` float32: colours and normals appended when the file has them, or with ``extras``
    exactly those attributes in that order (a file without one is a :class:`BadExample` naming it). A PLY file is
    checked against its header first (:mod:`.ply`) and its point count after reading."""
    import open3d as o3d
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)   # a failed read is our BadExample, said once
    p = Path(path)
    if not p.is_file():
        raise BadExample(path, "path", "no such file")
    if p.stat().st_size == 0:
        raise BadExample(path, "path", "empty file")
    suffix = p.suffix.lower()
    header = check_vertices(p, max_points) if suffix == ".ply" else None
    try:
        if suffix in MESH_SUFFIXES or (header is not None and header.count("face") > 0):
            mesh = o3d.io.read_triangle_mesh(str(p))
            if header is not None and len(mesh.triangles) == 0:
                raise BadExample(path, "face", f"the header declares {header.count('face')} faces, none could be "
                                               "read (a damaged mesh; a bare point cloud declares no faces)")
            if header is not None and len(mesh.triangles) < header.count("face"):
                raise BadExample(path, "face", f"the header declares {header.count('face')} faces, the file holds "
                                               f"{len(mesh.triangles)} readable ones: a cut or damaged mesh, or a "
                                               "header that does not match its content")
            if len(mesh.triangles) > 0:
                if mesh.get_surface_area() <= 0:
                    raise BadExample(path, "mesh", "the mesh has zero surface area")
                o3d.utility.random.seed(seed)
                cloud = mesh.sample_points_uniformly(number_of_points=mesh_points)
            else:
                cloud = o3d.geometry.PointCloud(mesh.vertices)
        elif suffix in CLOUD_SUFFIXES or suffix == ".ply":
            cloud = o3d.io.read_point_cloud(str(p))
        else:
            raise BadExample(path, "path", f"unknown point-cloud format {suffix!r}; known: "
                                           f"{sorted(MESH_SUFFIXES + CLOUD_SUFFIXES + ('.ply',))}")
    except BadExample:
        raise
    except Exception as err:
        raise BadExample(path, "path", f"open3d cannot read it: {err}") from None
    parts = [np.asarray(cloud.points, dtype=np.float32)]
    has = {"colors": cloud.has_colors(), "normals": cloud.has_normals()}
    for attr in extras if extras is not None else [a for a in EXTRAS if has[a]]:
        if not has[attr]:
            raise BadExample(path, attr, f"the file holds no {attr}, which its extra channels need "
                                         f"(processor.extras: the attributes, in order, that fill them)")
        parts.append(np.asarray(getattr(cloud, attr), dtype=np.float32))
    if parts[0].shape[0] == 0:
        raise BadExample(path, "points", "the file holds no points (empty or unreadable)")
    if header is not None and header.count("face") == 0 and parts[0].shape[0] != header.count("vertex"):
        raise BadExample(path, "vertex", f"open3d read {parts[0].shape[0]} of the {header.count('vertex')} vertices "
                                         "the header declares")
    return np.concatenate(parts, axis=1)


class PointCloudProcessor(Processor):
    """Accepts a file path, an array ``[N, 3 + C]``, or a ``datasets`` row value (a list of points, or
    ``{"points": ...}``). Returns ``{"points": [num_points, 3 + extra_channels]}``; :meth:`collate` stacks."""

    config_class = PointCloudProcessorConfig

    def raw(self, example: Any, name: str) -> Tensor:
        if isinstance(example, (str, Path)):
            c = self.config
            needed = c.extras[:-(-c.extra_channels // 3)] if c.extra_channels else None
            arr = read_points(str(example), c.mesh_points, c.seed, extras=needed)
        elif isinstance(example, dict):
            if "points" not in example:
                raise BadExample(name, "points", f"a point-cloud dict needs 'points', got keys {sorted(example)}")
            arr = example["points"]
        else:
            arr = example
        t = numeric_array(arr, name, "points")
        if t.dim() != 2 or t.shape[1] < 3:
            raise BadExample(name, "points", f"expected points [N, 3] or [N, 3 + C], got shape {tuple(t.shape)}")
        return t

    def _checked(self, example: Any, name: str) -> Tensor:
        """The example's points ``[N, 3 + extra_channels]``, every check passed."""
        c = self.config
        pts = self.raw(example, name)
        want = 3 + c.extra_channels
        if pts.shape[1] < want:
            raise BadExample(name, "points", f"{pts.shape[1] - 3} extra channels; the model expects "
                                             f"{c.extra_channels}")
        pts = pts[:, :want]
        if pts.shape[0] < c.min_points:
            raise BadExample(name, "points", f"{pts.shape[0]} points; at least {c.min_points} are needed "
                                             "(one patch)")
        bad = ~torch.isfinite(pts)
        if bool(bad.any()):
            raise BadExample(name, "points", f"{int(bad.any(dim=1).sum())} points with NaN/inf coordinates")
        return pts

    def _normalised(self, pts: Tensor, name: str) -> Tensor:
        """Centred on the centroid and scaled into the unit sphere (with ``normalize``)."""
        xyz = pts[:, :3]
        if self.config.normalize:
            xyz = xyz - xyz.mean(dim=0)
            radius = xyz.norm(dim=1).max()
            if float(radius) == 0.0:
                raise BadExample(name, "points", "all points are equal: the cloud has no extent")
            xyz = xyz / radius
        elif bool((xyz == xyz[:1]).all()):
            raise BadExample(name, "points", "all points are equal: the cloud has no extent")
        return torch.cat([xyz, pts[:, 3:]], dim=1)

    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        name = example_name(example, name)
        c = self.config
        pts = self._normalised(self._checked(example, name), name)
        xyz = pts[:, :3]
        n = pts.shape[0]
        k = min(n, c.num_points)
        if c.sampling == "fps" and pts.shape[1] == 3 and k < n:
            return {"points": self._fps_open3d(xyz, k, c.num_points)}
        if c.sampling == "fps":
            idx = farthest_point_sample(xyz[None], k, start="centroid")[0]
        else:
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(c.seed))[:k]
        if k < c.num_points:                                  # pad by repeating the chosen points in order
            idx = idx[torch.arange(c.num_points) % k]
        return {"points": pts[idx].contiguous()}

    def augments(self) -> bool:
        c = self.config
        return c.augment_resample or tuple(c.augment_scale) != (1.0, 1.0) or c.augment_shift > 0

    def augmented(self, example: Any, *, name: str | None = None, generator: torch.Generator) -> dict[str, Tensor]:
        """Point-MAE's training view (Pang et al. 2022; its released pretraining): a fresh random subset of
        ``num_points`` every epoch, normalised, then every axis scaled by a draw from ``augment_scale`` and
        shifted by one from ``[-augment_shift, augment_shift]`` (``PointcloudScaleAndTranslate``)."""
        name = example_name(example, name)
        c = self.config
        if c.augment_resample:
            pts = self._checked(example, name)
            k = min(pts.shape[0], c.num_points)
            idx = torch.randperm(pts.shape[0], generator=generator)[:k]
            if k < c.num_points:
                idx = idx[torch.arange(c.num_points) % k]
            pts = self._normalised(pts[idx], name)
        else:
            pts = self(example, name=name)["points"]
        lo, hi = c.augment_scale
        scale = lo + (hi - lo) * torch.rand(3, generator=generator)
        shift = (2 * torch.rand(3, generator=generator) - 1) * c.augment_shift
        return {"points": torch.cat([pts[:, :3] * scale + shift, pts[:, 3:]], dim=1).contiguous()}

    @staticmethod
    def _fps_open3d(xyz: Tensor, k: int, total: int) -> Tensor:
        """open3d's compiled FPS (about 20x faster than a Python loop for one cloud), started, like
        :func:`zoo.points.farthest_point_sample` with ``start="centroid"``, from the point farthest from the
        centroid."""
        import open3d as o3d
        start = int(farthest_from_centroid(xyz[None])[0])
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.double().numpy()))
        out = torch.as_tensor(np.asarray(cloud.farthest_point_down_sample(k, start).points), dtype=torch.float32)
        return out[torch.arange(total) % k].contiguous()

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {"points": torch.stack([it["points"] for it in items])}

    def encoder_config(self) -> dict[str, Any]:
        """The encoder reads x, y, z and the extra channels this processor keeps."""
        return {"in_channels": 3 + self.config.extra_channels}

    def read(self, path: str) -> Any:
        return path
