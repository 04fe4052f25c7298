"""The n-dimensional patch layer pair shared by the grid modalities (image, video, spectrogram,
voxels): ViT's patch embedding and its readout, for 1-D, 2-D and 3-D grids.

`PatchEmbed`:   (B, C, *size) -> conv with kernel = stride = patch (a linear patch projection)
                -> flatten row-major to prod(grid) tokens -> LayerNorm -> + positions.
`PatchUnembed`: (B, N, D) -> LayerNorm -> linear to prod(patch)·C per token -> un-patchify to
                (B, C, *size); only the first prod(grid) tokens are read out (extra tokens, e.g.
                conditioning appended by the tokenizer, are not). Optionally plus a `PixelHead`,
                convs at full resolution (off by default, as in the official code).
Both are a modality's tokenizer / detokenizer as they stand, so they keep its contract
(rinkit.hookspec.Modality): forward returns (tokens, None) and the readout takes (tokens, context,
state); `embed` is the bare tensor path for subclasses.
The layer names (`patch`, `norm`, `pos`; `norm`, `proj`) are the state-dict keys of the shipped
weights; checkpoints saved before this layer existed under other names are mapped by
`LEGACY_KEYS`, the one place that knows them. timm's `PatchEmbed` is 2-D only, so this is written
here rather than imported."""
from __future__ import annotations

import math

import torch
from torch import nn

from rinkit.engine.positions import Positions
from rinkit.engine.rin import layer_norm

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}

# old key (below the tokenizer) -> its name in PatchEmbed: the video stem and the voxel tokenizer's
# learned positions, before both became a PatchEmbed
LEGACY_KEYS = {"stem.weight": "patch.weight", "stem.bias": "patch.bias", "learned": "pos.learned"}


def _ntuple(patch: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    patch = (patch,) * n if isinstance(patch, int) else tuple(patch)
    if len(patch) != n:
        raise ValueError(f"a {len(patch)}-D patch for a {n}-D grid")
    return patch


class PatchEmbed(nn.Module):
    """`grid`: the token grid the positions cover (usually size // patch per axis; a tokenizer
    that embeds several parts, e.g. video's given and predicted frames, covers all of them).
    `pos_emb`, `max_coord`, `pos_axes`: see `Positions`. `norm=False` drops the stem LayerNorm."""

    def __init__(self, channels: int, dim: int, patch: int | tuple[int, ...], grid: tuple[int, ...],
                 pos_emb: str = "learned", max_coord: float | None = None, norm: bool = True,
                 pos_axes: tuple[str, ...] | None = None):
        super().__init__()
        if len(grid) not in _CONV:
            raise ValueError(f"patch layers are 1-D, 2-D or 3-D, not {len(grid)}-D")
        self.grid, self.patch_size = tuple(grid), _ntuple(patch, len(grid))
        self.patch = _CONV[len(grid)](channels, dim, self.patch_size, stride=self.patch_size)
        self.norm = layer_norm(dim) if norm else nn.Identity()
        self.pos = Positions(self.grid, dim, pos_emb, max_coord, pos_axes)
        self._register_load_state_dict_pre_hook(self._legacy_keys)

    def embed(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, *size) -> (B, N, D) normalised patch tokens, row-major, without positions.
        `extra` (broadcastable to (B, D, *grid)) is added to the patch features before the norm:
        a subclass's second stem (e.g. video's window onto the given frames)."""
        x = self.patch(x)
        if extra is not None:
            x = x + extra
        return self.norm(x.flatten(2).transpose(1, 2))

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, None]:
        return self.embed(x) + self.pos(), None

    @property
    def token_grid(self) -> tuple[tuple[int, ...], torch.Tensor | None]:
        """(sizes, order) for model.conv_kernel_size: the tokens are the grid's cells, row-major
        (order None). A subclass that orders its parts otherwise gives each cell's token index."""
        return self.grid, None

    @staticmethod
    def _legacy_keys(state_dict, prefix, *args) -> None:
        for old, new in LEGACY_KEYS.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)


def unpatchify(x: torch.Tensor, grid: tuple[int, ...], patch: tuple[int, ...], channels: int) -> torch.Tensor:
    """(B, prod(grid), prod(patch)·channels) -> (B, channels, *(grid·patch)), row-major tokens."""
    n = len(grid)
    # b (g0 g1 ..) (p0 p1 .. c) -> b c (g0 p0) (g1 p1) ..
    x = x.reshape(x.shape[0], *grid, *patch, channels)
    x = x.permute(0, 2 * n + 1, *(i for k in range(n) for i in (1 + k, 1 + n + k)))
    return x.reshape(x.shape[0], channels, *(a * b for a, b in zip(grid, patch)))


class PixelHead(nn.Module):
    """A convolutional head at full resolution after the patch readout (PatchUnembed's `head` > 0;
    0 = the official linear readout alone). Each token is also read out to `width` features per
    cell, un-patchified, and two k-wide convs (GELU between) map them to a correction that is added
    to the linear readout. It gives the per-cell output a path across patch borders: U-ViT (Bao et al. 2023) adds
    a 3x3 conv after its un-patchify for the same reason. Here it is wider than U-ViT's C -> C conv
    because a 1-channel image would leave that conv 10 weights. The last conv starts at zero, so an
    untrained head leaves the readout as it was. Measured on Fashion-MNIST at 60 CPU-minutes it
    costs more steps than it gives back (benchmarks/RESULTS.md §4d)."""

    def __init__(self, dim: int, channels: int, patch: tuple[int, ...], grid: tuple[int, ...],
                 width: int, kernel: int = 3):
        super().__init__()
        conv = _CONV[len(grid)]
        self.grid, self.patch_size, self.width = grid, patch, width
        self.proj = nn.Linear(dim, math.prod(patch) * width)
        self.conv1 = conv(width, width, kernel, padding=kernel // 2)
        self.conv2 = conv(width, channels, kernel, padding=kernel // 2)
        self.conv2.zero_init = True  # kept at zero by Denoiser's "official" re-init too
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, normed: torch.Tensor) -> torch.Tensor:
        h = unpatchify(self.proj(normed), self.grid, self.patch_size, self.width)
        return self.conv2(nn.functional.gelu(self.conv1(nn.functional.gelu(h))))


class PatchUnembed(nn.Module):
    """`head`: the width of a `PixelHead` after the linear readout (0 = none, as the official code)."""

    def __init__(self, channels: int, dim: int, patch: int | tuple[int, ...], grid: tuple[int, ...],
                 head: int = 0):
        super().__init__()
        self.grid, self.patch_size, self.channels = tuple(grid), _ntuple(patch, len(grid)), channels
        self.norm = layer_norm(dim)
        self.proj = nn.Linear(dim, math.prod(self.patch_size) * channels)
        self.head = PixelHead(dim, channels, self.patch_size, self.grid, head) if head else None

    def forward(self, tokens: torch.Tensor, context=None, state=None) -> torch.Tensor:
        normed = self.norm(tokens[:, :math.prod(self.grid)])
        x = unpatchify(self.proj(normed), self.grid, self.patch_size, self.channels)
        return x if self.head is None else x + self.head(normed)
