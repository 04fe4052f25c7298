"""Fixed sin-cos position codes over an n-dimensional grid, for plugins' tokenizers.

Each axis gets an equal share of the channels (a multiple of 2 per axis, the remainder zero), so
the same helper serves image (H, W), video (T, H, W) and spectrogram (time, frequency) grids."""
from __future__ import annotations

import math

import torch


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / max(half, 1))
    arg = positions.double()[:, None] * freqs[None]
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


def sincos_grid(grid: tuple[int, ...], dim: int) -> torch.Tensor:
    """(prod(grid), dim) codes, row-major over `grid` (the order tokenizers flatten in)."""
    per_axis = (dim // len(grid)) // 2 * 2
    coords = torch.meshgrid(*[torch.arange(n) for n in grid], indexing="ij")
    parts = [sincos_1d(c.reshape(-1), per_axis) for c in coords]
    out = torch.cat(parts, dim=-1)
    if out.shape[1] < dim:
        out = torch.cat([out, out.new_zeros(out.shape[0], dim - out.shape[1])], dim=-1)
    return out.float()
