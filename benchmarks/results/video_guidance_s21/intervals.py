"""Guidance weight x interval on one video checkpoint (docs/video.md, s21): DDPM 5, 512 held-out
clips, the same clips and noise for every row (evaluate_metrics, sampling seed 1).

    python benchmarks/results/video_guidance_s21/intervals.py RUN
"""
import json
import sys

from rinkit.evaluate.metrics import evaluate_metrics
from rinkit.sampling import load_for_sampling

ROWS = [(1.0, (0.0, 1.0)), (1.0, (1.0, float("inf"))), (1.0, (0.0, 2.0)), (2.0, (1.0, float("inf"))),
        (2.0, (0.0, 1.0)), (3.0, (1.0, float("inf"))), (2.0, (2.0, float("inf"))), (1.5, (1.0, float("inf")))]

model, cfg, device = load_for_sampling(sys.argv[1], "auto")
for w, iv in ROWS:
    r = evaluate_metrics(model, cfg, 512, device, seed=1, batch_size=256, carry_latents=False, name="ddpm", steps=5,
                         guidance=w, guidance_interval=iv)
    print(json.dumps({"guidance": w, "interval": iv, **{k: round(v, 4) for k, v in r.items()}}), flush=True)
