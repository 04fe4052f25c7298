"""Tokenizers for 3-D data.

Point clouds (B, N, 3) enter the engine with no order-dependent positions, so the whole denoiser
is permutation-equivariant over points (tests/test_points.py checks it). Two tokenizers:
  * `PointTokenizer` (tokens: points, the default): one interface token per point, its position
    by content (Fourier features -> MLP), optionally plus an EdgeConv feature of its k nearest
    neighbours; the detokenizer maps token i back to point i. RIN's interface is then the point
    set itself and the latents hold the shape, as in PointInfinity (Huang et al., CVPR 2024).
  * `PointGroupTokenizer` (tokens: groups): fewer tokens for large clouds. G group centres by
    farthest-point sampling (Point-BERT / Point-MAE), started from the point farthest from the
    centroid rather than from index 0, so the choice ignores the input order; each group = the
    k nearest points of its centre, embedded by a shared PointNet (MLP, max-pool) of the
    offsets, plus the centre's own coordinates (Fourier features -> MLP) as its position. The
    tokenizer hands (points, centres) to the detokenizer as its state (the `(tokens, state)`
    contract of rinkit.plugin.Modality; the other tokenizers' state is None): each point is decoded from the inverse-distance-weighted mix of
    its 3 nearest group tokens (PointNet++ feature propagation) and its own coordinates.
Every step treats points identically, so permuting the input permutes the output the same way.

Voxel grids (B, 1, D, H, W): 3-D patches (conv, kernel = stride = patch) with 3-D sin-cos
positions (+ a learned residual): the engine's patch layer (rinkit.plugin.PatchEmbed), the
video/image recipe in three spatial axes."""
from __future__ import annotations

import math

import torch
from torch import nn

from rinkit.plugin import PatchEmbed, PatchUnembed, layer_norm


def sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, N, 3), (B, M, 3) -> (B, N, M) squared distances, by explicit differences: every entry
    is computed the same way whatever the order of the points (exact equivariance)."""
    return ((a[:, :, None] - b[:, None]) ** 2).sum(-1)


@torch.no_grad()
def farthest_point_sample(x: torch.Tensor, m: int) -> torch.Tensor:
    """(B, N, 3) -> (B, m) indices; order-free start: the point farthest from the centroid."""
    b, n, _ = x.shape
    rows = torch.arange(b, device=x.device)
    cur = ((x - x.mean(1, keepdim=True)) ** 2).sum(-1).argmax(1)
    dist = torch.full((b, n), float("inf"), device=x.device, dtype=x.dtype)
    idx = torch.empty(b, m, dtype=torch.long, device=x.device)
    for j in range(m):
        idx[:, j] = cur
        dist = torch.minimum(dist, ((x - x[rows, cur][:, None]) ** 2).sum(-1))
        cur = dist.argmax(1)
    return idx


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), idx (B, ...) -> (B, ..., C)."""
    flat = idx.reshape(idx.shape[0], -1)
    out = torch.gather(x, 1, flat[..., None].expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])


class Fourier(nn.Module):
    """xyz -> [xyz, sin(2^k pi u.xyz), cos(2^k pi u.xyz)] for k < n_freqs, u over a set of unit
    directions: the coordinate axes (NeRF-style, `directions` = 0), or `directions` fixed random
    ones per frequency (seeded, so every model draws the same; Tancik et al. 2020's random
    Fourier features with NeRF's frequency ladder). The shapes come in every pose, and a face
    whose normal is off the axes is a sum of products of axis-aligned features, but close to a
    single feature along a nearby random direction."""

    def __init__(self, n_freqs: int, directions: int = 0):
        super().__init__()
        freqs = (2.0 ** torch.arange(n_freqs)) * math.pi
        if directions:
            u = torch.randn(n_freqs, directions, 3, generator=torch.Generator().manual_seed(0))
            proj = (u / u.norm(dim=-1, keepdim=True) * freqs[:, None, None]).flatten(0, 1).T  # (3, n * directions)
        else:  # column c * n + k = axis c at frequency k: the order trained weights were saved with
            proj = (torch.eye(3)[:, :, None] * freqs).flatten(1)
        self.register_buffer("proj", proj.contiguous(), persistent=False)
        self.dim = 3 + 2 * self.proj.shape[1]

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        arg = p @ self.proj
        return torch.cat([p, arg.sin(), arg.cos()], dim=-1)


class PointGroupTokenizer(nn.Module):
    def __init__(self, num_groups: int, group_size: int, dim: int, n_freqs: int = 6, directions: int = 0):
        super().__init__()
        self.g, self.k = num_groups, group_size
        self.fourier = Fourier(n_freqs, directions)
        self.local = nn.Sequential(nn.Linear(self.fourier.dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.centre = nn.Sequential(nn.Linear(self.fourier.dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm = layer_norm(dim)

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        centres = gather(x, farthest_point_sample(x.detach(), self.g))           # (B, G, 3)
        knn = sqdist(centres.detach(), x.detach()).topk(self.k, dim=-1, largest=False).indices
        offsets = gather(x, knn) - centres[:, :, None]                            # (B, G, k, 3)
        local = self.local(self.fourier(offsets)).amax(2)                         # PointNet max-pool
        tokens = self.norm(local) + self.centre(self.fourier(centres))
        return tokens, (x, centres)


class PointGroupDetokenizer(nn.Module):
    def __init__(self, dim: int, n_freqs: int = 6, neighbours: int = 3, directions: int = 0):
        super().__init__()
        self.neighbours = neighbours
        self.fourier = Fourier(n_freqs, directions)
        self.norm = layer_norm(dim)
        self.point = nn.Linear(self.fourier.dim, dim)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 3))

    def forward(self, tokens: torch.Tensor, context, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, centres = state
        tokens = self.norm(tokens[:, :centres.shape[1]])
        d2, idx = sqdist(x.detach(), centres.detach()).topk(self.neighbours, dim=-1, largest=False)
        w = 1.0 / (d2.sqrt() + 1e-8)
        w = w / w.sum(-1, keepdim=True)                                            # (B, N, 3)
        mixed = (gather(tokens, idx) * w[..., None]).sum(2)                       # (B, N, D)
        return self.out(mixed + self.point(self.fourier(x)))


class PointTokenizer(nn.Module):
    """One interface token per point (the data stream of PointInfinity, Huang et al. CVPR 2024,
    which is RIN with points as the interface; Point-E also makes every point a token). A token is
    the point's own position (Fourier features -> MLP) plus, with `k` > 0, an EdgeConv-style local
    feature (DGCNN, Wang et al. 2019): a shared layer on the offsets to its k nearest neighbours,
    max-pooled (per direction the farthest reach of the neighbourhood: its local shape), then a
    linear layer. Pooling before the second layer keeps the cost per neighbour at 3 x dim.
    Both parts depend on content only, never on the point's index."""

    def __init__(self, dim: int, n_freqs: int = 6, k: int = 16, directions: int = 0):
        super().__init__()
        self.k = k
        self.fourier = Fourier(n_freqs, directions)
        self.pos = nn.Sequential(nn.Linear(self.fourier.dim, dim), nn.GELU(), nn.Linear(dim, dim))
        if k > 0:
            self.edge = nn.Linear(3, dim)
            self.local = nn.Sequential(nn.GELU(), nn.Linear(dim, dim))
            self.norm = layer_norm(dim)

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, None]:
        tokens = self.pos(self.fourier(x))
        if self.k > 0:
            knn = self.token_graph(x, self.k + 1)[..., 1:]  # + 1: a point is its own nearest neighbour
            offsets = gather(x, knn) - x[:, :, None]                                   # (B, N, k, 3)
            tokens = tokens + self.norm(self.local(self.edge(offsets).max(2).values))  # max: sparse backward
        return tokens, None

    @staticmethod
    def token_graph(x: torch.Tensor, k: int) -> torch.Tensor:
        """(B, N, k) for model.conv_kernel_size = k: each point's token and its k - 1 nearest points'
        tokens, nearest first (the point itself at distance 0). Drawn from the noisy input at every
        call, so it depends on content only and the denoiser stays permutation-equivariant."""
        x = x.detach()
        # cdist without the matmul shortcut: each entry from its own two points (exact equivariance),
        # 7x faster than sqdist's broadcast on a CPU
        d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
        return d.topk(min(k, x.shape[1]), dim=-1, largest=False).indices


class PointDetokenizer(nn.Module):
    """Token i -> the prediction for point i: LayerNorm + linear, like a patch detokenizer. Every
    interface token is a point, so the weights denoise clouds of any size: a model trained at
    `num_points` samples denser clouds when the config asks for more (PointInfinity's
    resolution-free property; benchmarks/points_render.py draws them)."""

    def __init__(self, num_points: int, dim: int):
        super().__init__()
        self.n = num_points  # the trained size (informative only)
        self.norm = layer_norm(dim)
        self.proj = nn.Linear(dim, 3)

    def forward(self, tokens: torch.Tensor, context=None, state=None) -> torch.Tensor:
        return self.proj(self.norm(tokens))


class VoxelTokenizer(PatchEmbed):
    def __init__(self, size: int, patch: int, dim: int, pos_emb: str = "sincos+learned"):
        super().__init__(1, dim, patch, (size // patch,) * 3, pos_emb)
        # parameters in the order they had before the patch layer (positions first), so that the
        # index-keyed optimizer state of a voxel run saved earlier still resumes
        for name in [n for n in self._modules if n != "pos"]:
            self._modules[name] = self._modules.pop(name)


class VoxelDetokenizer(PatchUnembed):
    def __init__(self, size: int, patch: int, dim: int):
        super().__init__(1, dim, patch, (size // patch,) * 3)
