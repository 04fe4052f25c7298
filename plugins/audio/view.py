"""Token view for `rinkit routing`: a per-patch value as a heatmap over the log-mel spectrogram
(low frequencies at the bottom, time to the right)."""
from __future__ import annotations

import numpy as np


def token_view(values, x, options, state=None, context=None) -> np.ndarray:
    from rinkit.plugin import gray, patch_heat
    pm, pf = options.patch
    heat = patch_heat(values, gray(x), (options.n_mels // pm, options.frames // pf), (pm, pf))
    return np.ascontiguousarray(heat[:, ::-1])  # mel bin 0 at the bottom, as the writer's PNG
