"""Token view for `rinkit routing`: a per-patch value as a heatmap over the image."""
from __future__ import annotations

import numpy as np


def gray(x) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W) in [0, 1] (channel mean)."""
    return ((x.detach().float().cpu().mean(1) + 1) / 2).numpy()


def patch_heat(values: np.ndarray, pictures: np.ndarray, grid: tuple[int, int], patch: tuple[int, int]) -> np.ndarray:
    """values (B, >= gh*gw) in row-major patch order over pictures (B, H, W) -> (B, H, W, 3)."""
    from rinkit.plugin import overlay, upsample
    gh, gw = grid
    v = values[:, :gh * gw].reshape(-1, gh, gw)  # extra (conditioning) tokens are not drawn here
    return np.stack([overlay(p, upsample(g, patch)) for p, g in zip(pictures, v)])


def token_view(values, x, options, state=None, context=None) -> np.ndarray:
    p = options.patch_size
    h, w = options.size
    return patch_heat(values, gray(x), (h // p, w // p), (p, p))
