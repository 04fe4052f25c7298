"""Spectrogram tokenizer / detokenizer: (frequency x time) patches with positions on both axes,
the engine's 2-D patch layer.

A log-mel spectrogram is not an image: moving a pattern along time keeps its meaning, moving it
along frequency changes the pitch. The position code therefore names both axes separately:
  sincos      fixed 2-D sin-cos, half the channels for the mel-patch index, half for the frame index
  factorized  a learned code per frequency row plus a learned code per time column (AST-style)
  sincos+factorized  the fixed code plus a zero-initialised factorised learned residual (default)
Tokenizer: linear patch projection (conv, kernel = stride = patch) -> LayerNorm -> + positions.
Detokenizer: LayerNorm -> linear to the patch's values -> un-patchify."""
from __future__ import annotations

from rinkit.plugin import PatchEmbed, PatchUnembed


class SpectrogramTokenizer(PatchEmbed):
    def __init__(self, n_mels: int, frames: int, patch: tuple[int, int], dim: int, pos_emb: str):
        # integer grid indices (no max_coord): a shift in time means the same at any clip length
        super().__init__(1, dim, patch, (n_mels // patch[0], frames // patch[1]), pos_emb,
                         pos_axes=("freq", "time"))


class SpectrogramDetokenizer(PatchUnembed):
    def __init__(self, n_mels: int, frames: int, patch: tuple[int, int], dim: int):
        super().__init__(1, dim, patch, (n_mels // patch[0], frames // patch[1]))
