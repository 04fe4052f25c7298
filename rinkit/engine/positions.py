"""Position codes over an n-dimensional token grid, for plugins' tokenizers: the fixed sin-cos
code (`sincos_grid`) and the module that adds fixed and/or learned codes (`Positions`).

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
from torch import nn

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


class Positions(nn.Module):
    """Position codes for a row-major token grid, added to the tokens: `forward()` -> (prod(grid), dim).

    `kind` is one of the parts below or a sum of them joined by '+' (e.g. "sincos+learned"):
      sincos      the fixed code above (`max_coord` as for `sincos_grid`)
      learned     one learned vector per grid cell (ViT / the official image denoiser)
      factorized  one learned vector per index of each axis, summed over the axes (AST-style;
                  an axis's table is the attribute named in `axes`, e.g. ("freq", "time"))
    A learned table alone starts as the official truncated normal (sigma 0.02, cut at 2 sigma);
    next to the fixed code it is a zero-initialised residual, so the model starts from sin-cos."""

    def __init__(self, grid: tuple[int, ...], dim: int, kind: str = "learned",
                 max_coord: float | None = None, axes: tuple[str, ...] | None = None):
        super().__init__()
        parts = kind.split("+")
        if not parts or set(parts) - {"sincos", "learned", "factorized"} or len(set(parts)) != len(parts) \
                or {"learned", "factorized"} <= set(parts):
            raise ValueError(f"unknown positional embedding {kind!r}")
        self.kind, self.parts = kind, parts
        self.axes = tuple(axes or (f"axis{i}" for i in range(len(grid))))
        if len(self.axes) != len(grid):
            raise ValueError(f"{len(self.axes)} axis names for a {len(grid)}-D grid")
        alone = len(parts) == 1
        if "sincos" in parts:
            self.register_buffer("fixed", sincos_grid(grid, dim, max_coord), persistent=False)
        if "learned" in parts:
            self.learned = nn.Parameter(torch.zeros(math.prod(grid), dim))
            if alone:
                nn.init.trunc_normal_(self.learned, std=0.02, a=-0.04, b=0.04)
        if "factorized" in parts:
            for i, (name, n) in enumerate(zip(self.axes, grid)):
                shape = [1] * len(grid) + [dim]
                shape[i] = n
                setattr(self, name, nn.Parameter(torch.zeros(shape)))
                if alone:
                    nn.init.trunc_normal_(getattr(self, name), std=0.02, a=-0.04, b=0.04)

    def forward(self) -> torch.Tensor:
        out = self.fixed if "sincos" in self.parts else None
        if "learned" in self.parts:
            out = self.learned if out is None else out + self.learned
        if "factorized" in self.parts:
            tables = [getattr(self, name) for name in self.axes]
            summed = tables[0]
            for t in tables[1:]:
                summed = summed + t
            summed = summed.reshape(-1, summed.shape[-1])  # row-major over the grid
            out = summed if out is None else out + summed
        return out
