"""NFE study: the modality metric (digits-FID on the built-in digits) of one checkpoint at several
step counts for every sampler of the table (DDPM, DDIM, DPM-Solver++(2M), EDM's Heun), with and
without latent self-conditioning carried between network evaluations. NFE (network evaluations
per sample) is counted, not assumed: Heun spends two a step.

    python benchmarks/nfe_study.py --ckpt runs/digits --samples 500 --out docs/nfe_study

writes <out>.json, <out>.md (table) and <out>.png (metric vs network evaluations). Every variant
samples the same images (per-image seeds), so the differences come from the sampler alone."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rinkit.evaluate.metrics import evaluate_metrics
from rinkit.sampling import load_for_sampling


def label(row: dict) -> str:
    """A table column: the sampler, and its guidance weight where it guides."""
    return row["sampler"] + (f" w={row['guidance']:g}" if row.get("guidance") else "")


def render(rows: list[dict], out: Path, metric: str, samples: int, ckpt: str = "") -> str:
    samplers = list(dict.fromkeys(label(r) for r in rows))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"ckpt": ckpt, "samples": samples, "metric": metric,
            "threads": torch.get_num_threads(), "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    variants = [(s, c) for s in samplers for c in (True, False)
                if any(label(r) == s and r["carry_latents"] == c for r in rows)]
    lines = ["| steps (NFE) | " + " | ".join(f"{s.upper()} {'carried' if c else 'not carried'}" for s, c in variants) + " |",
             "|---" * (len(variants) + 1) + "|"]
    for steps in sorted({r["steps"] for r in rows}):
        found = [next((r for r in rows if r["steps"] == steps and label(r) == s and r["carry_latents"] == c),
                      None) for s, c in variants]
        best = min(r[metric] for r in found if r is not None)
        cell = lambda r: (f"**{r[metric]:.2f}**" if r[metric] == best else f"{r[metric]:.2f}") + (  # noqa: E731
            f" ({r['nfe']} NFE)" if r["nfe"] != r["steps"] else "")
        lines.append(f"| {steps} | " + " | ".join("not run" if r is None else cell(r) for r in found) + " |")
    at50 = [r[metric] for r in rows if r["steps"] == 50]
    few = [r for r in rows if r["nfe"] <= 10]
    if at50 and few:
        top = min(few, key=lambda r: r[metric])
        lines += ["", f"Best at 50 steps: {min(at50):.2f}; best at <= 10 NFE: {top[metric]:.2f} ({top['sampler']}, "
                      f"{top['nfe']} NFE, latents {'carried' if top['carry_latents'] else 'not carried'}), "
                      f"{100 * (top[metric] / min(at50) - 1):+.1f} %."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for s, c in variants:
        rs = sorted((r for r in rows if label(r) == s and r["carry_latents"] == c), key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in rs], [r[metric] for r in rs], marker="o",
                linestyle="-" if c else "--", label=f"{s.upper()}, latents {'carried' if c else 'not carried'}")
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations (sampling steps)")
    ax.set_ylabel(f"{metric} ({samples} samples, lower is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    return "\n".join(lines)


class _Counted(torch.nn.Module):
    """The denoiser, counting its forward calls (one per network evaluation of a batch)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, *args, **kw):
        self.calls += 1
        return self.model(*args, **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--steps", default="4,6,10,25,50,100")
    ap.add_argument("--samplers", default="ddpm,ddim,dpm++2m,heun")
    ap.add_argument("--metric", default="digits_fid")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--carry", choices=("both", "yes", "no"), default="both",
                    help="carry the latents between steps, not, or both (a model without self-conditioning: one)")
    ap.add_argument("--guidance", default="",
                    help="comma-separated guidance weights to run each sampler at (default: the checkpoint's own)")
    ap.add_argument("--out", default="docs/nfe_study")
    ap.add_argument("--rows", help="render the table and plot from saved JSON lines instead of sampling")
    args = ap.parse_args(argv)
    rows = []
    model, cfg, device = load_for_sampling(args.ckpt, "auto") if not args.rows else (None, None, None)
    counted = _Counted(model)
    for steps in [] if args.rows else [int(s) for s in args.steps.split(",")]:
        for sampler in args.samplers.split(","):
            for carry in {"both": (True, False), "yes": (True,), "no": (False,)}[args.carry]:
                for w in [float(g) for g in args.guidance.split(",")] if args.guidance else [None]:
                    t0, counted.calls = time.perf_counter(), 0
                    kw = {} if w is None else {"guidance": w}
                    res = evaluate_metrics(counted, cfg, args.samples, device, seed=1, batch_size=args.batch_size,
                                           carry_latents=carry, name=sampler, steps=steps, **kw)
                    nfe = counted.calls // -(-args.samples // args.batch_size)  # per sample: calls per batch
                    rows.append({"steps": steps, "nfe": nfe, "sampler": sampler, "carry_latents": carry,
                                 "guidance": cfg.sampler.guidance if w is None else w,
                                 **res, "seconds": time.perf_counter() - t0})
                    print(json.dumps(rows[-1]), flush=True)
    if args.rows:  # re-render from the JSON lines this script printed
        rows = [json.loads(x) for x in Path(args.rows).read_text().splitlines() if x.startswith("{")]
    print(render(rows, Path(args.out), args.metric, args.samples, str(args.ckpt)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
