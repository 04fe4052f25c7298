"""digits-FID: a quality number that needs no download.

A small CNN is trained deterministically on the digits train split; the Fréchet distance of its
penultimate (64-d) features between generated samples and the held-out test split is the
"digits-FID". Reference points (README): train split vs test split is the floor, pure noise the
ceiling. For class-conditional samples the classifier's accuracy on the intended labels is
reported too ("digits-acc")."""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rinkit.plugin import frechet_distance, gaussian_stats
from rinkit_plugins.image.data import digits_arrays

FEATURES = 64


class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(),  # 4x4
            nn.Flatten(), nn.Linear(64 * 16, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, 10)

    def forward(self, x):
        return self.head(self.body(x))


@functools.lru_cache(maxsize=1)
@torch.enable_grad()  # first use is often inside a no_grad sampling/eval context
def digits_classifier(seed: int = 0, epochs: int = 30) -> DigitsNet:
    """Trained once per process (~2 s on 2 cores), deterministically from `seed`."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = DigitsNet()
    x, y = digits_arrays()["train"]
    x, y = torch.from_numpy(x)[:, None], torch.from_numpy(y).long()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            # one-pixel random shifts make the features care about shape, not exact position
            xb = torch.roll(x[idx], shifts=tuple(torch.randint(-1, 2, (2,), generator=g).tolist()), dims=(2, 3))
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval().requires_grad_(False)


def to_digits(samples: torch.Tensor) -> torch.Tensor:
    """Any (B, C, H, W) image batch in [-1, 1] -> (B, 1, 8, 8) as the classifier expects."""
    x = samples.detach().float().cpu().clamp(-1, 1)
    if x.shape[1] != 1:
        x = x.mean(1, keepdim=True)
    if x.shape[-2:] != (8, 8):
        x = F.interpolate(x, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    return x


@torch.no_grad()
def features(samples: torch.Tensor) -> np.ndarray:
    net = digits_classifier()
    return torch.cat([net.body(b) for b in to_digits(samples).split(512)]).double().numpy()


@torch.no_grad()
def accuracy(samples: torch.Tensor, labels: torch.Tensor) -> float:
    logits = digits_classifier()(to_digits(samples))
    return float((logits.argmax(1) == labels.cpu()).float().mean())


@functools.lru_cache(maxsize=1)
def reference_stats():
    x, _ = digits_arrays()["test"]
    return gaussian_stats(features(torch.from_numpy(x)[:, None]))


def digits_fid(samples: torch.Tensor) -> float:
    return frechet_distance(*gaussian_stats(features(samples)), *reference_stats())


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
