"""Token view for `rinkit routing`: the given frames then the predicted frames in a row, each
under the heatmap of its space-time patches (frames of one temporal patch share its map)."""
from __future__ import annotations

import numpy as np


def token_view(values, x, options, state=None, context=None) -> np.ndarray:
    from rinkit.plugin import gray, patch_heat
    p, tp = options.patch_size, options.time_patch
    h, w = options.size
    gh, gw = h // p, w // p
    per_slot = gh * gw
    slots_ctx, slots_pred = options.slots
    parts = []  # (frames (B, T, C, H, W), first token of the part)
    if context is not None and options.context_frames:
        parts.append((context, slots_pred * per_slot))  # the given frames' tokens come last
    parts.append((x, 0))
    frames = []
    for clip, first in parts:
        for t in range(clip.shape[1]):
            start = first + (t // tp) * per_slot
            frames.append(patch_heat(values[:, start:start + per_slot], gray(clip[:, t]), (gh, gw), (p, p)))
    sep = np.full((frames[0].shape[0], h, 1, 3), 255, np.uint8)
    return np.concatenate([f for fr in frames for f in (fr, sep)][:-1], axis=2)
