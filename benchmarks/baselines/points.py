"""The point-cloud baseline: a PVD-style denoiser (Zhou, Du & Wu, ICCV 2021, "3D Shape Generation and
Completion through Point-Voxel Diffusion"), i.e. PVCNN (Liu et al., NeurIPS 2019) in PointNet++'s
set-abstraction / feature-propagation layout, under rinkit's denoiser contract
`model(x_t, gamma, labels, prev_latents, context) -> (prediction, None)`.

Why this one: PVD is the conventional point-cloud diffusion network (LION and most later point
diffusion papers reuse its PVCNN denoiser, and compare with it); the alternatives (a plain
PointNet++, a point transformer as in Point-E) are either weaker on surfaces or a transformer,
which is what RIN already is. The parts, as in PVD's `PVCNN2Base`:

* PVConv: features averaged into an R^3 voxel grid of the cloud's normalised coordinates (centred,
  scaled by twice its largest radius, as PVCNN's `Voxelization(normalize=True)`), two 3x3x3
  convolutions (GroupNorm + Swish), trilinear devoxelisation back to the points, plus a
  point-wise shared MLP branch; the two branches are summed.
* Set abstraction (SA): farthest-point-sampled centres, the k nearest points of each (kNN
  grouping in place of PointNet++'s ball query: scale-free, which matters on noisy inputs whose
  scale changes with the noise level), a shared MLP on [neighbour features, offset to centre],
  max-pooled.
* Feature propagation (FP): 3-nearest-neighbour inverse-distance interpolation from the coarse
  level, concatenated with the skip features of the finer level, a shared MLP, then PVConv.
* Noise level and class: a sinusoidal embedding of 1000 * gamma (what RIN's time token and the
  U-Net baselines see) through an MLP, plus a class embedding (one extra row = null class);
  concatenated to every point's features at the input of each SA stage (PVD's `temb`).
* Head: shared MLP -> 3 values per point (the diffusion target).

Departures from PVD, for a 256-point cloud on a CPU budget: two SA levels (64 and 16 centres)
instead of four, voxel resolutions 8 and 4 instead of 32/16/8, one PVConv per stage, no voxel
self-attention and no dropout. `width` sets the channels (width, 2x, 4x per level); the default
is sized near the points RIN's forward FLOPs."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rinkit_plugins.points.tokenizer import farthest_point_sample, gather, sqdist


def group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class SharedMLP(nn.Sequential):
    """Point-wise Linear + GroupNorm + Swish layers on (B, C, ...) features (PointNet's shared MLP)."""

    def __init__(self, channels: list[int], dim: int = 1):
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        layers = []
        for a, b in zip(channels[:-1], channels[1:]):
            layers += [conv(a, b, 1), group_norm(b), nn.SiLU()]
        super().__init__(*layers)


def voxel_coords(coords: torch.Tensor, res: int) -> torch.Tensor:
    """(B, 3, N) -> (B, 3, N) continuous voxel coordinates in [0, res - 1]: centred on the mean,
    scaled by twice the largest radius (PVCNN's normalised voxelisation)."""
    c = coords - coords.mean(2, keepdim=True)
    c = c / (c.norm(dim=1, keepdim=True).amax(2, keepdim=True) * 2 + 1e-6) + 0.5
    return (c * res).clamp(0, res - 1)


def voxelize(features: torch.Tensor, vcoords: torch.Tensor, res: int) -> torch.Tensor:
    """Average the (B, C, N) features of the points falling into each voxel -> (B, C, R, R, R)."""
    b, c, n = features.shape
    idx = vcoords.round().long()
    flat = (idx[:, 0] * res + idx[:, 1]) * res + idx[:, 2]                          # (B, N)
    grid = features.new_zeros(b, c, res ** 3).scatter_add_(2, flat[:, None].expand(-1, c, -1), features)
    count = features.new_zeros(b, 1, res ** 3).scatter_add_(2, flat[:, None], features.new_ones(b, 1, n))
    return (grid / count.clamp_min(1)).view(b, c, res, res, res)


def devoxelize(grid: torch.Tensor, vcoords: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of (B, C, R, R, R) at continuous voxel coordinates -> (B, C, N)."""
    res = grid.shape[-1]
    # grid_sample's last axis is (x, y, z) = (W, H, D): ours index D by coordinate 0, so reverse
    g = (vcoords / (res - 1) * 2 - 1).flip(1).transpose(1, 2)[:, :, None, None]   # (B, N, 1, 1, 3)
    return F.grid_sample(grid, g, mode="bilinear", align_corners=True)[:, :, :, 0, 0]


class PVConv(nn.Module):
    def __init__(self, cin: int, cout: int, res: int):
        super().__init__()
        self.res = res
        self.voxel = nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), group_norm(cout), nn.SiLU(),
                                   nn.Conv3d(cout, cout, 3, padding=1), group_norm(cout), nn.SiLU())
        self.point = SharedMLP([cin, cout])

    def forward(self, features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        v = voxel_coords(coords, self.res)
        return devoxelize(self.voxel(voxelize(features, v, self.res)), v) + self.point(features)


class SetAbstraction(nn.Module):
    def __init__(self, centres: int, k: int, cin: int, channels: list[int]):
        super().__init__()
        self.m, self.k = centres, k
        self.mlp = SharedMLP([cin + 3, *channels], dim=2)

    def forward(self, features: torch.Tensor, coords: torch.Tensor):
        """features (B, C, N), coords (B, 3, N) -> (B, C', M), centres (B, 3, M)."""
        xyz = coords.transpose(1, 2)                                                  # (B, N, 3)
        centres = gather(xyz, farthest_point_sample(xyz.detach(), self.m))          # (B, M, 3)
        knn = sqdist(centres.detach(), xyz.detach()).topk(min(self.k, xyz.shape[1]), dim=-1,
                                                          largest=False).indices   # (B, M, k)
        offsets = gather(xyz, knn) - centres[:, :, None]                            # (B, M, k, 3)
        grouped = gather(features.transpose(1, 2), knn)                             # (B, M, k, C)
        h = torch.cat([grouped, offsets], -1).permute(0, 3, 1, 2)                  # (B, C+3, M, k)
        return self.mlp(h).amax(-1), centres.transpose(1, 2)


class FeaturePropagation(nn.Module):
    def __init__(self, cin: int, channels: list[int]):
        super().__init__()
        self.mlp = SharedMLP([cin, *channels])

    def forward(self, coarse: torch.Tensor, coarse_xyz: torch.Tensor, skip: torch.Tensor,
                xyz: torch.Tensor) -> torch.Tensor:
        d2, idx = sqdist(xyz.transpose(1, 2), coarse_xyz.transpose(1, 2)).topk(3, dim=-1, largest=False)
        w = 1.0 / (d2 + 1e-8)
        w = w / w.sum(-1, keepdim=True)                                             # (B, N, 3)
        up = (gather(coarse.transpose(1, 2), idx) * w[..., None]).sum(2).transpose(1, 2)
        return self.mlp(torch.cat([up, skip], 1))


class NoiseEmbedding(nn.Module):
    """Sinusoidal embedding of 1000 * gamma -> MLP, plus a class embedding (last row = null)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.classes = nn.Embedding(num_classes + 1, dim) if num_classes else None
        self.num_classes = num_classes

    def forward(self, gamma: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=gamma.device) / half)
        arg = 1000.0 * gamma.float()[:, None] * freqs
        emb = self.mlp(torch.cat([arg.sin(), arg.cos()], -1))
        if self.classes is not None:
            if labels is None:
                labels = torch.full_like(gamma, self.num_classes, dtype=torch.long)
            emb = emb + self.classes(labels)
        return emb


class PVCNNDenoiser(nn.Module):
    """PVD-style PVCNN++ denoiser for (B, N, 3) clouds; `width` scales every channel count."""

    def __init__(self, num_classes: int = 0, width: int = 32, temb: int = 32, centres=(64, 16), k: int = 16,
                 res=(8, 4)):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.embed = NoiseEmbedding(temb, num_classes)
        self.conv1 = PVConv(3 + temb, c1, res[0])                       # full resolution
        self.sa1 = SetAbstraction(centres[0], k, c1 + temb, [c1, c2])    # -> centres[0] points
        self.conv2 = PVConv(c2, c2, res[1])
        self.sa2 = SetAbstraction(centres[1], k, c2 + temb, [c2, c3])    # -> centres[1] points
        self.global_mlp = SharedMLP([c3, c3])
        self.fp2 = FeaturePropagation(c3 + c2, [c2])                     # back to centres[0]
        self.conv3 = PVConv(c2, c2, res[1])
        self.fp1 = FeaturePropagation(c2 + c1, [c1])                     # back to every point
        self.conv4 = PVConv(c1, c1, res[0])
        self.head = nn.Sequential(SharedMLP([c1, c1]), nn.Conv1d(c1, 3, 1))

    def forward(self, x_t, gamma, labels=None, prev_latents=None, context=None):
        coords = x_t.transpose(1, 2)                                                 # (B, 3, N)
        emb = self.embed(gamma, labels)[:, :, None]                                   # (B, T, 1)
        with_emb = lambda f: torch.cat([f, emb.expand(-1, -1, f.shape[2])], 1)  # noqa: E731
        f1 = self.conv1(with_emb(coords), coords)
        f2, xyz2 = self.sa1(with_emb(f1), coords)
        f2 = self.conv2(f2, xyz2)
        f3, xyz3 = self.sa2(with_emb(f2), xyz2)
        f3 = self.global_mlp(f3)
        u2 = self.conv3(self.fp2(f3, xyz3, f2, xyz2), xyz2)
        u1 = self.conv4(self.fp1(u2, xyz2, f1, coords), coords)
        return self.head(u1).transpose(1, 2), None


def pvcnn_entry(cfg, width: int = 32):
    """An `Entry` (benchmarks/models.py) for the PVD-style baseline of a points config: the same
    objective, schedules and label dropout as the config's RIN, minus self-conditioning (it has no
    latents to carry)."""
    from benchmarks.models import Entry, without_self_cond
    from rinkit.build import build_diffusion, sample_shape
    if cfg.modality != "points":
        raise ValueError(f"the PVCNN baseline is for point clouds; config {cfg.name!r} is {cfg.modality}")
    d = without_self_cond(build_diffusion(cfg))
    k = cfg.model.num_classes
    return Entry(f"PVCNN (PVD-style, width {width})", "pvcnn", lambda: PVCNNDenoiser(k, width), d,
                 sample_shape(cfg), k, note="PVD's PVCNN2 layout scaled to 256 points")
