"""Image datasets of the built-in plugin.

`digits`: the 1,797 8x8 handwritten digits that ship inside scikit-learn (no download), 10
classes, split once into a stratified 80 % train / 20 % test split with a fixed seed. Pixels
0..16 map to [-1, 1]; other image sizes / channel counts are produced by resizing / repeating."""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

DIGITS_SPLIT_SEED = 0


class TensorImages(Dataset):
    """In-memory images (N, C, H, W) in [-1, 1] with integer labels; optional random h-flip."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, hflip: bool = False):
        self.images, self.labels, self.hflip = images.contiguous(), labels.long(), hflip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, int(self.labels[i])


@functools.lru_cache(maxsize=1)
def digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0) * 2 - 1  # (N, 8, 8) in [-1, 1]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, stratify=d.target,
                                          random_state=DIGITS_SPLIT_SEED)
    return {"train": (xtr, ytr), "test": (xte, yte)}


def fit_images(x: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> the configured channel count and size (antialiased bilinear)."""
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise ValueError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)
    return x.contiguous()


def digits(options, data_cfg, split: str = "train") -> TensorImages:
    x, y = digits_arrays()[split]
    images = fit_images(torch.from_numpy(x)[:, None], options.channels, options.size)
    return TensorImages(images, torch.from_numpy(y), hflip=data_cfg.hflip if split == "train" else False)
