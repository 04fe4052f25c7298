"""Improved precision and recall (Kynkäänniemi et al. 2019), k = 3 as in the ADM evaluator.

Each feature set defines a manifold: the union of balls around its points with radius the
distance to the point's k-th nearest neighbour in the same set. Precision is the fraction of
generated points inside the real manifold, recall the fraction of real points inside the
generated one. Distances are computed in blocks so 50k x 10k sets fit in memory."""
from __future__ import annotations

import numpy as np
import torch


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a.double(), b.double())  # float64: ties at the radius stay ties


def knn_radii(feats: torch.Tensor, k: int = 3, block: int = 2048) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour in the same set (self excluded)."""
    out = []
    for i in range(0, len(feats), block):
        d = _dist(feats[i:i + block], feats)
        out.append(d.kthvalue(k + 1, dim=1).values)  # the 1st smallest is the point itself
    return torch.cat(out)


def coverage_of(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block: int = 2048) -> float:
    """Fraction of `points` inside at least one ball (centres, radii)."""
    inside = 0
    for i in range(0, len(points), block):
        d = _dist(points[i:i + block], centres)
        inside += int((d <= radii[None]).any(1).sum())
    return inside / len(points)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     real_radii: torch.Tensor | None = None) -> tuple[float, float]:
    """`real_radii` = knn_radii(real, k) may be passed in: a reference compared with many sample
    sets computes its radii (the costly real x real distances) once."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float32)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float32)
    if len(r) <= k or len(f) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points per set")
    precision = coverage_of(f, r, knn_radii(r, k) if real_radii is None else real_radii)
    recall = coverage_of(r, f, knn_radii(f, k))
    return precision, recall
