"""Token view for `rinkit routing`: a per-patch value as a heatmap over the image."""
from __future__ import annotations

import numpy as np


def token_view(values, x, options, state=None, context=None) -> np.ndarray:
    from rinkit.plugin import gray, patch_heat
    p = options.patch_size
    h, w = options.size
    return patch_heat(values, gray(x), (h // p, w // p), (p, p))
