"""FID / sFID statistics and reference files (the ADM reference-batch layout).

A reference .npz holds `mu`, `sigma` (pool3, 2048-d) and `mu_s`, `sigma_s` (sFID's spatial
features) and may hold `arr_0`, a uint8 NHWC image batch. This is the layout of OpenAI's ADM
reference batches (VIRTUAL_imagenet*_labeled.npz), so those files work as --ref unchanged, and
what `rinkit eval --make-ref` writes. As in ADM, FID and sFID are computed against the stored
statistics (fitted on the whole real set); the images in `arr_0` (at most 10k) serve only
precision and recall. `--make-ref` also stores their pool features (`pool`) to save recomputing,
the real images' shape (`image_shape`, H W C: samples of another resolution are refused) and,
where a protocol fixes one, the smallest sample count it accepts (`min_samples`).
"""
from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rinkit.errors import RinkitError
from rinkit.evaluate.frechet import frechet_distance, frechet_distance_to_samples, gaussian_stats, sqrt_psd


@dataclass
class Stats:
    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    images: np.ndarray | None = None  # real images for precision / recall
    pool: np.ndarray | None = None    # their pool features, when stored
    n: int | None = None
    image_shape: tuple[int, int, int] | None = None  # (H, W, C) of the real images, when known
    min_samples: int | None = None    # the protocol's smallest sample count, when it fixes one
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # covariance roots, k-NN radii

    def half(self, which: str = "pool"):
        """sqrt(sigma) (or sqrt(sigma_s) for "spatial"), computed once: a reference that scores
        many sample sets pays for its eigh once."""
        if which not in self.cache:
            self.cache[which] = sqrt_psd(self.sigma if which == "pool" else self.sigma_s)
        return self.cache[which]


def stats_from_features(feats: dict[str, np.ndarray]) -> Stats:
    mu, sigma = gaussian_stats(feats["pool"])
    mu_s, sigma_s = gaussian_stats(feats["spatial"]) if "spatial" in feats else (None, None)
    stats = Stats(mu, sigma, mu_s, sigma_s, n=len(feats["pool"]))
    stats.cache["features"] = feats  # small sample sets take the exact low-rank route in fid()
    return stats


def _frechet(a: Stats, b: Stats, which: str) -> float:
    """a (samples) vs b (reference), symmetric. Fewer samples than dimensions: the exact n x n
    form from a's features; otherwise b's covariance root, computed once per reference."""
    mu_a, sig_a, mu_b, sig_b = (a.mu, a.sigma, b.mu, b.sigma) if which == "pool" else \
        (a.mu_s, a.sigma_s, b.mu_s, b.sigma_s)
    feats = a.cache.get("features", {}).get(which)
    if feats is not None and len(feats) < len(mu_a):
        return frechet_distance_to_samples(mu_b, sig_b, feats)
    return frechet_distance(mu_b, sig_b, mu_a, sig_a, sigma1_half=b.half(which))


def fid(a: Stats, b: Stats) -> float:
    """FID of samples `a` against reference `b`."""
    return _frechet(a, b, "pool")


def sfid(a: Stats, b: Stats) -> float | None:
    if a.mu_s is None or b.mu_s is None:
        return None
    return _frechet(a, b, "spatial")


def save_ref(path: str | Path, stats: Stats) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"mu": stats.mu, "sigma": stats.sigma}
    if stats.mu_s is not None:
        arrays.update(mu_s=stats.mu_s, sigma_s=stats.sigma_s)
    if stats.images is not None:
        arrays["arr_0"] = stats.images
    if stats.pool is not None:
        arrays["pool"] = stats.pool.astype(np.float32)
    if stats.n is not None:
        arrays["n"] = np.int64(stats.n)
    if stats.image_shape is not None:
        arrays["image_shape"] = np.asarray(stats.image_shape, np.int64)
    if stats.min_samples is not None:
        arrays["min_samples"] = np.int64(stats.min_samples)
    np.savez(path, **arrays)
    return path


def load_ref(path: str | Path) -> Stats | None:
    """A reference .npz with statistics -> Stats; None if it holds only images (arr_0)."""
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):  # an .npy of images
            return None
        if "mu" not in data.files:
            if "arr_0" in data.files:
                return None
            raise RinkitError(f"{path}: neither statistics (mu, sigma) nor images (arr_0) in it")
        if "sigma" not in data.files:
            raise RinkitError(f"{path}: has mu but no sigma")
        arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        why = "object arrays are pickles and are not loaded" if "allow_pickle" in str(e) else str(e).splitlines()[0]
        raise RinkitError(f"cannot read {path}: {why or type(e).__name__}") from None
    get = arrays.get
    mu, sigma = arrays["mu"], arrays["sigma"]
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise RinkitError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
    n, shape, least = get("n"), get("image_shape"), get("min_samples")
    images = get("arr_0")
    if shape is None and images is not None and images.ndim in (3, 4):  # ADM batches: from arr_0
        shape = (*images.shape[1:3], images.shape[3] if images.ndim == 4 else 1)
    return Stats(mu, sigma, get("mu_s"), get("sigma_s"), images, get("pool"),
                 int(n) if n is not None else None, tuple(int(v) for v in shape) if shape is not None else None,
                 int(least) if least is not None else None)
