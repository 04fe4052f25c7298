"""The scikit-learn digits (no download) and the small classifier behind digits-FID.

Public through `rinkit.plugin` because two built-in plugins use them: the image plugin (its
`digits` dataset and the digits-FID metric) and the video plugin (moving digits, and the
moving-digits proxy that reads each frame's digit with this classifier). Here, neither plugin
imports the other, and switching the image plugin off leaves video's data and metric working.

  digits_arrays()       {"train", "test"}: (N, 8, 8) float32 in [-1, 1] and labels, a fixed
                        stratified 80/20 split
  digits_classifier()   a small CNN trained deterministically on the train split (~2 s on 2
                        cores, once per process); `.body` -> 64-d features, `.head` -> 10 logits
  to_digits(x)          any (B, C, H, W) image batch in [-1, 1] -> (B, 1, 8, 8), its input
  digits_features(x)    (B, 64) float64 penultimate features, the space digits-FID is measured in
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DIGITS_SPLIT_SEED = 0
FEATURES = 64


@functools.lru_cache(maxsize=1)
def digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0) * 2 - 1  # (N, 8, 8) in [-1, 1]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, stratify=d.target,
                                          random_state=DIGITS_SPLIT_SEED)
    return {"train": (xtr, ytr), "test": (xte, yte)}


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
def digits_features(samples: torch.Tensor) -> np.ndarray:
    net = digits_classifier()
    return torch.cat([net.body(b) for b in to_digits(samples).split(512)]).double().numpy()
