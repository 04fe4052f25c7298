"""Reference rows of the point-set metrics (docs/points.md): the metric on constructed samples, so a
trained model's numbers have a floor and a ceiling. Every row is scored against the same held-out
clouds the trainer uses (the first n of the test split), with n class-balanced samples.

    python -m benchmarks.points_references [--preset points-shapes] [--samples 64] [--set KEY=VALUE ...]

points: real train clouds (the floor: another draw of the same distribution); the same with
Gaussian jitter on every point (how fast the metrics punish a fuzzy surface); Gaussian blobs with
each real cloud's mean and covariance (the right size, place and orientation, no surface); and
Gaussian noise N(0, I) clipped to [-1, 1].
voxels: real train grids, the same with a fraction of voxels flipped, and random occupancy at the
data's mean occupancy.
"""
from __future__ import annotations

import argparse

import torch


def references(preset: str, n: int, overrides: list[str]) -> dict[str, dict[str, float]]:
    from rinkit.config import load_config, modality_options
    from rinkit.registry import get_dataset
    from rinkit_plugins.points.metrics import PointMetric
    g = torch.Generator().manual_seed(0)
    cfg = load_config(preset, None, overrides)
    o = modality_options(cfg)
    metric = PointMetric(cfg.modality, o, cfg.data)
    ds = get_dataset(cfg.modality, cfg.data.dataset).build(o, cfg.data, "train")
    x = torch.stack([ds[i][0] for i in range(n)])
    if cfg.modality == "voxels":
        flip = lambda p: torch.where(torch.rand(x.shape, generator=g) < p, -x, x)  # noqa: E731
        occ = float((x > 0).float().mean())
        rows = {"real train grids": x, "real, 2 % of voxels flipped": flip(0.02),
                "real, 10 % of voxels flipped": flip(0.10),
                f"random occupancy ({occ:.0%} occupied)": torch.where(torch.rand(x.shape, generator=g) < occ, 1.0, -1.0)}
    else:
        jitter = lambda s: x + s * torch.randn(x.shape, generator=g)  # noqa: E731
        mean = x.mean(1, keepdim=True)
        cov = torch.einsum("bni,bnj->bij", x - mean, x - mean) / x.shape[1]
        chol = torch.linalg.cholesky(cov + 1e-6 * torch.eye(3))
        blobs = mean + torch.einsum("bij,bnj->bni", chol, torch.randn(x.shape, generator=g))
        rows = {"real train clouds": x, "real + N(0, 0.02²) jitter": jitter(0.02),
                "real + N(0, 0.05²) jitter": jitter(0.05),
                "Gaussian blobs with each real cloud's mean and covariance": blobs,
                "Gaussian noise N(0, I) clipped to [-1, 1]": torch.randn(x.shape, generator=g).clamp(-1, 1)}
    return {name: metric(s) for name, s in rows.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.points_references", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="points-shapes")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    res = references(args.preset, args.samples, args.overrides)
    p = "vox" if any(k.startswith("vox") for r in res.values() for k in r) else "pc"
    print("| samples | 1-NNA-CD | MMD-CD | COV-CD | 1-NNA-EMD | MMD-EMD | COV-EMD |\n|---|---|---|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r[f'{p}_1nna_cd']:.3f} | {r[f'{p}_mmd_cd']:.4f} | {r[f'{p}_cov_cd']:.2f} | "
              f"{r[f'{p}_1nna_emd']:.3f} | {r[f'{p}_mmd_emd']:.3f} | {r[f'{p}_cov_emd']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
