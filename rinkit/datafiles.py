"""Data files for any modality plugin. Folder datasets: class sub-folders as labels and a train/test split.

`root/train/` + `root/test/` are used as given; otherwise every 10th file of each class is held
out for the test split (deterministic, by sorted name)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rinkit.errors import RinkitError

# what PIL reads that a folder of images / frames may hold (image datasets, video frames, `rinkit eval`)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _files(root: Path, exts) -> list[tuple[Path, int]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if classes:
        return [(f, k) for k, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
                if f.suffix.lower() in exts]
    return [(f, 0) for f in sorted(root.iterdir()) if f.suffix.lower() in exts]


def labelled_files(path: str | None, exts, split: str, what: str) -> list[tuple[Path, int]]:
    """(file, class index) pairs of `split` under data.path; `what` names the files in errors."""
    if not path:
        raise RinkitError(f"dataset 'folder' needs data.path (a folder of {what})")
    root = Path(path)
    if not root.is_dir():
        raise RinkitError(f"data.path {root} is not a folder")
    if (root / "train").is_dir() and (root / "test").is_dir():
        files = _files(root / split, exts)
    else:
        seen: dict[int, int] = {}
        files = []
        for f, k in _files(root, exts):
            i = seen[k] = seen.get(k, -1) + 1
            if (i % 10 == 9) == (split == "test"):
                files.append((f, k))
    if not files:
        raise RinkitError(f"no {'/'.join(exts)} files for the {split} split under {root}")
    return files


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Samples in [-1, 1] -> uint8; images (B, C, H, W) become NHWC (the ADM evaluator's layout),
    other modalities keep their layout."""
    u8 = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return (u8.permute(0, 2, 3, 1) if u8.dim() == 4 else u8).cpu().numpy()
