"""Classifier-free guidance weight x guidance interval, on one checkpoint, with its modality's own
metrics (the trainer's end-of-training evaluation: same samples, seed and labels for every row).

    python -m benchmarks.guidance_sweep RUN [--samples 128] [--guidance 0 1 2 3] [--intervals all 0,1 0,0.5]
        [--out results.json]

An interval `LO,HI` guides only the sampling steps whose sigma = sqrt((1 - gamma) / gamma) lies in
(LO, HI] (`sampler.guidance_interval`, Kynkaanniemi et al. 2024); `all` guides every step. w = 0
is scored once. The model must have been trained for guidance (class labels with
`diffusion.cond_dropout`, or `diffusion.context_dropout` for given frames).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time


def parse_interval(text: str) -> tuple[float, float] | None:
    if text == "all":
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"interval {text!r}: expected LO,HI (e.g. 0,1) or all") from None
    if not (0 <= lo < hi) or math.isnan(hi):
        raise ValueError(f"interval {text!r}: needs 0 <= LO < HI")
    return lo, hi


def sweep(ckpt: str, samples: int, weights: list[float], intervals: list[tuple[float, float] | None],
          device: str = "auto") -> list[dict]:
    from rinkit.errors import RinkitError
    from rinkit.evaluate.metrics import evaluate_metrics
    from rinkit.sampling import guided, load_for_sampling
    model, cfg, dev = load_for_sampling(ckpt, device)
    if any(w for w in weights) and not guided(cfg):
        raise RinkitError(f"{ckpt}: the model was not trained for guidance (no classes with cond_dropout, "
                          "no context_dropout); sweep --guidance 0 only")
    rows = []
    for w in weights:
        for iv in (intervals if w else [None]):
            t0 = time.perf_counter()
            res = evaluate_metrics(model, cfg, samples, dev, guidance=w, guidance_interval=iv)
            rows.append({"guidance": w, "interval": None if iv is None else list(iv), "samples": samples,
                         "seconds": round(time.perf_counter() - t0, 1), **res})
            print(f"w {w:g}, interval {'all' if iv is None else iv}: "
                  + ", ".join(f"{k} {v:.4g}" for k, v in res.items()), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k not in ("guidance", "interval", "samples", "seconds")]
    out = ["| guidance w | sigma interval | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for r in rows:
        iv = "" if not r["guidance"] else ("every step" if r["interval"] is None else
                                           f"({r['interval'][0]:g}, {r['interval'][1]:g}]")
        out.append(f"| {r['guidance']:g} | {iv} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.guidance_sweep", description=__doc__.splitlines()[0])
    ap.add_argument("ckpt", help="checkpoint file or run folder")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    ap.add_argument("--intervals", nargs="+", default=["all"], help="LO,HI in sigma, or all (default: all)")
    ap.add_argument("--out", help="also write the rows to this JSON file")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    from rinkit.errors import RinkitError
    try:
        intervals = [parse_interval(t) for t in a.intervals]
        if a.samples < 2:
            raise ValueError(f"--samples {a.samples}: needs at least 2")
        rows = sweep(a.ckpt, a.samples, a.guidance, intervals, a.device)
    except (RinkitError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n" + table(rows))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"ckpt": a.ckpt, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
