"""Image tokenizer and detokenizer (docs/method.md §2).

Tokenizer: patch embedding (conv with kernel = stride = patch, i.e. a linear patch projection)
-> flatten to (H/p)(W/p) tokens -> LayerNorm -> + positional embedding (learned by default;
fixed 2-D sin-cos, or sin-cos plus a zero-initialised learned residual).
Detokenizer: LayerNorm -> linear to p*p*C -> unpatchify."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from rinkit.engine.positions import OFFICIAL_MAX_COORD, sincos_grid
from rinkit.engine.rin import layer_norm


class PositionalEmbedding(nn.Module):
    def __init__(self, grid: tuple[int, ...], dim: int, kind: str, max_coord: float | None = None):
        super().__init__()
        n = 1
        for g in grid:
            n *= g
        self.kind = kind
        if kind in ("sincos", "sincos+learned"):
            self.register_buffer("fixed", sincos_grid(grid, dim, max_coord), persistent=False)
        if kind in ("learned", "sincos+learned"):
            self.learned = nn.Parameter(torch.zeros(n, dim))
            if kind == "learned":
                nn.init.trunc_normal_(self.learned, std=0.02, a=-0.04, b=0.04)

    def forward(self) -> torch.Tensor:
        if self.kind == "learned":
            return self.learned
        if self.kind == "sincos":
            return self.fixed
        return self.fixed + self.learned


class ImageTokenizer(nn.Module):
    def __init__(self, channels: int, image_size: tuple[int, int], patch_size: int, dim: int,
                 pos_emb: str = "learned", stem_norm: bool = True):
        super().__init__()
        self.grid = (image_size[0] // patch_size, image_size[1] // patch_size)
        self.patch = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        self.norm = layer_norm(dim) if stem_norm else nn.Identity()
        # sin-cos coordinates scaled to [0, 1000] per axis, as the official image denoiser
        self.pos = PositionalEmbedding(self.grid, dim, pos_emb, max_coord=OFFICIAL_MAX_COORD)

    def forward(self, x: torch.Tensor, context=None) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # B, N, D (row-major patches)
        return self.norm(x) + self.pos()


class ImageDetokenizer(nn.Module):
    def __init__(self, channels: int, image_size: tuple[int, int], patch_size: int, dim: int):
        super().__init__()
        self.grid, self.p = (image_size[0] // patch_size, image_size[1] // patch_size), patch_size
        self.norm = layer_norm(dim)
        self.proj = nn.Linear(dim, patch_size * patch_size * channels)

    def forward(self, tokens: torch.Tensor, context=None) -> torch.Tensor:
        n = self.grid[0] * self.grid[1]
        x = self.proj(self.norm(tokens[:, :n]))  # extra (e.g. conditioning) tokens are not read out
        return rearrange(x, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=self.grid[0], w=self.grid[1],
                         p1=self.p, p2=self.p)
