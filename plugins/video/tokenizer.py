"""Video tokenizer and detokenizer (docs/method.md §7).

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
from einops import rearrange
from torch import nn

from rinkit.engine.rin import layer_norm
from rinkit_plugins.image.tokenizer import PositionalEmbedding


class VideoTokenizer(nn.Module):
    def __init__(self, opts, dim: int):
        super().__init__()
        self.tp, self.p = opts.time_patch, opts.patch_size
        h, w = opts.size
        self.slots_ctx, self.slots_pred = opts.slots
        self.per_slot = (h // self.p) * (w // self.p)
        self.concat = opts.context_concat
        in_ch = opts.channels * (2 if self.concat else 1)  # + the last given frame's channels
        self.stem = nn.Conv3d(in_ch, dim, (self.tp, self.p, self.p), stride=(self.tp, self.p, self.p))
        self.norm = layer_norm(dim)
        self.pos = PositionalEmbedding((self.slots_ctx + self.slots_pred, h // self.p, w // self.p), dim,
                                       opts.pos_emb)

    @property
    def num_cond_tokens(self) -> int:
        """The given frames' tokens, appended last to the interface (the engine's write_context)."""
        return self.slots_ctx * self.per_slot

    def embed(self, v: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, ceil(T/tp)·H'·W', D), time-major. `last` (B, 1, C, H, W), the
        last given frame, is concatenated to every frame's channels when context_concat is on."""
        if last is not None:
            v = torch.cat([v, last.expand_as(v)], dim=2)
        pad = -v.shape[1] % self.tp
        v = v.transpose(1, 2)  # B, C, T, H, W
        if pad:
            v = F.pad(v, (0, 0, 0, 0, 0, pad))
        return self.norm(self.stem(v).flatten(2).transpose(1, 2))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        pos = self.pos()
        n_ctx = self.slots_ctx * self.per_slot
        if n_ctx and context is None:
            raise ValueError(f"this video model conditions on {self.slots_ctx * self.tp} given "
                             "frames but no context was passed")
        last = context[:, -1:] if self.concat else None
        tokens = self.embed(x, last) + pos[n_ctx:]
        if n_ctx:
            tokens = torch.cat([tokens, self.embed(context, last) + pos[:n_ctx]], dim=1)
        return tokens


class VideoDetokenizer(nn.Module):
    def __init__(self, opts, dim: int):
        super().__init__()
        self.tp, self.p, self.c = opts.time_patch, opts.patch_size, opts.channels
        self.frames = opts.predicted_frames
        self.grid = (math.ceil(self.frames / self.tp), opts.size[0] // self.p, opts.size[1] // self.p)
        self.norm = layer_norm(dim)
        self.proj = nn.Linear(dim, self.tp * self.p * self.p * self.c)

    def forward(self, tokens: torch.Tensor, context=None) -> torch.Tensor:
        t, h, w = self.grid
        x = self.proj(self.norm(tokens[:, :t * h * w]))  # the given frames' tokens are not read out
        x = rearrange(x, "b (t h w) (pt p1 p2 c) -> b (t pt) c (h p1) (w p2)", t=t, h=h, w=w,
                      pt=self.tp, p1=self.p, p2=self.p, c=self.c)
        return x[:, :self.frames]
