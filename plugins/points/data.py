"""Point-cloud and voxel datasets.

`shapes` (points and voxels): the procedural shapes of shapes.py, 4 classes, synthesised on first
access from (split, index) and kept. Point clouds are (num_points, 3) surface samples; voxel
grids (1, D, D, D) solid occupancy in {-1, +1}.

`folder` (points): point sets under data.path as .ply (plyfile), .npy (N x >=3 array, first three
columns) or .xyz (text, x y z per line), in class sub-folders (sorted names = labels) or directly
(label 0). Each set is centred on its bounding-box centre and, with `normalize: unit_sphere`,
scaled so its farthest point lies at radius 0.9; then `num_points` points are drawn without
replacement from a generator seeded by the file's index. A set with fewer points than that, or
with NaN / infinite coordinates, is an error naming the file.
Sub-folders `train/` and `test/` are the splits when present; otherwise every 10th file of each
class is held out."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rinkit.plugin import RinkitError, labelled_files
from rinkit_plugins.points import pose, shapes

SIZES = {"train": 2048, "test": 512}
POINT_EXTS = (".ply", ".npy", ".xyz")


class LazyShapes(Dataset):
    def __init__(self, make, split: str):
        self.make, self.split = make, split
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return SIZES[self.split]

    def __getitem__(self, i):
        if i not in self._cache:
            self._cache[i] = torch.from_numpy(self.make(self.split, i))
        return self._cache[i], i % len(shapes.CLASSES)

    def tensors(self, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(count or len(self), len(self))
        return torch.stack([self[i][0] for i in range(n)]), torch.arange(n) % len(shapes.CLASSES)


def turned(options, split: str) -> bool:
    """Whether this split is served in each cloud's own frame: only the training split, and only
    with `canonical_pose` (the held-out split, the metrics' reference, stays as the data are)."""
    return options.canonical_pose and split == "train"


@functools.lru_cache(maxsize=8)
def shape_clouds(num_points: int, split: str, canonical: bool = False) -> LazyShapes:
    """The built-in clouds; `canonical`: each turned into its own frame (pose.py), as the
    training split of `canonical_pose: true` is served."""
    if canonical:
        return LazyShapes(lambda s, i: pose.canonical(torch.from_numpy(shapes.cloud(s, i, num_points))).numpy(), split)
    return LazyShapes(lambda s, i: shapes.cloud(s, i, num_points), split)


@functools.lru_cache(maxsize=8)
def shape_voxels(size: int, split: str) -> LazyShapes:
    return LazyShapes(lambda s, i: shapes.voxels(s, i, size)[None], split)


class TensorClouds(Dataset):
    def __init__(self, points: torch.Tensor, labels: torch.Tensor):
        self.points, self.labels = points, labels.long()

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i):
        return self.points[i], int(self.labels[i])

    def tensors(self, count: int | None = None):
        n = min(count or len(self), len(self))
        return self.points[:n], self.labels[:n]


# -- point sets on disk ---------------------------------------------------------------------------

def read_points(path: Path) -> np.ndarray:
    """(N, 3) float32 from .ply / .npy / .xyz; a one-line error for anything else."""
    path = Path(path)
    ext = path.suffix.lower()
    try:
        if ext == ".ply":
            from plyfile import PlyData
            v = PlyData.read(str(path))["vertex"]
            pts = np.stack([v["x"], v["y"], v["z"]], axis=1)
        elif ext == ".npy":
            pts = np.load(path, allow_pickle=False)
        elif ext == ".xyz":
            pts = np.loadtxt(path, ndmin=2, comments="#")
        else:
            raise RinkitError(f"{path}: not a point set (.ply, .npy or .xyz)")
    except RinkitError:
        raise
    except Exception as e:
        raise RinkitError(f"cannot read point set {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if pts.ndim != 2 or pts.shape[1] < 3 or len(pts) == 0:
        raise RinkitError(f"{path}: expected an (N, 3) point set, got shape {pts.shape}")
    pts = np.asarray(pts[:, :3], dtype=np.float32)
    if not np.isfinite(pts).all():
        raise RinkitError(f"{path}: point set holds NaN or infinite coordinates")
    return pts


def write_ply(path: Path, points: np.ndarray) -> Path:
    from plyfile import PlyData, PlyElement
    pts = np.asarray(points, dtype=np.float32)
    vertex = np.empty(len(pts), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    vertex["x"], vertex["y"], vertex["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))
    return Path(path)


def prepare(points: np.ndarray, n: int, normalize: str, seed: int) -> np.ndarray:
    pts = points - (points.max(0) + points.min(0)) / 2
    if normalize == "unit_sphere":
        pts = pts / max(float(np.linalg.norm(pts, axis=1).max()), 1e-8) * 0.9
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(pts), n, replace=len(pts) < n)
    return pts[idx].astype(np.float32)


def folder(options, data_cfg, split: str = "train") -> TensorClouds:
    files = labelled_files(data_cfg.path, POINT_EXTS, split, ".ply / .npy / .xyz point sets")
    pts = []
    for i, (f, _) in enumerate(files):
        p = read_points(f)
        if len(p) < options.num_points:  # drawing with repetition would teach duplicated points
            raise RinkitError(f"{f}: {len(p)} points, fewer than modality_options.num_points={options.num_points}")
        pts.append(prepare(p, options.num_points, options.normalize, i))
    x = torch.from_numpy(np.stack(pts))
    if turned(options, split):
        # turned about the centroid, a point may pass the unit cube by the centroid's offset
        x = torch.stack([pose.canonical(c) for c in x]).clamp(-1, 1)
    return TensorClouds(x, torch.tensor([k for _, k in files]))
