"""Reference rows of the moving-digits proxy (docs/video.md): the metric on constructed
predictions — the true future, the true future with per-pixel Gaussian noise (std 0.1 and 0.2:
how much speckle each score tolerates), the last given frame frozen, the last given frame moved
on at its last measured step (the classical constant-velocity baseline, no learning), another
clip's future, Gaussian noise — for a video preset, so a trained model's numbers have a floor and
a ceiling.

    python -m benchmarks.video_references [--preset video-digits] [--clips 128] [--split train|test] [--set KEY=VALUE ...]

--split test scores the clips `rinkit train` evaluates on (the first held-out clips, which the
metric's reference statistics also contain, so the true future's FID is lower there than on
training clips, whose futures are an independent draw).
"""
from __future__ import annotations

import argparse

import torch


def references(preset: str, clips: int, overrides: list[str], split: str = "train") -> dict[str, dict[str, float]]:
    from rinkit.config import load_config
    return references_for(load_config(preset, None, overrides), clips, split)


def extrapolated(ctx: torch.Tensor, frames: int, search: int) -> torch.Tensor:
    """The last given frame moved (f + 1) times its last measured step for predicted frame f."""
    from rinkit_plugins.video.tokenizer import last_step, shift_frames
    f = torch.arange(1, frames + 1, dtype=ctx.dtype)
    return shift_frames(ctx[:, -1], f[None, :, None] * last_step(ctx, search)[:, None])


def references_for(cfg, clips: int, split: str = "train") -> dict[str, dict[str, float]]:
    """The rows for a video config (benchmarks/quality.py's video task calls this), at `clips`
    clips of `split`; the shuffle and the noise come from seed 0 (the caller's RNG is kept)."""
    import math

    from rinkit.build import resolve
    from rinkit_plugins.video.metrics import MovingDigitsMetric
    cfg = resolve(cfg)
    o = cfg.options
    k, metric = o.context_frames, MovingDigitsMetric(o)
    ds = cfg.dataset.build(o, cfg.data, split)
    x = torch.stack([ds[i][0] for i in range(clips)])
    ctx, fut = x[:, :k], x[:, k:]
    # the step search radius: the data's fastest 2.5 px/frame per 32 px, rounded up
    search = max(o.copy_motion, o.context_extrapolate, math.ceil(2.5 * min(o.size) / 32))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        rows = {"the true future": fut,
                "the true future + noise std 0.1": (fut + 0.1 * torch.randn_like(fut)).clamp(-1, 1),
                "the true future + noise std 0.2": (fut + 0.2 * torch.randn_like(fut)).clamp(-1, 1),
                "last given frame frozen": ctx[:, -1:].expand_as(fut).clone(),
                **({"last given frame moved on at its last step": extrapolated(ctx, fut.shape[1], search)}
                   if k >= 2 else {}),
                "another clip's future": fut[torch.randperm(clips)],
                "Gaussian noise": torch.randn_like(fut).clamp(-1, 1)}
    return {name: metric(pred, None, ctx) for name, pred in rows.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.video_references", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="video-digits")
    ap.add_argument("--clips", type=int, default=128)
    ap.add_argument("--split", choices=["train", "test"], default="train")
    ap.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    print("| predictions | digits-FID | class kept | motion RMSE | motion ok | speed |\n|---|---|---|---|---|---|")
    for name, r in references(args.preset, args.clips, args.overrides, args.split).items():
        print(f"| {name} | {r['video_digits_fid']:.1f} | {r['video_class_keep']:.3f} | "
              f"{r['video_motion_rmse']:.2f} px | {r['video_motion_ok']:.3f} | {r['video_speed']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
