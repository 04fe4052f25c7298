"""Render a points checkpoint's samples for the eye (docs/points.md): class-balanced EMA samples,
one row per class, at any point count and guidance, beside held-out real clouds drawn at the same
point count, so that a person compares like with like.

    python -m benchmarks.points_render --ckpt runs/points-shapes [--points N] [--guidance 0 2] [--per-class 6]

With `tokens: points` every interface token is a point, so the trained weights denoise a cloud of
any size (PointInfinity's resolution-free property). They do not draw the same surface at every
size, though: at 1,024 points a model trained on 256 draws rounder, blobbier clouds
(docs/points.md), so --points defaults to the trained size. The set metrics stay at the trained
size (benchmarks/points_references.py).
Writes OUT_real.png and OUT_model_g<w>.png per guidance w (sampling seed 1, as the trainer's
evaluation); prints their paths.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def render_checkpoint(ckpt: str, points: int | None, guidances: list[float], per_class: int, out: str,
                      steps: int | None = None, device: str = "auto",
                      interval: tuple[float, float] | None = None) -> list[Path]:
    from rinkit.build import resolve
    from rinkit.errors import RinkitError
    from rinkit.sampling import balanced_labels, generate, load_for_sampling
    from rinkit_plugins.points.shapes import CLASSES
    from rinkit_plugins.points.writer import render
    model, cfg, dev = load_for_sampling(ckpt, device)
    if cfg.modality != "points" or cfg.modality_options.get("tokens", "points") != "points":
        raise RinkitError(f"{ckpt}: points_render needs a `points` model with `tokens: points` "
                          f"(one token per point), not {cfg.modality} / {cfg.modality_options.get('tokens')}")
    if not cfg.model.num_classes and any(w != 0 for w in guidances):
        raise RinkitError(f"{ckpt}: an unconditional model has no classifier-free guidance; use --guidance 0")
    points = points or resolve(cfg).options.num_points  # default: the size the weights were trained at
    cfg = cfg.model_copy(update={"modality_options": {**cfg.modality_options, "num_points": points}})
    r = resolve(cfg)
    k = cfg.model.num_classes or 1
    labels = balanced_labels(per_class, k, "cpu") if cfg.model.num_classes else None
    names = list(CLASSES) if cfg.data.dataset == "shapes" else None
    ds = r.dataset.build(r.options, cfg.data, "test")
    by_class = {c: [] for c in range(k)}  # the first per_class held-out clouds of each class, at `points` points
    for i in range(len(ds)):
        if all(len(v) >= per_class for v in by_class.values()):
            break  # built one at a time: stop once every class has its row
        x, y = ds[i]
        c = int(y) if cfg.model.num_classes else 0
        if len(by_class[c]) < per_class:
            by_class[c].append(x.numpy())
    real = [x for c in range(k) for x in by_class[c]]
    real_labels = [c for c in range(k) for _ in by_class[c]]
    stem = Path(out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [render(real, stem.with_name(f"{stem.name}_real.png"),
                    torch.tensor(real_labels) if cfg.model.num_classes else None, names,
                    title=f"held-out real clouds, {points} points")]
    for w in guidances:
        kw = {"guidance": w} | ({"steps": steps} if steps else {}) | ({"guidance_interval": interval} if interval else {})
        iv = interval or cfg.sampler.guidance_interval
        x = generate(model, cfg, per_class * k, labels, 1, dev, **kw)
        paths.append(render([s.numpy() for s in x], stem.with_name(f"{stem.name}_model_g{w:g}.png"), labels, names,
                            title=f"model samples, {points} points, {cfg.sampler.name} "
                                  f"{steps or cfg.sampler.steps} steps, guidance {w:g}"
                                  + (f" for sigma in ({iv[0]:g}, {iv[1]:g}]" if iv and w else "")))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.points_render", description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="checkpoint file or run folder")
    ap.add_argument("--points", type=int, default=None, help="points per drawn cloud (default: the trained size)")
    ap.add_argument("--guidance", type=float, nargs="+", default=[0.0], help="classifier-free guidance w (0 = none)")
    ap.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("SIGMA_LO", "SIGMA_HI"),
                    help="guide only where sigma lies in (LO, HI]; `0 inf` = every step (default: the config's)")
    ap.add_argument("--per-class", type=int, default=6)
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
    ap.add_argument("--out", default="points_render", help="output path stem")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    from rinkit.errors import RinkitError
    try:
        paths = render_checkpoint(a.ckpt, a.points, a.guidance, a.per_class, a.out, a.steps, a.device,
                                  None if a.guidance_interval is None else tuple(a.guidance_interval))
    except RinkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
