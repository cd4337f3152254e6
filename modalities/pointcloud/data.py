"""Point-cloud data: the embedded shapes set generated with open3d (seven classes that differ in geometry, not only in
size: boxes, cylinders, cones, tori, spheres, capsules, arrows, with random proportions, rotations, partial crops
and noise), written as ply point clouds and off meshes and read back through the processor; folders of files in
class subfolders; Hugging Face ``datasets`` with a column of point lists."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from zoo import ExampleSet
from zoo.data import folder_source
from zoo.paths import cache_dir, fresh_folder
from zoo.plugin import source_loader

SHAPES = ["box", "cylinder", "cone", "torus", "sphere", "capsule", "arrow"]
SUFFIXES = (".ply", ".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts", ".off", ".obj", ".stl")


def make_mesh(shape: str, rng: np.random.RandomState) -> Any:
    """One open3d mesh of ``shape`` with random proportions (the classes differ in geometry; sizes overlap)."""
    import open3d as o3d
    g = o3d.geometry.TriangleMesh
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    if shape == "box":
        mesh = g.create_box(u(0.3, 1.0), u(0.3, 1.0), u(0.3, 1.0))
    elif shape == "cylinder":
        mesh = g.create_cylinder(radius=u(0.15, 0.5), height=u(0.6, 1.6), resolution=32)
    elif shape == "cone":
        mesh = g.create_cone(radius=u(0.2, 0.6), height=u(0.5, 1.5), resolution=32)
    elif shape == "torus":
        mesh = g.create_torus(torus_radius=u(0.4, 0.7), tube_radius=u(0.08, 0.25), radial_resolution=40,
                              tubular_resolution=20)
    elif shape == "sphere":
        mesh = g.create_sphere(radius=u(0.3, 0.8), resolution=24)
        mesh.scale(1.0, center=mesh.get_center())
        v = np.asarray(mesh.vertices) * np.array([1.0, u(0.6, 1.0), u(0.6, 1.0)])   # an ellipsoid at most
        mesh.vertices = o3d.utility.Vector3dVector(v)
    elif shape == "capsule":
        r, h = u(0.15, 0.35), u(0.5, 1.2)
        body = g.create_cylinder(radius=r, height=h, resolution=32)
        top, bottom = g.create_sphere(radius=r, resolution=16), g.create_sphere(radius=r, resolution=16)
        top.translate((0, 0, h / 2))
        bottom.translate((0, 0, -h / 2))
        mesh = body + top + bottom
    elif shape == "arrow":
        mesh = g.create_arrow(cylinder_radius=u(0.05, 0.12), cone_radius=u(0.15, 0.3),
                              cylinder_height=u(0.6, 1.2), cone_height=u(0.2, 0.5))
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    mesh.rotate(g.get_rotation_matrix_from_quaternion(q), center=mesh.get_center())
    return mesh


def make_shapes(root: str | Path, *, train: int = 420, test: int = 140, points: int = 2048, seed: int = 0) -> Path:
    """Write ``root/<split>/<shape>/<index>.ply`` (sampled points, a random planar crop of up to 25%, Gaussian noise)
    or, for every third shape, ``.off`` (the rotated mesh itself, sampled by the processor), and ``metadata.csv``.
    Train and test clouds are drawn from disjoint random streams; the same seed gives the same files."""
    root = Path(root)
    if (root / "metadata.csv").is_file():
        return root
    with fresh_folder(root) as tmp:
        _write_shapes(tmp, train, test, points, seed)
    return root


def _write_shapes(tmp: Path, train: int, test: int, points: int, seed: int) -> None:
    import open3d as o3d
    rows = []
    for s, (split, count) in enumerate((("train", train), ("test", test))):
        for i in range(count):
            shape = SHAPES[i % len(SHAPES)]
            rng = np.random.RandomState([seed, s, i])
            mesh = make_mesh(shape, rng)
            folder = tmp / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            if i % 3 == 2:
                rel = f"{split}/{shape}/{i:05d}.off"
                mesh.compute_vertex_normals()
                mesh.triangle_normals = o3d.utility.Vector3dVector()     # OFF cannot hold them: none to drop
                o3d.io.write_triangle_mesh(str(tmp / rel), mesh)
            else:
                rel = f"{split}/{shape}/{i:05d}.ply"
                o3d.utility.random.seed(int(rng.randint(2 ** 31)))
                pts = np.asarray(mesh.sample_points_uniformly(number_of_points=int(points * 1.4)).points)
                normal = rng.normal(size=3)
                normal /= np.linalg.norm(normal)
                proj = (pts - pts.mean(0)) @ normal
                keep = proj <= np.quantile(proj, 1.0 - rng.uniform(0.0, 0.25))                 # a partial crop
                pts = pts[keep][:points]
                pts = pts + rng.normal(0, 0.01 * np.ptp(pts, axis=0).max(), pts.shape)         # sensor noise
                o3d.io.write_point_cloud(str(tmp / rel), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts)))
            rows.append((rel, shape, split))
    with open(tmp / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "shape", "split"])
        w.writerows(rows)


def _shapes(spec: dict[str, Any]) -> ExampleSet:
    """The embedded set; ``split`` train/test/all; ``clouds`` (default 560: 420 train, 140 test), ``points``,
    ``seed`` pick a generated variant."""
    n = int(spec.get("clouds", 560))
    gen = {k: int(spec[k]) for k in ("points", "seed") if k in spec}
    variant = "shapes" if n == 560 and not gen else \
        "shapes-" + "-".join(f"{k}{v}" for k, v in sorted({**gen, "clouds": n}.items()))
    root = make_shapes(spec.get("root") or cache_dir() / variant, train=n * 3 // 4, test=n - n * 3 // 4, **gen)
    split = spec.get("split", "train")
    rows = [r for r in csv.DictReader(open(root / "metadata.csv")) if split == "all" or r["split"] == split]
    if "limit" in spec:
        rows = rows[: int(spec["limit"])]
    return ExampleSet([str(root / r["file_name"]) for r in rows], [SHAPES.index(r["shape"]) for r in rows],
                      [r["file_name"] for r in rows], SHAPES)


def _folder(spec: dict[str, Any]) -> ExampleSet:
    """``path``: a folder of point-cloud or mesh files, in one subfolder per class (``split`` picks
    ``path/<split>``); files without a class folder make an unlabelled set."""
    return folder_source(spec, SUFFIXES, "point-cloud")


SOURCES = {"shapes": _shapes, "folder": _folder}

load_data = source_loader("pointcloud", SOURCES, "shapes", hf_input="points")


if __name__ == "__main__":  # python -m modalities.pointcloud.data OUT_DIR: write the shapes set
    import sys
    out = make_shapes(sys.argv[1] if len(sys.argv) > 1 else cache_dir() / "shapes")
    print(f"{sum(1 for _ in out.rglob('*.ply')) + sum(1 for _ in out.rglob('*.off'))} files in {out}")
