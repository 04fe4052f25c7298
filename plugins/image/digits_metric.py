"""digits-FID: a quality number that needs no download.

A small CNN (rinkit.plugin.digits_classifier, shared with the video plugin's moving-digits
proxy) is trained deterministically on the digits train split; the Fréchet distance of its
penultimate (64-d) features between generated samples and the held-out test split is the
"digits-FID". Reference points (README): train split vs test split is the floor, pure noise the
ceiling. For class-conditional samples the classifier's accuracy on the intended labels is
reported too ("digits-acc")."""
from __future__ import annotations

import functools

import torch

from rinkit.plugin import digits_arrays, digits_classifier, digits_features, frechet_distance, gaussian_stats, to_digits


@torch.no_grad()
def accuracy(samples: torch.Tensor, labels: torch.Tensor) -> float:
    logits = digits_classifier()(to_digits(samples))
    return float((logits.argmax(1) == labels.cpu()).float().mean())


@functools.lru_cache(maxsize=1)
def reference_stats():
    x, _ = digits_arrays()["test"]
    return gaussian_stats(digits_features(torch.from_numpy(x)[:, None]))


def digits_fid(samples: torch.Tensor) -> float:
    return frechet_distance(*gaussian_stats(digits_features(samples)), *reference_stats())


class DigitsMetric:
    """callable(samples, labels) -> {"digits_fid", "digits_acc"}; compares with the test split."""

    name = "digits_fid"

    def __call__(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        out = {"digits_fid": digits_fid(samples)}
        if labels is not None and (labels < 10).all():
            out["digits_acc"] = accuracy(samples, labels)
        return out

    @staticmethod
    def reference_points(n: int | None = None, seed: int = 0) -> dict[str, float]:
        """Reference points for the README table, at the same sample count n as the model's
        (the Fréchet distance of finite sets is biased upward, more so for small n): the floor
        (n train-split images vs the test split) and pure noise (n Gaussian images, clipped)."""
        xtr, _ = digits_arrays()["train"]
        train = torch.from_numpy(xtr)[:, None]
        g = torch.Generator().manual_seed(seed)
        n = min(n or len(train), len(train))
        subset = train[torch.randperm(len(train), generator=g)[:n]]
        noise = torch.randn(n, 1, 8, 8, generator=g).clamp(-1, 1)
        return {"train_vs_test": digits_fid(subset), "noise": digits_fid(noise)}


if __name__ == "__main__":  # python -m rinkit_plugins.image.digits_metric [N]: the README's reference rows
    import sys
    n = int(sys.argv[1]) if len(sys.argv) > 1 else None
    for k, v in DigitsMetric.reference_points(n).items():
        print(f"{k}: {v:.2f}")
