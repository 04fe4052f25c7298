"""Fixed sin-cos position codes over an n-dimensional grid, for plugins' tokenizers.

Each axis gets an equal share of the channels (a multiple of 2 per axis, the remainder zero), so
the same helper serves image (H, W), video (T, H, W) and spectrogram (time, frequency) grids;
an axis's share is [sin | cos] of its coordinate at Transformer frequencies 10000^(-k / (share/2)).

Coordinates: the official code's `sin_cos` option scales each axis's grid index to
[0, normalization_max] (index / (n - 1) * max; RIN passes its time scaling, 1000), so the code
spans the same range whatever the grid size: `max_coord=OFFICIAL_MAX_COORD`. `max_coord=None`
keeps integer grid indices, for axes where a shift should mean the same at any length (time in
spectrograms, frames)."""
from __future__ import annotations

import math

import torch

OFFICIAL_MAX_COORD = 1000.0  # the official RIN's `normalization_max` (its time_scaling) for sin_cos


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / max(half, 1))
    arg = positions.double()[:, None] * freqs[None]
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


def sincos_grid(grid: tuple[int, ...], dim: int, max_coord: float | None = None) -> torch.Tensor:
    """(prod(grid), dim) codes, row-major over `grid` (the order tokenizers flatten in). With
    `max_coord`, each axis's indices 0..n-1 are scaled to [0, max_coord] (a 1-long axis stays 0)."""
    per_axis = (dim // len(grid)) // 2 * 2
    axes = [torch.arange(n, dtype=torch.float64) for n in grid]
    if max_coord is not None:
        axes = [a / max(len(a) - 1, 1) * max_coord for a in axes]
    coords = torch.meshgrid(*axes, indexing="ij")
    parts = [sincos_1d(c.reshape(-1), per_axis) for c in coords]
    out = torch.cat(parts, dim=-1)
    if out.shape[1] < dim:
        out = torch.cat([out, out.new_zeros(out.shape[0], dim - out.shape[1])], dim=-1)
    return out.float()
