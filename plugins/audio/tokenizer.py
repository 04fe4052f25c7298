"""Spectrogram tokenizer / detokenizer: (frequency x time) patches with positions on both axes.

A log-mel spectrogram is not an image: moving a pattern along time keeps its meaning, moving it
along frequency changes the pitch. The position code therefore names both axes separately:
  sincos      fixed 2-D sin-cos, half the channels for the mel-patch index, half for the frame index
  factorized  a learned code per frequency row plus a learned code per time column (AST-style)
  sincos+factorized  the fixed code plus a zero-initialised factorised learned residual (default)
Tokenizer: linear patch projection (conv, kernel = stride = patch) -> LayerNorm -> + positions.
Detokenizer: LayerNorm -> linear to the patch's values -> un-patchify."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from rinkit.plugin import layer_norm, sincos_grid


class FreqTimePositions(nn.Module):
    def __init__(self, grid: tuple[int, int], dim: int, kind: str):
        super().__init__()
        self.grid, self.kind = grid, kind
        if "sincos" in kind:
            self.register_buffer("fixed", sincos_grid(grid, dim), persistent=False)
        if "factorized" in kind:
            self.freq = nn.Parameter(torch.zeros(grid[0], 1, dim))
            self.time = nn.Parameter(torch.zeros(1, grid[1], dim))
            if kind == "factorized":
                nn.init.trunc_normal_(self.freq, std=0.02, a=-0.04, b=0.04)
                nn.init.trunc_normal_(self.time, std=0.02, a=-0.04, b=0.04)

    def forward(self) -> torch.Tensor:
        out = 0
        if "sincos" in self.kind:
            out = self.fixed
        if "factorized" in self.kind:
            out = out + (self.freq + self.time).reshape(-1, self.freq.shape[-1])  # row-major (f, t)
        return out


class SpectrogramTokenizer(nn.Module):
    def __init__(self, n_mels: int, frames: int, patch: tuple[int, int], dim: int, pos_emb: str):
        super().__init__()
        self.grid = (n_mels // patch[0], frames // patch[1])
        self.patch = nn.Conv2d(1, dim, patch, stride=patch)
        self.norm = layer_norm(dim)
        self.pos = FreqTimePositions(self.grid, dim, pos_emb)

    def forward(self, x: torch.Tensor, context=None) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, F' T', D), frequency-major
        return self.norm(x) + self.pos()


class SpectrogramDetokenizer(nn.Module):
    def __init__(self, n_mels: int, frames: int, patch: tuple[int, int], dim: int):
        super().__init__()
        self.grid, self.p = (n_mels // patch[0], frames // patch[1]), patch
        self.norm = layer_norm(dim)
        self.proj = nn.Linear(dim, patch[0] * patch[1])

    def forward(self, tokens: torch.Tensor, context=None) -> torch.Tensor:
        x = self.proj(self.norm(tokens[:, :self.grid[0] * self.grid[1]]))
        return rearrange(x, "b (f t) (pf pt) -> b 1 (f pf) (t pt)", f=self.grid[0], t=self.grid[1],
                         pf=self.p[0], pt=self.p[1])
