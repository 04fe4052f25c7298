"""Point-cloud and voxel samples on disk: one PLY per sample and a PNG render (matplotlib 3-D
scatter, one row per class when labels are given). Voxel grids also keep the raw grid (.npy);
their PLY holds the occupied voxel centres."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _order(samples, labels):
    n = len(samples)
    per_row = int(np.ceil(np.sqrt(n)))
    if labels is not None:
        order = torch.argsort(labels.cpu(), stable=True)
        samples, labels = samples[order], labels.cpu()[order]
        counts = torch.bincount(labels)
        counts = counts[counts > 0]
        if len(set(counts.tolist())) == 1:
            per_row = int(counts[0])
    return samples, labels, per_row


def render(clouds: list[np.ndarray], per_row: int, path: Path, max_cells: int = 64) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    clouds = clouds[:max_cells]
    rows = max(1, -(-len(clouds) // per_row))
    fig = plt.figure(figsize=(1.8 * per_row, 1.8 * rows), dpi=90)
    for i, p in enumerate(clouds):
        ax = fig.add_subplot(rows, per_row, i + 1, projection="3d")
        if len(p):
            ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=2.5, c=p[:, 2], cmap="viridis", vmin=-1, vmax=1, linewidths=0)
        ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1))
        ax.set_box_aspect((1, 1, 1), zoom=1.6)  # the [-1, 1] cube fills the cell (no axes are drawn)
        ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1, 0, 0)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_clouds(samples: torch.Tensor, labels, path: Path, options=None, context=None) -> list[Path]:
    from rinkit_plugins.points.data import write_ply
    path = Path(path)
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    samples, labels, per_row = _order(samples.detach().float().cpu(), labels)
    clouds = [s.numpy() for s in samples]
    out = [render(clouds, per_row, path.with_suffix(".png"))]
    for i, p in enumerate(clouds):
        name = f"{i:03d}" + (f"-class{int(labels[i])}" if labels is not None else "") + ".ply"
        out.append(write_ply(folder / name, p))
    return out


def occupied_centres(grid: torch.Tensor) -> np.ndarray:
    """(1, D, H, W) grid in [-1, 1] -> (K, 3) centres of voxels above 0, in [-1, 1] coordinates."""
    from rinkit_plugins.points.shapes import voxel_centres
    g = grid[0].detach().cpu().numpy()
    return voxel_centres(g.shape[0])[g > 0].astype(np.float32)


def write_voxels(samples: torch.Tensor, labels, path: Path, options=None, context=None) -> list[Path]:
    from rinkit_plugins.points.data import write_ply
    path = Path(path)
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    samples, labels, per_row = _order(samples.detach().float().cpu(), labels)
    np.save(folder / "grids.npy", samples.numpy())
    centres = [occupied_centres(s) for s in samples]
    out = [render(centres, per_row, path.with_suffix(".png")), folder / "grids.npy"]
    for i, p in enumerate(centres):
        name = f"{i:03d}" + (f"-class{int(labels[i])}" if labels is not None else "") + ".ply"
        out.append(write_ply(folder / name, p))
    return out
