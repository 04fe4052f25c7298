"""Point-cloud generation metrics, as in PointFlow (Yang et al. 2019) and later papers.

Distances between two clouds A, B:
  CD   Chamfer distance, squared-distance form: mean_a min_b |a-b|^2 + mean_b min_a |a-b|^2.
  EMD  earth mover's distance, mean_i |a_i - b_pi(i)| over the optimal bijection pi, solved
       EXACTLY by the Hungarian algorithm (scipy.optimize.linear_sum_assignment). That is cubic in
       the number of points, so between sets the EMD is taken on random subsets of `emd_points`
       points of each cloud (a fixed seed): an estimate of the full-resolution EMD, the documented
       approximation. Sets of unequal size are subsampled to the smaller size.
Set-to-set measures, generated set S_g vs held-out reference set S_r (for D in {CD, EMD}):
  MMD-D   mean over references of the distance to their nearest generated cloud (fidelity; lower)
  COV-D   fraction of references that are the nearest reference of some generated cloud
          (diversity; higher, 1 = every reference covered)
  1-NNA-D leave-one-out 1-nearest-neighbour accuracy of telling S_g from S_r (0.5 = indistinguish-
          able; 1.0 = fully separable; below 0.5 happens when samples copy the references)."""
from __future__ import annotations

import functools

import numpy as np
import torch


def chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., N, 3), (..., M, 3) -> (...) squared-distance Chamfer."""
    # explicit differences (exact, unlike |a|^2 + |b|^2 - 2ab), one coordinate at a time: summing
    # over a trailing axis of 3 was 3x slower on CPU for the same numbers
    d = sum((a[..., :, None, c] - b[..., None, :, c]) ** 2 for c in range(3))
    return d.min(-1).values.mean(-1) + d.min(-2).values.mean(-1)


def chamfer_matrix(a: torch.Tensor, b: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """(n, N, 3), (m, M, 3) -> (n, m) pairwise Chamfer distances."""
    a, b = a.float(), b.float()
    out = torch.empty(len(a), len(b))
    for i in range(len(a)):
        for j in range(0, len(b), chunk):
            bb = b[j:j + chunk]
            out[i, j:j + len(bb)] = chamfer(a[i].expand(len(bb), -1, -1), bb)
    return out.double().numpy()


def emd(a: np.ndarray, b: np.ndarray) -> float:
    """Exact EMD (mean matched Euclidean distance) between equal-size sets; unequal sets are
    cut to the smaller size by a seeded random subset of the larger."""
    from scipy.optimize import linear_sum_assignment
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) != len(b):
        rng = np.random.default_rng(0)
        n = min(len(a), len(b))
        a = a[rng.choice(len(a), n, replace=False)] if len(a) > n else a
        b = b[rng.choice(len(b), n, replace=False)] if len(b) > n else b
    cost = np.sqrt(sum((a[:, None, c] - b[None, :, c]) ** 2 for c in range(3)))
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].mean())


def subsample(clouds, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(c)[rng.choice(len(c), n, replace=len(c) < n)] if len(c) != n else np.asarray(c)
            for c in clouds]


def emd_matrix(a, b, points: int = 128, seed: int = 0, symmetric: bool = False) -> np.ndarray:
    a, b = subsample(a, points, seed), subsample(b, points, seed + 1)
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(i + 1 if symmetric else 0, len(b)):
            out[i, j] = emd(a[i], b[j])
            if symmetric:
                out[j, i] = out[i, j]
    return out


def mmd_cov(d_gr: np.ndarray) -> tuple[float, float]:
    """d_gr: (n_gen, n_ref) distances -> (MMD, COV)."""
    mmd = float(d_gr.min(0).mean())
    cov = len(np.unique(d_gr.argmin(1))) / d_gr.shape[1]
    return mmd, float(cov)


def one_nn_accuracy(d_gg: np.ndarray, d_rr: np.ndarray, d_gr: np.ndarray) -> float:
    """Leave-one-out 1-NN two-sample test over S_g u S_r (ties go to the other set)."""
    n, m = d_gr.shape
    full = np.block([[d_gg, d_gr], [d_gr.T, d_rr]]).astype(np.float64)
    np.fill_diagonal(full, np.inf)
    is_gen = np.r_[np.ones(n, bool), np.zeros(m, bool)]
    # nearest of the same set vs nearest of the other set; correct only if strictly nearer
    same = np.where(is_gen[:, None] == is_gen[None], full, np.inf).min(1)
    other = np.where(is_gen[:, None] != is_gen[None], full, np.inf).min(1)
    return float((same < other).mean())


def set_metrics(gen, ref, emd_points: int = 128, with_emd: bool = True, prefix: str = "pc") -> dict[str, float]:
    """gen, ref: lists/tensors of (N_i, 3) clouds -> MMD, COV, 1-NNA under CD (and EMD)."""
    out: dict[str, float] = {}
    g = torch.stack([torch.as_tensor(np.asarray(c)) for c in subsample(gen, _common(gen))])
    r = torch.stack([torch.as_tensor(np.asarray(c)) for c in subsample(ref, _common(ref))])
    d_gr, d_gg, d_rr = chamfer_matrix(g, r), chamfer_matrix(g, g), chamfer_matrix(r, r)
    out[f"{prefix}_mmd_cd"], out[f"{prefix}_cov_cd"] = mmd_cov(d_gr)
    out[f"{prefix}_1nna_cd"] = one_nn_accuracy(d_gg, d_rr, d_gr)
    if with_emd:
        e_gr = emd_matrix(gen, ref, emd_points)
        e_gg = emd_matrix(gen, gen, emd_points, symmetric=True)
        e_rr = emd_matrix(ref, ref, emd_points, symmetric=True)
        out[f"{prefix}_mmd_emd"], out[f"{prefix}_cov_emd"] = mmd_cov(e_gr)
        out[f"{prefix}_1nna_emd"] = one_nn_accuracy(e_gg, e_rr, e_gr)
    return out


def _common(clouds) -> int:
    sizes = {len(c) for c in clouds}
    return sizes.pop() if len(sizes) == 1 else max(sizes)


class PointMetric:
    """callable(samples, labels) -> dict: the generated clouds vs as many held-out clouds of the
    dataset's test split (the first ones; the built-in split cycles through the classes)."""

    def __init__(self, modality: str, options, data_cfg, emd_points: int = 128, with_emd: bool = True):
        self.modality, self.o, self.data_cfg, self.emd_points = modality, options, data_cfg, emd_points
        self.with_emd = with_emd  # off: the CD measures only (EMD's assignments dominate the cost)

    def reference(self, n: int):
        from rinkit.plugin import get_dataset
        ds = get_dataset(self.modality, self.data_cfg.dataset).build(self.o, self.data_cfg, "test")
        return torch.stack([ds[i][0] for i in range(min(n, len(ds)))])

    def __call__(self, samples: torch.Tensor, labels=None) -> dict[str, float]:
        ref = self.reference(len(samples))
        if self.modality == "voxels":
            from rinkit_plugins.points.writer import occupied_centres
            to_sets = lambda xs: [c if len(c) else np.zeros((1, 3), np.float32)  # noqa: E731
                                  for c in (occupied_centres(x) for x in xs)]
            gen, refs = subsample(to_sets(samples), 256), subsample(to_sets(ref), 256)
            out = set_metrics(gen, refs, self.emd_points, self.with_emd, prefix="vox")
            occ = lambda xs: float((xs > 0).float().mean())  # noqa: E731
            out["vox_occupancy_gap"] = abs(occ(samples) - occ(ref))
            return out
        return set_metrics(list(samples.detach().float().cpu().numpy()), list(ref.numpy()), self.emd_points,
                           self.with_emd)


# -- reading a cloud's class: how well the built-in shapes are "told apart" ---------------------------
# A render of the built-in shapes is judged by whether a person tells the four classes apart. This
# classifier, trained on the real train clouds only, puts a number on it (as the digits classifier
# does for video's "class kept"): the fraction of a class's samples read as that class. Its inputs
# per point are pose-free: the point in the cloud's principal-axes frame (centred, |coordinates|
# so that the axes' signs do not matter) and the three principal spreads of its 16 nearest
# neighbours (flat face, edge, curved side), read by a PointNet (shared MLP, max-pool; Qi et al.
# 2017). Every training cloud gets Gaussian jitter of its own std in [0, 0.04): trained on clean
# clouds only, it read any fuzzy surface as a torus (the class with the thickest real surface) and
# real boxes with 0.02 of jitter as cylinders half the time, i.e. it measured thickness, which
# `thickness` already does; with the jitter it reads the outline, as an eye does. Measured on 256
# held-out clouds (s22): a box read as a box in 97 % (clean) / 91 % (0.03 jitter), a cylinder in
# 89 % / 89 %, spheres and tori 100 %. (A plain PointNet on raw coordinates: boxes about 80 %.)
def local_spreads(x: torch.Tensor, k: int = 16) -> torch.Tensor:
    """(B, N, 3): per point, the principal standard deviations of its k nearest neighbours
    (itself included), smallest first: the per-point quantity behind `thickness`."""
    x = x.float()
    idx = torch.cdist(x, x).topk(k, dim=-1, largest=False).indices  # (B, N, k)
    nb = torch.gather(x[:, None].expand(-1, x.shape[1], -1, -1), 2, idx[..., None].expand(-1, -1, -1, 3))
    c = nb - nb.mean(2, keepdim=True)
    return torch.linalg.eigvalsh(torch.einsum("bnki,bnkj->bnij", c, c) / k).clamp_min(0).sqrt()


class ShapeNet(torch.nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 256))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, classes))

    @staticmethod
    def features(x: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) clouds -> (B, N, 6) per-point features that no rotation or shift changes."""
        x = x.float()
        c = x - x.mean(1, keepdim=True)
        v = torch.linalg.svd(c, full_matrices=False).Vh  # (B, 3, 3): principal axes, largest first
        return torch.cat([(c @ v.transpose(1, 2)).abs(), 10 * local_spreads(x)], -1)  # x10: spreads ~0.01-0.1

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(f).max(1).values)


@functools.lru_cache(maxsize=2)
@torch.enable_grad()  # first use is often inside a no_grad evaluation
def shape_classifier(num_points: int = 256, epochs: int = 20, seed: int = 0, jitter: float = 0.04) -> ShapeNet:
    """Trained once per process and point count, deterministically, on the built-in train split
    (2,048 clouds, fresh jitter every epoch; about a minute on one core at 256 points)."""
    from rinkit_plugins.points.data import shape_clouds
    x, y = shape_clouds(num_points, "train").tensors()
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ShapeNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * -(-len(x) // 64))
    for _ in range(epochs):
        noisy = x + jitter * torch.rand(len(x), 1, 1, generator=g) * torch.randn(x.shape, generator=g)
        f = torch.cat([ShapeNet.features(b) for b in noisy.split(256)])
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = torch.nn.functional.cross_entropy(net(f[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval().requires_grad_(False)


@torch.no_grad()
def class_read(x: torch.Tensor, labels: torch.Tensor) -> dict[int, float]:
    """{class: fraction of its clouds the shape classifier reads as that class} for clouds x
    (B, N, 3) of the built-in shapes with their intended labels."""
    net = shape_classifier(x.shape[1])
    pred = torch.cat([net(ShapeNet.features(b)) for b in x.detach().float().cpu().split(256)]).argmax(1)
    labels = labels.cpu()
    return {int(c): float((pred[labels == c] == c).float().mean()) for c in labels.unique()}
