"""Image tokenizer and detokenizer (docs/method.md §2): the engine's 2-D patch layer.

Tokenizer: patch embedding (conv with kernel = stride = patch, i.e. a linear patch projection)
-> flatten to (H/p)(W/p) tokens -> LayerNorm -> + positional embedding (learned by default;
fixed 2-D sin-cos, or sin-cos plus a zero-initialised learned residual).
Detokenizer: LayerNorm -> linear to p*p*C -> unpatchify (+ optionally a conv head at full
resolution, `head_width`)."""
from __future__ import annotations

from rinkit.plugin import OFFICIAL_MAX_COORD, PatchEmbed, PatchUnembed


class ImageTokenizer(PatchEmbed):
    def __init__(self, channels: int, image_size: tuple[int, int], patch_size: int, dim: int,
                 pos_emb: str = "learned", stem_norm: bool = True):
        # sin-cos coordinates scaled to [0, 1000] per axis, as the official image denoiser
        super().__init__(channels, dim, patch_size, (image_size[0] // patch_size, image_size[1] // patch_size),
                         pos_emb, max_coord=OFFICIAL_MAX_COORD, norm=stem_norm)


class ImageDetokenizer(PatchUnembed):
    def __init__(self, channels: int, image_size: tuple[int, int], patch_size: int, dim: int, head: int = 0):
        super().__init__(channels, dim, patch_size, (image_size[0] // patch_size, image_size[1] // patch_size),
                         head)
