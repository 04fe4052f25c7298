"""The n-dimensional patch layer pair shared by the grid modalities (image, video, spectrogram,
voxels): ViT's patch embedding and its readout, for 1-D, 2-D and 3-D grids.

`PatchEmbed`:   (B, C, *size) -> conv with kernel = stride = patch (a linear patch projection)
                -> flatten row-major to prod(grid) tokens -> LayerNorm -> + positions.
`PatchUnembed`: (B, N, D) -> LayerNorm -> linear to prod(patch)·C per token -> un-patchify to
                (B, C, *size); only the first prod(grid) tokens are read out (extra tokens, e.g.
                conditioning appended by the tokenizer, are not).
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


class PatchUnembed(nn.Module):
    def __init__(self, channels: int, dim: int, patch: int | tuple[int, ...], grid: tuple[int, ...]):
        super().__init__()
        self.grid, self.patch_size, self.channels = tuple(grid), _ntuple(patch, len(grid)), channels
        self.norm = layer_norm(dim)
        self.proj = nn.Linear(dim, math.prod(self.patch_size) * channels)

    def forward(self, tokens: torch.Tensor, context=None, state=None) -> torch.Tensor:
        g, p, n = self.grid, self.patch_size, len(self.grid)
        x = self.proj(self.norm(tokens[:, :math.prod(g)]))
        # b (g0 g1 ..) (p0 p1 .. c) -> b c (g0 p0) (g1 p1) ..
        x = x.reshape(x.shape[0], *g, *p, self.channels)
        x = x.permute(0, 2 * n + 1, *(i for k in range(n) for i in (1 + k, 1 + n + k)))
        return x.reshape(x.shape[0], self.channels, *(a * b for a, b in zip(g, p)))
