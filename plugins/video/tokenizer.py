"""Video tokenizer and detokenizer (docs/method.md §7).

Both are the engine's 3-D patch layer (rinkit.plugin.PatchEmbed / PatchUnembed).
Tokenizer: a Conv3d stem with kernel = stride = (time_patch, p, p) (a linear space-time patch
projection) -> flatten to T'·H'·W' tokens -> LayerNorm -> + positional embedding over the
(context slots + predicted slots, H', W') grid. As in the official `VideoTapeDenoiser`, the
given (clean) frames go through the same stem and are appended to the interface at their own,
earlier, time positions, so they are readable and writable like any interface token.
Each part is zero-padded at the end to a multiple of time_patch (TF 'SAME'): for 16 frames,
5 given, 2x4x4 patches on 64x64 that is (3 + 6) x 16 x 16 = 2304 tokens, as in the official
code (the paper quotes 2048 = 8 x 16 x 16, one joint clip).
Detokenizer: LayerNorm -> linear to time_patch·p·p·C -> un-patchify the predicted frames'
tokens only (they come first) -> crop the padding."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rinkit.plugin import PatchEmbed, PatchUnembed


class VideoTokenizer(PatchEmbed):
    """The engine's 3-D patch layer over (time, H, W); its positions cover the given and the
    predicted slots, of which each part reads its own."""

    def __init__(self, opts, dim: int):
        tp, p, (h, w) = opts.time_patch, opts.patch_size, opts.size
        slots_ctx, slots_pred = opts.slots
        k = opts.context_concat_frames if opts.context_concat else 0
        m = opts.context_window
        # + the last k given frames' channels, in the stem's own patch (m = 0) or in a wider window
        in_ch = opts.channels * (1 + (k if not m else 0))
        super().__init__(in_ch, dim, (tp, p, p), (slots_ctx + slots_pred, h // p, w // p), opts.pos_emb)
        self.tp, self.p, self.slots_ctx, self.slots_pred = tp, p, slots_ctx, slots_pred
        self.per_slot = (h // p) * (w // p)
        self.concat, self.concat_frames = opts.context_concat, k
        # the window stem: each token sees the given frames in (p + 2m)^2 pixels centred on its patch
        self.window = nn.Conv2d(opts.channels * k, dim, p + 2 * m, stride=p, padding=m, bias=False) if m else None

    @property
    def num_cond_tokens(self) -> int:
        """The given frames' tokens, appended last to the interface (the engine's write_context)."""
        return self.slots_ctx * self.per_slot

    @property
    def token_grid(self) -> tuple[tuple[int, ...], torch.Tensor]:
        """(sizes, order) for model.conv_kernel_size: the (given + predicted slots, H', W') grid in
        time order, whose first cells (the given frames) are the interface's last tokens."""
        n_ctx, n_pred = self.num_cond_tokens, self.slots_pred * self.per_slot
        return self.grid, torch.cat([torch.arange(n_pred, n_pred + n_ctx), torch.arange(n_pred)])

    def embed_frames(self, v: torch.Tensor, last: torch.Tensor | None = None,
                     extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, ceil(T/tp)·H'·W', D), time-major. `last` (B, 1, k·C, H, W), the
        last k given frames, is concatenated to every frame's channels (context_concat); `extra`
        (B, D, 1, H', W'), the window stem's features (context_window), is added to every slot's."""
        if last is not None:
            v = torch.cat([v, last.expand(-1, v.shape[1], -1, -1, -1)], dim=2)
        pad = -v.shape[1] % self.tp
        v = v.transpose(1, 2)  # B, C, T, H, W
        if pad:
            v = F.pad(v, (0, 0, 0, 0, 0, pad))
        return self.embed(v, extra)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        pos = self.pos()
        n_ctx = self.slots_ctx * self.per_slot
        if n_ctx and context is None:
            raise ValueError(f"this video model conditions on {self.slots_ctx * self.tp} given "
                             "frames but no context was passed")
        # the last k given frames as channels of one frame: (B, 1, k*C, H, W)
        last = context[:, -self.concat_frames:].flatten(1, 2)[:, None] if self.concat else None
        extra = None
        if self.window is not None:  # the window stem replaces the channel concat; computed once for both parts
            extra, last = self.window(last[:, 0])[:, :, None], None
        tokens = self.embed_frames(x, last, extra) + pos[n_ctx:]
        if n_ctx:
            tokens = torch.cat([tokens, self.embed_frames(context, last, extra) + pos[:n_ctx]], dim=1)
        return tokens, None


class VideoDetokenizer(PatchUnembed):
    def __init__(self, opts, dim: int):
        p, frames = opts.patch_size, opts.predicted_frames
        grid = (math.ceil(frames / opts.time_patch), opts.size[0] // p, opts.size[1] // p)
        super().__init__(opts.channels, dim, (opts.time_patch, p, p), grid)
        self.frames = frames

    def forward(self, tokens: torch.Tensor, context=None, state=None) -> torch.Tensor:
        # the given frames' tokens (after the predicted ones) are not read out
        x = super().forward(tokens).transpose(1, 2)  # B, C, T, H, W -> B, T, C, H, W
        return x[:, :self.frames]
