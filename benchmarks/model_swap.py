"""Which noise levels decide a quality gap between two trained models: sample with one model on the
noisy steps and the other on the clean ones.

    python -m benchmarks.model_swap --preset fashion-mnist --weights /tmp/w_rin /tmp/w_unet \\
        --switch 0 --samples 2000 --out benchmarks/results/model_swap_fashion_3600

A per-level held-out loss (benchmarks.noise_levels) says where one model *denoises* better; it
cannot say which of those levels the sample metric depends on. This measures it directly. For each
log-SNR `--switch` value s, the sampler runs unchanged (the preset's sampler, steps and schedule,
the same labels and noise seeds as the quality benchmark's final evaluation, `seed=1`), and each
network evaluation goes to

* the *noisy-end* model when the step's log-SNR log(gamma / (1 - gamma)) is <= s (the coarse
  layout: which garment, its silhouette), and
* the *clean-end* model above s (edges, texture).

Both orders are run (A then B, B then A), and with `--solo` each model alone, which reproduces the
quality benchmark's final metric for those weights exactly. If the metric of "A noisy, B clean" is
close to B alone, the gap lies in the levels above s.

Both models are built from one preset and its overrides, so they share the diffusion (prediction
target, schedules, input scale) the sampler converts their outputs with. Latents are not carried between evaluations (one model's
latents mean nothing to the other): weights trained with self-conditioning are measured without it
(a warning names them). Weights are the EMA state dicts `benchmarks.quality --save DIR` writes
(`rin-ema.pt`, `unet-ema.pt`), built from `--preset` and `--set` (the runs' overrides) as
`benchmarks.noise_levels` builds them. Writes <out>.json, <out>.md and, with `--grid-per-class`,
<out>_samples.png (every row's grid, the same labels and noise).
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from benchmarks.measure import loadavg, machine
from benchmarks.noise_levels import add_weights_arguments
from rinkit.errors import RinkitError


class Switch(torch.nn.Module):
    """One denoiser out of two: `noisy` evaluates the steps whose log-SNR is <= `switch`, `clean`
    the others. Counts the evaluations each model makes (per batch: every batch runs one grid)."""

    def __init__(self, noisy, clean, switch: float):
        super().__init__()
        self.noisy, self.clean, self.switch = noisy, clean, float(switch)
        self.calls = {"noisy": 0, "clean": 0}

    def forward(self, x_t, gamma, labels=None, prev_latents=None, context=None, **kw):
        g = float(gamma.reshape(-1)[0])  # one level for the whole batch, as the samplers call it
        logsnr = math.log(g / (1 - g)) if 0 < g < 1 else (math.inf if g >= 1 else -math.inf)
        which = "clean" if logsnr > self.switch else "noisy"
        self.calls[which] += 1
        pred, _ = getattr(self, which)(x_t, gamma, labels, None, context, **kw)
        return pred, None  # no latents to carry: they would reach the other model


def run(preset: str, overrides: list[str], weights: list[str], switches: list[float], samples: int = 2000,
        solo: list[str] | None = None, grid_per_class: int = 0, threads: int | None = None, batch: int = 500,
        log=print) -> dict:
    from benchmarks.noise_levels import load_models
    from benchmarks.quality import task_for
    from rinkit.evaluate.metrics import evaluate_metrics
    from rinkit.sampling import balanced_labels, conditioning_examples, generate
    if threads:
        torch.set_num_threads(threads)
    if samples < 2:
        raise RinkitError("--samples must be at least 2")
    solo = solo or []
    if not switches and not solo:
        raise RinkitError("nothing to run: give --switch LOGSNR (and/or --solo)")
    cfg, models = load_models(preset, overrides, weights)
    if len(models) != 2:
        raise RinkitError(f"--weights must hold exactly two models in all, found {len(models)}: "
                          f"{', '.join(m[0] for m in models)}")
    (name_a, a, da, _), (name_b, b, db, _) = models
    for name, d in ((name_a, da), (name_b, db)):
        if d.self_cond_rate > 0:
            log(f"warning: {name} was trained with self-conditioning (rate {d.self_cond_rate}); "
                "it is sampled here without carried latents")
    unknown = [k for k in solo if k not in ("all", *(m[3] for m in models))]
    if unknown:
        raise RinkitError(f"--solo {' '.join(unknown)}: no such model kind (here: {', '.join(m[3] for m in models)})")
    rows = [(name, model, None) for name, model, _, kind in models if "all" in solo or kind in solo]
    for s in switches:
        rows += [(f"{name_a} → {name_b} at log-SNR {s:+g}", Switch(a, b, s), (name_a, name_b, s)),
                 (f"{name_b} → {name_a} at log-SNR {s:+g}", Switch(b, a, s), (name_b, name_a, s))]
    res = {"preset": preset, "overrides": overrides, "weights": weights, "samples": samples,
           "sampler": cfg.sampler.model_dump(), "machine": machine(), "torch_threads": torch.get_num_threads(),
           "loadavg_start": loadavg(), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "rows": []}
    batches = -(-samples // batch)
    grids = []
    k = cfg.model.num_classes
    for name, model, swap in rows:
        t0 = time.perf_counter()
        # a model alone samples as the quality benchmark does (its latents carried if it was trained
        # with self-conditioning), so it reproduces that benchmark's number; a switched pair carries none
        carry = None if swap is None else False
        metrics = evaluate_metrics(model, cfg, samples, "cpu", seed=1, batch_size=batch, carry_latents=carry)
        took = time.perf_counter() - t0
        row = {"name": name, "seconds": took, **metrics}
        if swap is not None:
            row.update(noisy=swap[0], clean=swap[1], switch_logsnr=swap[2],
                       evaluations_noisy=model.calls["noisy"] // batches,
                       evaluations_clean=model.calls["clean"] // batches)
        res["rows"].append(row)
        log(f"{name}: " + ", ".join(f"{key} {v:.3f}" for key, v in metrics.items()) + f" ({took:.0f} s)")
        if grid_per_class and k:
            labels = balanced_labels(grid_per_class, k, "cpu")
            context = conditioning_examples(cfg, len(labels), labels)
            grids.append((name, generate(model, cfg, len(labels), labels, 2, "cpu", context=context,
                                         batch_size=batch, carry_latents=carry), labels, context))
    res["loadavg_end"] = loadavg()
    res["_grids"] = grids
    res["_grid_fn"] = (lambda path: task_for(cfg.modality).grid(grids, path, cfg)) if grids else None
    return res


def table(res: dict) -> str:
    keys = [k for k in res["rows"][0] if k not in ("name", "seconds", "noisy", "clean", "switch_logsnr",
                                                   "evaluations_noisy", "evaluations_clean")]
    lines = ["| sampled with | evaluations (noisy end / clean end) | " + " | ".join(keys) + " |",
             "|---" * (2 + len(keys)) + "|"]
    for r in res["rows"]:
        ev = f"{r['evaluations_noisy']} / {r['evaluations_clean']}" if "switch_logsnr" in r else "all"
        lines.append(f"| {r['name']} | {ev} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    m, s = res["machine"], res["sampler"]
    lines += ["", f"{res['samples']} samples per row, {s['name']} {s['steps']} steps, the quality benchmark's final "
              f"evaluation seeds (seed 1); \"A → B at log-SNR s\": A evaluates the steps with log-SNR <= s, B the "
              f"others. {m['cpu']}, {res['torch_threads']} torch threads, load {res['loadavg_start']} at start."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.model_swap", description=__doc__.split("\n")[0])
    add_weights_arguments(ap, "folders holding two <kind>-ema.pt files in all (benchmarks.quality --save)")
    ap.add_argument("--switch", type=float, nargs="*", default=[], metavar="LOGSNR",
                    help="log-SNR values where sampling hands over from one model to the other")
    ap.add_argument("--solo", nargs="*", default=None, metavar="KIND",
                    help="also these models alone (rin, unet; bare --solo: both), which reproduces their "
                         "recorded metric")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--grid-per-class", type=int, default=0, help="write OUT_samples.png with this many per class")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="writes OUT.json, OUT.md")
    a = ap.parse_args(argv)
    try:
        solo = None if a.solo is None else (a.solo or ["all"])
        res = run(a.preset, a.overrides, a.weights, a.switch, a.samples, solo, a.grid_per_class, a.threads,
                  a.batch, log=lambda m: print(m, file=sys.stderr, flush=True))
    except RinkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    grid_fn = res.pop("_grid_fn")
    res.pop("_grids")
    res["command"] = "python -m benchmarks.model_swap " + shlex.join(argv)
    print(table(res))
    if a.out:
        from benchmarks.quality import write_outputs
        written = [str(p) for p in write_outputs(res, a.out, table, chart_fn=False)]
        if grid_fn is not None:
            written.append(str(grid_fn(Path(f"{a.out}_samples.png"))))
        print(f"\nwrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
