"""Reference rows of the point-set metrics (docs/points.md): the metric on constructed samples, so a
trained model's numbers have a floor and a ceiling. Every row is scored against the same held-out
clouds the trainer uses (the first n of the test split), with n class-balanced samples.

    python -m benchmarks.points_references [--preset points-shapes] [--samples 64] [--set KEY=VALUE ...]
    python -m benchmarks.points_references --samples 256 --cd-only --real-only --ckpt runs/points-shapes [--guidance 0 2]

--ckpt adds the row of a trained model (its EMA weights, class-balanced samples drawn as the
trainer's end-of-training evaluation draws them, the checkpoint's own config): more samples than
the trainer's `eval_samples` make its numbers less noisy. --cd-only skips the EMD measures,
whose exact assignments dominate the cost (about 4x per doubling of --samples). --extents adds a
table of each class's mean principal extents (the standard deviations along a cloud's principal
axes, largest first) for the real train clouds and each model row: the set metrics do not say
whether a class comes out too small or too round; this does. It also gives each class's mean
local thickness: the smallest principal standard deviation of every point's 16 nearest neighbours,
i.e. how far points stray from the local tangent plane (a fuzzy surface, not a wrong shape, is what
blurs a box's edges into a cylinder's); the real clouds' value is the floor set by curvature.
For the built-in shapes it also gives the fraction of each class's clouds that a shape classifier
trained on the real train clouds reads as that class (`class_read`, plugins/points/metrics.py):
a number for "told apart by eye" (held-out real clouds: 0.89 for cylinders, 0.97 for boxes,
1.00 for spheres and tori).

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

from rinkit_plugins.points.metrics import class_read, local_spreads


def references(preset: str, n: int, overrides: list[str], with_emd: bool = True,
               real_only: bool = False) -> dict[str, dict[str, float]]:
    from rinkit.config import load_config
    return references_for(load_config(preset, None, overrides), n, with_emd, real_only)


def references_for(cfg, n: int, with_emd: bool = True, real_only: bool = False) -> dict[str, dict[str, float]]:
    from rinkit.build import resolve
    from rinkit_plugins.points.metrics import PointMetric
    g = torch.Generator().manual_seed(0)
    r = resolve(cfg)
    o = r.options
    metric = PointMetric(cfg.modality, o, cfg.data, with_emd=with_emd)
    ds = real_clouds(r, cfg, "train")
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
    if real_only:
        rows = dict(list(rows.items())[:1])
    return {name: metric(s) for name, s in rows.items()}


def extents(x: torch.Tensor, labels: torch.Tensor | None) -> dict[int, list[float]]:
    """{class: mean principal standard deviations (3, largest first)} of clouds x (B, N, 3)."""
    c = x - x.mean(1, keepdim=True)
    cov = torch.einsum("bni,bnj->bij", c, c) / x.shape[1]
    sd = torch.linalg.eigvalsh(cov).clamp_min(0).sqrt().flip(-1)  # (B, 3), descending
    labels = torch.zeros(len(x), dtype=torch.long) if labels is None else labels.cpu()
    return {int(k): sd[labels == k].mean(0).tolist() for k in labels.unique()}


def thickness(x: torch.Tensor, labels: torch.Tensor | None, k: int = 16) -> dict[int, float]:
    """{class: mean local thickness} of clouds x (B, N, 3): per point, the smallest principal
    standard deviation of its k nearest neighbours (itself included)."""
    per_cloud = local_spreads(x, k)[..., 0].mean(1)
    labels = torch.zeros(len(x), dtype=torch.long) if labels is None else labels.cpu()
    return {int(cls): float(per_cloud[labels == cls].mean()) for cls in labels.unique()}


def shape_stats(x: torch.Tensor, labels: torch.Tensor | None, read: torch.Tensor | None = None) -> dict[int, list[float]]:
    """{class: [3 mean principal extents, largest first; mean local thickness; fraction read as
    the class]}. The last is the shape classifier's reading (plugins/points/metrics.py) of `read`,
    clouds of the built-in shapes with the same labels (x itself for samples); NaN without."""
    e, t = extents(x, labels), thickness(x, labels)
    r = {} if read is None or labels is None else class_read(read, labels)
    return {c: [*e[c], t[c], r.get(c, float("nan"))] for c in e}


def real_shape_stats(ckpt_or_preset: str, n: int) -> dict[int, list[float]]:
    from rinkit.build import resolve
    from rinkit.config import load_config
    cfg = load_config(ckpt_or_preset, None, [])
    r = resolve(cfg)
    ds = real_clouds(r, cfg, "train")
    items = [ds[i] for i in range(n)]
    read = None
    if _built_in_shapes(cfg):  # the classifier learnt the train clouds, so it reads as many held-out
        held_out = real_clouds(r, cfg, "test")  # ones (both splits cycle through the classes)
        read = torch.stack([held_out[i][0] for i in range(n)])
    return shape_stats(torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items]), read)


def real_clouds(r, cfg, split: str):
    """A split as the data has it: with `canonical_pose` the training split is served to the model
    turned into each cloud's own frame (plugins/points/pose.py), and the references are the data."""
    o = r.options
    if getattr(o, "canonical_pose", False):
        o = o.model_copy(update={"canonical_pose": False})
    return r.dataset.build(o, cfg.data, split)


def _built_in_shapes(cfg) -> bool:
    return cfg.modality == "points" and cfg.data.dataset == "shapes"


def model_row(ckpt: str, n: int, with_emd: bool = True, device: str = "auto",
              guidance: float | None = None, interval: tuple[float, float] | None = None,
              sizes: dict | None = None) -> tuple[str, dict[str, float]]:
    """(row name, metrics) of a checkpoint's EMA model on n class-balanced samples (sampling seed 1,
    as the trainer's evaluation), scored against the same held-out clouds as the references.
    `guidance` / `interval` override the checkpoint's sampler guidance / guidance_interval."""
    from rinkit.build import resolve
    from rinkit.sampling import balanced_labels, generate, load_for_sampling
    from rinkit_plugins.points.metrics import PointMetric
    model, cfg, dev = load_for_sampling(ckpt, device)
    k = cfg.model.num_classes
    labels = balanced_labels(-(-n // k), k, "cpu")[:n] if k else None
    over = ({} if guidance is None else {"guidance": guidance}) | ({} if interval is None else {"guidance_interval": interval})
    x = generate(model, cfg, n, labels, 1, dev, **over).cpu()
    metric = PointMetric(cfg.modality, resolve(cfg).options, cfg.data, with_emd=with_emd)
    name = f"model: {ckpt}" + ("" if guidance is None else f", guidance {guidance:g}")
    name += "" if interval is None else f", sigma in ({interval[0]:g}, {interval[1]:g}]"
    if sizes is not None:
        sizes[name] = shape_stats(x, labels, x if _built_in_shapes(cfg) else None)
    return name, metric(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.points_references", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="points-shapes")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    ap.add_argument("--ckpt", default=None, help="also score this checkpoint (file or run folder)")
    ap.add_argument("--cd-only", action="store_true", help="skip the EMD measures (the costly part)")
    ap.add_argument("--real-only", action="store_true", help="of the reference rows, only the real clouds' row")
    ap.add_argument("--guidance", type=float, nargs="+", default=None,
                    help="with --ckpt: one row per classifier-free guidance w (default: the checkpoint's sampler)")
    ap.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("SIGMA_LO", "SIGMA_HI"),
                    help="with --ckpt: guide only where sigma lies in (LO, HI]; `0 inf` = every step "
                         "(default: the checkpoint's sampler)")
    ap.add_argument("--extents", action="store_true",
                    help="also print each class's mean principal extents and local thickness, real train "
                         "clouds and model rows")
    args = ap.parse_args(argv)
    sizes = {f"real train clouds ({args.preset})": real_shape_stats(args.preset, args.samples)} if args.extents else None
    res = references(args.preset, args.samples, args.overrides, not args.cd_only, args.real_only)
    if args.ckpt:
        for w in args.guidance or [None]:
            name, row = model_row(args.ckpt, args.samples, not args.cd_only, guidance=w,
                                  interval=None if args.guidance_interval is None else tuple(args.guidance_interval),
                                  sizes=sizes)
            res[name] = row
    p = "vox" if any(k.startswith("vox") for r in res.values() for k in r) else "pc"
    cols = [("1-NNA-CD", "1nna_cd", ".3f"), ("MMD-CD", "mmd_cd", ".4f"), ("COV-CD", "cov_cd", ".3f")]
    if not args.cd_only:
        cols += [("1-NNA-EMD", "1nna_emd", ".3f"), ("MMD-EMD", "mmd_emd", ".3f"), ("COV-EMD", "cov_emd", ".3f")]
    print(f"{args.samples} samples per row\n\n| samples | " + " | ".join(c for c, _, _ in cols) + " |\n"
          + "|---" * (len(cols) + 1) + "|")
    for name, r in res.items():
        print(f"| {name} | " + " | ".join(format(r[f"{p}_{k}"], f) for _, k, f in cols) + " |")
    if sizes:
        classes = sorted({k for v in sizes.values() for k in v})
        print("\nper class: mean principal extents (standard deviations along the principal axes, largest "
              "first), mean local thickness (16 nearest neighbours), and the fraction the shape classifier "
              "reads as the class (the real row: as many held-out clouds)\n\n"
              "| clouds | " + " | ".join(f"class {k}" for k in classes) + " |\n" + "|---" * (len(classes) + 1) + "|")
        for name, v in sizes.items():
            print(f"| {name} | " + " | ".join(" / ".join(f"{e:.3f}" for e in v[k][:3]) + f", thickness {v[k][3]:.4f}, read {v[k][4]:.2f}"
                                             if k in v else "" for k in classes) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
