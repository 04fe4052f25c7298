"""PNG grids of image samples: one row per class when labels are given."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rinkit.plugin import to_uint8


def grid_image(samples: torch.Tensor, nrow: int, pad: int = 1, min_cell: int = 32) -> Image.Image:
    imgs = to_uint8(samples)
    b, h, w, c = imgs.shape
    ncol = max(1, -(-b // nrow))
    canvas = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(imgs):
        r, k = divmod(i, nrow)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = img
    im = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    scale = max(1, min_cell // max(h, w))  # tiny images (8x8 digits) are upscaled to be seen
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST) if scale > 1 else im


def write_grid(samples: torch.Tensor, labels: torch.Tensor | None, path: Path, options=None,
               per_row: int | None = None) -> list[Path]:
    """Samples sorted by label, one row per class when every class has the same count."""
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = per_row or int(np.ceil(np.sqrt(len(samples))))
    if labels is not None and per_row is None:
        order = torch.argsort(labels.cpu(), stable=True)
        samples, counts = samples[order], torch.bincount(labels.cpu())
        counts = counts[counts > 0]
        if len(set(counts.tolist())) == 1:
            nrow = int(counts[0])
    grid_image(samples, nrow).save(path)
    return [path]
