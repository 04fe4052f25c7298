"""Where a video checkpoint keeps the digit: class kept per predicted frame, and for clips whose
digit bounces off a wall during the predicted frames against clips on a straight path; also the
constant-velocity extrapolation (last given frame moved on at its last measured step) on the same
clips. The trainer's evaluation clips (test split, clips 0..n-1) and its sampler, seed 1.

    python benchmarks/results/video_extrapolate_s19/breakdown.py CKPT [--clips 128] [--set name=ddim steps=20 guidance=2.0 guidance_interval=1,inf]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.video_trajectory import Probe
from rinkit.sampling import generate, load_for_sampling


@torch.no_grad()
def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--clips", type=int, default=128)
    ap.add_argument("--set", nargs="*", default=[], help="sampler overrides, e.g. name=ddim steps=20")
    a = ap.parse_args(argv)
    over = {k: (v if k == "name" or k == "ddpm_variance" else tuple(float(u) for u in v.split(","))
                if "," in v else (float(v) if "." in v else int(v)))  # guidance_interval=1,inf: a pair
            for k, v in (s.split("=", 1) for s in a.set)}
    model, cfg, dev = load_for_sampling(a.ckpt, "cpu")
    opts = cfg.options
    ds = cfg.dataset.build(opts, cfg.data, "test")
    clips = [ds.clip(i) for i in range(a.clips)]
    x = torch.stack([ds[i][0] for i in range(a.clips)])
    fut, ctx, _ = cfg.impl.condition(x, opts)
    # the metric's reference for an unconditional model: the class the classifier reads in the
    # given frames (their mode), not the dataset's label (the classifier misreads a few digits)
    from rinkit.plugin import digits_classifier, to_digits
    from rinkit_plugins.video.metrics import digit_crops
    from rinkit_plugins.video.data import digit_size
    ref = digits_classifier()(to_digits(digit_crops(ctx.flatten(0, 1), digit_size(opts)))).argmax(1)
    labels = ref.view(len(ctx), -1).mode(1).values
    k = opts.context_frames
    # a bounce during the predicted frames: a step's sign flips against the previous step's
    bounced = []
    for _, _, pos in clips:
        d = np.diff(pos.astype(float), axis=0)  # d[t]: frame t -> t+1
        flips = [(np.sign(d[t]) * np.sign(d[t - 1]) < 0).any() for t in range(k - 1, len(d))]
        bounced.append(any(flips))
    bounced = torch.tensor(bounced)
    probe = Probe(opts, fut, labels)
    samples = generate(model, cfg, a.clips, None, 1, dev, batch_size=a.clips, context=ctx, **over)
    kept = probe.kept(samples)  # (B, T_pred)
    from rinkit_plugins.video.tokenizer import last_step, shift_frames
    t = fut.shape[1]
    step = last_step(ctx, opts.copy_motion or 3)
    extra = shift_frames(ctx[:, -1], step[:, None] * torch.arange(1, t + 1, dtype=step.dtype)[None, :, None])
    ek = probe.kept(extra)
    print(f"{a.ckpt} sampler {cfg.sampler.model_copy(update=over)}")
    print(f"class kept {float(kept.mean()):.3f}; per predicted frame "
          + " / ".join(f"{float(v):.2f}" for v in kept.mean(0)))
    print(f"straight ({int((~bounced).sum())} clips) {float(kept[~bounced].mean()):.3f}; "
          f"bounce ({int(bounced.sum())} clips) {float(kept[bounced].mean()):.3f}")
    print(f"MSE to the true future {probe.mse(samples):.4f}")
    print(f"extrapolation alone: class kept {float(ek.mean()):.3f}; per frame "
          + " / ".join(f"{float(v):.2f}" for v in ek.mean(0))
          + f"; straight {float(ek[~bounced].mean()):.3f}, bounce {float(ek[bounced].mean()):.3f}; "
          f"MSE {probe.mse(extra):.4f}")


if __name__ == "__main__":
    main()
