"""Inception Score (Salimans et al. 2016) from the classifier's logits.

As in the original TF code and torch-fidelity: softmax over the 1008 logits without the final
bias, the samples cut into 10 splits, exp(E_x KL(p(y|x) || p(y))) per split, mean and std."""
from __future__ import annotations

import numpy as np


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(f"need (N >= {splits}, classes) logits, got shape {logits.shape}")
    z = logits - logits.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    scores = []
    for part in np.array_split(log_p, splits):
        log_py = np.log(np.exp(part).mean(0))
        kl = (np.exp(part) * (part - log_py)).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
