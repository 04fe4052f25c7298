"""Token views for `rinkit routing`: point groups and voxel blocks.

points: each point takes the value of the group whose centre is nearest to it (the tokenizer's
groups, from its state at that step), drawn as a coloured 3-D scatter (one fixed view, far points
first). voxels: the heatmap of the patch blocks, max over depth, over the occupancy seen from the
front (max over depth)."""
from __future__ import annotations

import numpy as np


def _project(p: np.ndarray, az: float = 0.6, el: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    ca, sa, ce, se = np.cos(az), np.sin(az), np.cos(el), np.sin(el)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    x1, y1 = ca * x + sa * y, -sa * x + ca * y
    return np.stack([x1, ce * z - se * y1], 1), se * z + ce * y1  # screen (u, v), depth


def points_view(values, x, options, state=None, context=None, size: int = 128) -> np.ndarray:
    from PIL import Image, ImageDraw

    from rinkit.plugin import heat_rgb
    pts = x.detach().float().cpu().numpy()  # (B, N, 3), the x_0 estimate
    if state is not None:  # group of each point: nearest centre of the tokenizer's input
        src, centres = (s.detach().float().cpu().numpy() for s in state)
        group = ((src[:, :, None] - centres[:, None]) ** 2).sum(-1).argmin(-1)
    else:
        group = np.zeros(pts.shape[:2], dtype=int)
    out = []
    for b in range(len(pts)):
        uv, depth = _project(pts[b])
        lim = max(1e-6, float(np.abs(uv).max()))
        px = ((uv / lim * 0.45 + 0.5) * (size - 1)).round()
        colours = heat_rgb(values[b][group[b]])
        im = Image.new("RGB", (size, size), "white")
        d = ImageDraw.Draw(im)
        for i in np.argsort(-depth):  # far first
            u, v = px[i]
            d.ellipse((u - 2, size - 1 - v - 2, u + 2, size - 1 - v + 2), fill=tuple(int(c) for c in colours[i]))
        out.append(np.asarray(im))
    return np.stack(out)


def voxels_view(values, x, options, state=None, context=None) -> np.ndarray:
    from rinkit.plugin import overlay, upsample
    n, p = options.grid_size // options.patch_size, options.patch_size
    occ = ((x.detach().float().cpu()[:, 0] + 1) / 2).amax(1).numpy()  # (B, H, W): front view
    v = values[:, :n ** 3].reshape(-1, n, n, n).max(1)             # max over depth blocks
    return np.stack([overlay(o[::-1], upsample(g, (p, p))[::-1]) for o, g in zip(occ, v)])
