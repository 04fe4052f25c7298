"""Reference rows of the moving-digits proxy (docs/video.md): the metric on constructed
predictions — the true future, the true future with per-pixel Gaussian noise (std 0.1 and 0.2:
how much speckle each score tolerates), the last given frame frozen, another clip's future,
Gaussian noise — for a video preset, so a trained model's numbers have a floor and a ceiling.

    python -m benchmarks.video_references [--preset video-digits] [--clips 128] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse

import torch


def references(preset: str, clips: int, overrides: list[str]) -> dict[str, dict[str, float]]:
    from rinkit.config import load_config
    return references_for(load_config(preset, None, overrides), clips)


def references_for(cfg, clips: int) -> dict[str, dict[str, float]]:
    """The rows for a video config (benchmarks/quality.py's video task calls this), at `clips`
    training clips; the shuffle and the noise come from seed 0 (the caller's RNG is kept)."""
    from rinkit.build import resolve
    from rinkit_plugins.video.metrics import MovingDigitsMetric
    cfg = resolve(cfg)
    o = cfg.options
    k, metric = o.context_frames, MovingDigitsMetric(o)
    ds = cfg.dataset.build(o, cfg.data, "train")
    x = torch.stack([ds[i][0] for i in range(clips)])
    ctx, fut = x[:, :k], x[:, k:]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        rows = {"the true future": fut,
                "the true future + noise std 0.1": (fut + 0.1 * torch.randn_like(fut)).clamp(-1, 1),
                "the true future + noise std 0.2": (fut + 0.2 * torch.randn_like(fut)).clamp(-1, 1),
                "last given frame frozen": ctx[:, -1:].expand_as(fut).clone(),
                "another clip's future": fut[torch.randperm(clips)],
                "Gaussian noise": torch.randn_like(fut).clamp(-1, 1)}
    return {name: metric(pred, None, ctx) for name, pred in rows.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.video_references", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="video-digits")
    ap.add_argument("--clips", type=int, default=128)
    ap.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    print("| predictions | digits-FID | class kept | motion RMSE | motion ok | speed |\n|---|---|---|---|---|---|")
    for name, r in references(args.preset, args.clips, args.overrides).items():
        print(f"| {name} | {r['video_digits_fid']:.1f} | {r['video_class_keep']:.3f} | "
              f"{r['video_motion_rmse']:.2f} px | {r['video_motion_ok']:.3f} | {r['video_speed']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
