"""Fréchet distance between Gaussians fitted to feature sets (the FID formula)."""
from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need a (N >= 2, D) feature matrix, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def sqrt_psd(sigma) -> "torch.Tensor":
    """The symmetric square root of a PSD matrix (float64 torch tensor), by eigh."""
    import torch
    s = torch.from_numpy(np.atleast_2d(np.asarray(sigma, np.float64)))
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2, sigma1_half=None) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2).

    tr((S1 S2)^1/2) is computed as the sum of square roots of the eigenvalues of the symmetric
    PSD matrix S1^1/2 S2 S1^1/2, which has the same spectrum as S1 S2 and avoids the complex
    round-off of a general matrix square root. `sigma1_half` (= sqrt_psd(sigma1)) may be passed
    in: a reference compared with many sample sets pays for its eigh once."""
    import torch  # its float64 eigh is ~3x faster than numpy's on 2048-d covariances
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1 = torch.from_numpy(np.atleast_2d(np.asarray(sigma1, np.float64)))
    s2 = torch.from_numpy(np.atleast_2d(np.asarray(sigma2, np.float64)))
    s1_half = sqrt_psd(sigma1) if sigma1_half is None else sigma1_half
    m = s1_half @ s2 @ s1_half
    tr_covmean = float(torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum())
    diff = mu1 - mu2
    return float(max(diff @ diff + float(torch.trace(s1) + torch.trace(s2)) - 2 * tr_covmean, 0.0))


def frechet_distance_to_samples(mu1, sigma1, features2) -> float:
    """The same distance between (mu1, sigma1) and the Gaussian fitted to n2 feature vectors,
    exact and cheap when n2 < d: with S2 = A^T A (A = centred features / sqrt(n2 - 1)),
    tr((S1 S2)^1/2) = sum of the square roots of the eigenvalues of the n2 x n2 PSD matrix
    A S1 A^T, which shares S1 S2's non-zero spectrum. No d x d eigendecomposition."""
    import torch
    f = torch.from_numpy(np.asarray(features2, np.float64))
    n = len(f)
    mu2 = f.mean(0)
    a = (f - mu2) / np.sqrt(n - 1)
    s1 = torch.from_numpy(np.atleast_2d(np.asarray(sigma1, np.float64)))
    m = a @ s1 @ a.T
    tr_covmean = float(torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum())
    diff = np.asarray(mu1, np.float64) - mu2.numpy()
    return float(max(diff @ diff + float(torch.trace(s1)) + float((a * a).sum()) - 2 * tr_covmean, 0.0))


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
