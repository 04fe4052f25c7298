"""Point-cloud and voxel samples on disk: one PLY per sample and a PNG render (matplotlib 3-D
scatter; with labels, one titled row per class). Voxel grids also keep the raw grid (.npy);
their PLY holds the occupied voxel centres."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def layout(labels, n: int, per_row: int | None = None) -> tuple[list[tuple[int, int]], list[str | int]]:
    """Grid cells for n samples: with labels (already sorted by class), every class starts a row of
    its own (wrapping after `per_row`, default the largest class's count, at most 16), so a
    class reads as a row; without labels, a near-square grid. -> ([(row, col)], row titles)."""
    if labels is None:
        per_row = per_row or max(1, int(np.ceil(np.sqrt(n))))
        return [(i // per_row, i % per_row) for i in range(n)], []
    labels = [int(v) for v in labels[:n]]
    counts = {c: labels.count(c) for c in dict.fromkeys(labels)}
    per_row = per_row or min(16, max(counts.values()))
    cells, titles, row, col, prev = [], [], -1, 0, None
    for c in labels:
        if c != prev or col == per_row:
            row, col = row + 1, 0
            titles.append(c if c != prev else "")
            prev = c
        cells.append((row, col))
        col += 1
    return cells, titles


def render(clouds: list[np.ndarray], path: Path, labels=None, names=None, title: str | None = None,
           max_cells: int = 64) -> Path:
    """3-D scatter of each cloud in the [-1, 1] cube, one row per class when labels are given
    (row titles: names[label] if names are given, else the class index)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    clouds = clouds[:max_cells]
    cells, titles = layout(labels, len(clouds))
    rows, cols = cells[-1][0] + 1 if cells else 1, max((c for _, c in cells), default=0) + 1
    left, top = (0.9 if titles else 0.0), (0.3 if title else 0.0)  # inches for row titles / the title
    cell = 1.8
    fig = plt.figure(figsize=(left + cell * cols, top + cell * rows), dpi=90)
    w, h = fig.get_size_inches()
    for p, (r, c) in zip(clouds, cells):
        ax = fig.add_axes(((left + c * cell) / w, 1 - (top + (r + 1) * cell) / h, cell / w, cell / h),
                          projection="3d")
        if len(p):
            ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=3, c=p[:, 2], cmap="viridis", vmin=-1, vmax=1, linewidths=0)
        ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1))
        ax.set_box_aspect((1, 1, 1), zoom=1.6)  # the [-1, 1] cube fills the cell (no axes are drawn)
        ax.set_axis_off()
    for r, t in enumerate(titles):
        if t != "":
            text = names[t] if names is not None and t < len(names) else f"class {t}"
            fig.text(0.05 / w, 1 - (top + (r + 0.5) * cell) / h, text, va="center", ha="left", fontsize=10)
    if title:
        fig.text(0.5, 1 - 0.15 / h, title, va="center", ha="center", fontsize=10)
    fig.savefig(path)
    plt.close(fig)
    return path


def by_class(samples: torch.Tensor, labels):
    """Samples and labels sorted by class (stable: sample order kept within a class)."""
    if labels is None:
        return samples, None
    order = torch.argsort(labels.cpu(), stable=True)
    return samples[order], labels.cpu()[order]


def write_clouds(samples: torch.Tensor, labels, path: Path, options=None, context=None) -> list[Path]:
    from rinkit_plugins.points.data import write_ply
    path = Path(path)
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    samples, labels = by_class(samples.detach().float().cpu(), labels)
    clouds = [s.numpy() for s in samples]
    out = [render(clouds, path.with_suffix(".png"), labels)]
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
    samples, labels = by_class(samples.detach().float().cpu(), labels)
    np.save(folder / "grids.npy", samples.numpy())
    centres = [occupied_centres(s) for s in samples]
    out = [render(centres, path.with_suffix(".png"), labels), folder / "grids.npy"]
    for i, p in enumerate(centres):
        name = f"{i:03d}" + (f"-class{int(labels[i])}" if labels is not None else "") + ".ply"
        out.append(write_ply(folder / name, p))
    return out
