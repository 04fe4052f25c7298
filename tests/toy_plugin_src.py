"""A third-party modality written as a user would: 1-D signals (B, 1, L), in its own module.
The tests install it as a package with an entry point in a temporary folder."""
import math
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from rinkit.registry import DatasetSpec, Modality, hookimpl


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    length: int = 32
    patch: int = 4


class Tok(nn.Module):
    def __init__(self, o, dim):
        super().__init__()
        self.o = o
        self.proj = nn.Linear(o.patch, dim)
        self.pos = nn.Parameter(torch.randn(o.length // o.patch, dim) * 0.02)

    def forward(self, x, context=None):
        return self.proj(x.reshape(x.shape[0], -1, self.o.patch)) + self.pos, None


class Detok(nn.Module):
    def __init__(self, o, dim):
        super().__init__()
        self.proj = nn.Linear(dim, o.patch)

    def forward(self, tokens, context=None, state=None):
        return self.proj(tokens).reshape(tokens.shape[0], 1, -1)


class Waves(torch.utils.data.Dataset):
    def __init__(self, o, n=256, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        phase = torch.rand(n, 1, generator=g) * 2 * math.pi
        t = torch.arange(o.length) / o.length
        freq = 1.0 + 2.0 * self.labels[:, None]
        self.x = torch.sin(2 * math.pi * freq * t + phase)[:, None] * 0.9

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i])


def write(samples, labels, path, options=None, context=None):
    path = Path(path).with_suffix(".npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, samples.numpy())
    return [path]


@hookimpl
def rinkit_modalities():
    return [Modality("toy", "1-D test signals", ToyOptions, Tok, Detok, lambda o: (1, o.length), write)]


@hookimpl
def rinkit_datasets():
    return [DatasetSpec("toy", "waves", "sine waves, 2 classes", lambda o, d, split="train": Waves(o), 2)]
