"""Quality at equal compute (issue 7, item 6): RIN vs an ADM-style U-Net on the built-in digits,
each trained for the same wall-clock budget on the same machine, compared by digits-FID.

    python -m benchmarks.quality --budget 600 --out benchmarks/results/quality_digits

writes <out>.json (every evaluation point, the settings, the machine, the exact command), <out>.md
(a table) and <out>.png (digits-FID vs training seconds and vs training TFLOPs, both models).

Protocol
* The models: RIN built from the preset (`digits`: 8x8x1, 10 classes) exactly as `rinkit train`
  builds it, and the ADM layout scaled to 8x8 (`benchmarks/models.py`, ADM[8]), class-conditional
  through one extra embedding row as the null class, wrapped under rinkit's denoiser contract.
* The same objective and recipe for both, from the preset: `Diffusion.loss` with its schedules,
  prediction target and label dropout (the U-Net with self-conditioning rate 0: it has no latents;
  RIN keeps the preset's 0.9), the digits train split through the image plugin and rinkit's
  deterministic `StepBatchSampler`, the preset's batch size, optimizer (`build_optimizer`), peak LR,
  warm-up steps and decay (`set_lr`), and the trainer's clip + step + EMA update
  (`apply_update`). Per-step seeds are the trainer's (`shard_seed(seed, step, 0)`), so at a
  given step both models see the same batch, the same noise levels, the same noise and the same
  dropped labels. Both start from `torch.manual_seed(seed)`.
* Equal wall-clock: the cosine LR schedule needs a step count, so each model is first timed on
  `--calib-steps` steps of a throwaway copy (after 3 untimed ones) and gets
  total steps = budget x steps/s; every model thus runs a complete schedule in about the same
  wall-clock budget on this machine. The models train one after the other (not interleaved), so
  the machine load may differ between them: the JSON records the load average before and after
  each model and torch's thread count. The recorded training seconds are measured (data,
  forward, backward, clipping, optimizer and EMA update; evaluation excluded), not the budget.
* At `--points` evenly spaced steps (the last is the end of training), the EMA model's digits-FID
  and class accuracy on `--eval-samples` class-balanced samples with the preset's sampler (for
  `digits` now DDPM, 50 steps, posterior variance), via `rinkit.sampling.evaluate_metrics`: the same
  labels and per-image noise seeds for both models.
* Training FLOPs = examples seen x per-example training FLOPs, where the latter is the forward
  FLOPs counted once per model with FlopCounterMode's per-op formulas (`benchmarks.measure.
  count_flops`: matmuls, convolutions, attention; 2 FLOPs per multiply-add) x 3 (forward +
  backward), plus, for RIN, the extra no-grad forward of its self-conditioning pass (run on the
  whole batch, as `Diffusion.loss` does). Elementwise ops, the optimizer and EMA are not counted.
  A direct count of one `Diffusion.loss(...).backward()` is kept in the JSON as a cross-check.
* `--steps N M` fixes RIN's and the U-Net's step counts instead of calibrating (to repeat a run);
  `--sample-steps` overrides the sampler's steps (smoke tests).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.measure import count_flops, loadavg, machine, sync
from benchmarks.models import Entry, unet_entry
from rinkit.errors import RinkitError


def models_for(preset: str, overrides: list[str]):
    """[(Entry, Config used to sample it)] for RIN and its matched U-Net. The U-Net's config is the
    preset's with self-conditioning rate 0, so the sampler builds the U-Net's own Diffusion."""
    from rinkit.build import build_diffusion, build_model, sample_shape
    from rinkit.config import load_config
    cfg = load_config(preset, None, list(overrides))
    if cfg.modality != "image":
        raise RinkitError(f"the quality benchmark compares image models; preset {preset!r} is {cfg.modality}")
    shape = sample_shape(cfg)
    rin = Entry(f"RIN {cfg.name}", "rin", lambda: build_model(cfg), build_diffusion(cfg), shape,
                cfg.model.num_classes, note=" ".join(overrides))
    unet = unet_entry(shape[-1], shape[0], cfg.model.num_classes, rin.diffusion)
    unet_cfg = load_config(preset, None, [*overrides, "diffusion.self_cond_rate=0"])
    return [(rin, cfg), (unet, unet_cfg)]


class Training:
    """One model trained with the preset's recipe, one step at a time. It shares the trainer's
    update (`set_lr`, `apply_update`) and loss but not its loop, which owns a run folder,
    checkpoints and logging this benchmark does not want."""

    def __init__(self, entry: Entry, cfg, device: torch.device, seed: int, total_steps: int):
        from torch.utils.data import DataLoader

        from rinkit.config import modality_options
        from rinkit.registry import get_dataset
        from rinkit.train.data import StepBatchSampler
        from rinkit.train.optim import EMA, build_optimizer
        self.entry, self.cfg, self.device, self.seed, self.total = entry, cfg, device, seed, total_steps
        t = cfg.train
        torch.manual_seed(seed)
        self.model = entry.build().to(device).train()
        self.ema = EMA(self.model, t.ema_decay)
        self.opt = build_optimizer(self.model, t.optimizer, t.lr, t.weight_decay, t.betas)
        ds = get_dataset(cfg.modality, cfg.data.dataset).build(modality_options(cfg), cfg.data, "train")
        sampler = StepBatchSampler(len(ds), t.batch_size, seed, total_steps=total_steps)
        self.batches = iter(DataLoader(ds, batch_sampler=sampler, num_workers=0,
                                       generator=torch.Generator().manual_seed(seed)))
        self.step, self.bad, self.losses = 0, 0, []
        self.params = sum(p.numel() for p in self.model.parameters())

    def train_step(self) -> None:
        from rinkit.train.distributed import shard_seed
        from rinkit.train.optim import apply_update, set_lr
        t = self.cfg.train
        set_lr(self.opt, t, self.step, self.total)
        self.opt.zero_grad(set_to_none=True)
        torch.manual_seed(shard_seed(self.seed, self.step, 0))  # as the trainer: noise keyed by step
        x, y = next(self.batches)
        x = x.to(self.device)
        labels = y.to(self.device) if self.entry.num_classes else None
        loss = self.entry.diffusion.loss(self.model, x, labels)
        loss.backward()
        value = float(loss.detach())
        self.step += 1
        if not math.isfinite(value):  # as the trainer: skip the update
            self.bad += 1
            self.opt.zero_grad(set_to_none=True)
            return
        apply_update(self.model, self.opt, self.ema, t.grad_clip)
        self.losses.append(value)

    def train_until(self, step: int) -> float:
        """Train up to `step`; the measured seconds (synchronised on a GPU)."""
        sync(self.device)
        t0 = time.perf_counter()
        while self.step < step:
            self.train_step()
        sync(self.device)
        return time.perf_counter() - t0


def calibrate(entry: Entry, cfg, device, seed: int, steps: int, warmup: int = 3) -> float:
    """Training steps per second of this model on this machine now (a throwaway copy)."""
    run = Training(entry, cfg, device, seed, total_steps=warmup + steps)
    for _ in range(warmup):
        run.train_step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        run.train_step()
    sync(device)
    return steps / (time.perf_counter() - t0)


def flops_per_example(entry: Entry, batch: int) -> dict:
    """Per-example FLOPs, counted on the meta device (exact, free): the forward that gets the
    gradient (RIN reads previous latents there), RIN's no-grad self-conditioning forward, the
    training total 3 x forward + that extra pass, and a direct count of loss + backward."""
    with torch.device("meta"):
        model = entry.build()
    x = torch.zeros(batch, *entry.shape, device="meta")
    labels = torch.zeros(batch, dtype=torch.long, device="meta") if entry.num_classes else None
    gamma = torch.full((batch,), 0.5, device="meta")
    prev = None
    if entry.kind == "rin":
        prev = torch.zeros(batch, model.core.num_latents, model.core.latent_dim, device="meta")
    with torch.no_grad():
        fwd = count_flops(lambda: model(x, gamma, labels, prev, None)) / batch
        sc = count_flops(lambda: model(x, gamma, labels, None, None)) / batch \
            if entry.diffusion.self_cond_rate > 0 else 0.0
    direct = count_flops(lambda: entry.diffusion.loss(model, x, labels).backward()) / batch
    return {"forward": fwd, "self_cond_forward": sc, "train": 3 * fwd + sc, "train_direct_count": direct}


def eval_steps(total: int, points: int) -> list[int]:
    return sorted({max(1, round(total * k / points)) for k in range(1, points + 1)})


def run_model(entry: Entry, cfg, device, seed: int, budget: float, points: int, eval_samples: int,
              calib_steps: int, sampler_over: dict, eval_batch: int, steps: int | None = None,
              log=print) -> dict:
    from rinkit.sampling import evaluate_metrics
    flops = flops_per_example(entry, cfg.train.batch_size)
    load_start = loadavg()
    rate = None if steps else calibrate(entry, cfg, device, seed, calib_steps)
    total = max(points, steps or int(budget * rate))
    run = Training(entry, cfg, device, seed, total)
    how = f"{rate:.2f} steps/s calibrated -> {total} steps for {budget:g} s" if rate else f"{total} steps (given)"
    log(f"{entry.name}: {run.params / 1e6:.3f}M params, {flops['forward'] / 1e6:.2f} MFLOPs/example forward, {how}")
    batch = cfg.train.batch_size
    train_s, eval_s, rows, last = 0.0, 0.0, [], 0
    for target in eval_steps(total, points):
        train_s += run.train_until(target)
        t0 = time.perf_counter()
        res = evaluate_metrics(run.ema.model, cfg, eval_samples, device, seed=1, batch_size=eval_batch,
                               **sampler_over)
        took = time.perf_counter() - t0
        eval_s += took
        if "digits_fid" not in res:
            raise RinkitError(f"no digits-FID for preset {cfg.name!r} (dataset {cfg.data.dataset!r}): "
                              "the quality benchmark needs the built-in digits")
        window = run.losses[last:] or [float("nan")]
        last = len(run.losses)
        rows.append({"step": run.step, "train_seconds": train_s, "examples": run.step * batch,
                     "train_tflops": run.step * batch * flops["train"] / 1e12,
                     "loss": float(np.mean(window)), "digits_fid": res["digits_fid"],
                     "digits_acc": res.get("digits_acc"), "eval_seconds": took})
        log(f"  step {run.step}/{total}: {train_s:.1f} s, loss {rows[-1]['loss']:.4f}, "
            f"digits-FID {res['digits_fid']:.2f}, acc {res.get('digits_acc', float('nan')):.3f} "
            f"(eval {took:.1f} s)")
    return {"name": entry.name, "kind": entry.kind, "note": entry.note, "params": run.params,
            "self_cond_rate": entry.diffusion.self_cond_rate, "calibrated_steps_per_s": rate,
            "total_steps": total, "batch": batch, "train_seconds": train_s, "eval_seconds": eval_s,
            "nonfinite_steps": run.bad, "gflops_per_example": {k: v / 1e9 for k, v in flops.items()},
            "loadavg_start": load_start, "loadavg_end": loadavg(), "points": rows}


def table(result: dict) -> str:
    s = result["settings"]
    lines = ["| model | params | step | seconds | examples | TFLOPs | digits-FID | acc |",
             "|---|---|---|---|---|---|---|---|"]
    for m in result["models"]:
        for p in m["points"]:
            acc = "" if p["digits_acc"] is None else f"{100 * p['digits_acc']:.1f} %"
            lines.append(f"| {m['name']} | {m['params'] / 1e6:.2f}M | {p['step']} / {m['total_steps']} | "
                         f"{p['train_seconds']:.1f} | {p['examples']} | {p['train_tflops']:.3f} | "
                         f"{p['digits_fid']:.2f} | {acc} |")
    mach = result["machine"]
    notes = [
        "",
        (f"Budget {s['budget_s']:g} s of training per model; steps = budget x steps/s measured on "
         f"{s['calib_steps']} calibration steps. " if not s.get("fixed_steps") else
         f"Fixed step counts {s['fixed_steps'][0]} (RIN) and {s['fixed_steps'][1]} (U-Net), not calibrated. ")
        + f"digits-FID and accuracy of the EMA model on "
        f"{s['eval_samples']} class-balanced samples ({s['sampler']}); seconds exclude evaluation.",
        "Training FLOPs per example = 3 x forward (forward + backward), plus RIN's no-grad "
        "self-conditioning forward; FlopCounterMode formulas (matmul, conv, attention).",
    ]
    for m in result["models"]:
        g, rate = m["gflops_per_example"], m["calibrated_steps_per_s"]
        notes.append(f"* {m['name']}: {m['params']:,} params; forward {g['forward'] * 1e3:.2f} MFLOPs/example"
                     + (f", self-cond pass {g['self_cond_forward'] * 1e3:.2f}" if g["self_cond_forward"] else "")
                     + f", training {g['train'] * 1e3:.2f} MFLOPs/example; "
                     + (f"{rate:.2f} steps/s calibrated; " if rate else "")
                     + f"trained {m['train_seconds']:.1f} s; load average "
                     f"{m['loadavg_start']} at start, {m['loadavg_end']} at end")
    ref = result.get("reference")
    if ref:
        notes.append(f"* reference at {s['eval_samples']} samples: train split vs test {ref['train_vs_test']:.2f} "
                     f"(floor), Gaussian noise {ref['noise']:.2f}")
    notes.append(f"* {mach.get('gpu') or mach['cpu']}, {result['torch_threads']} torch threads, "
                 f"{mach['cores']} cores, torch {mach['torch']}, device {result['device']}")
    return "\n".join(lines + notes)


def chart(result: dict, path: Path, title: str | None = None, target: float | None = None) -> None:
    """digits-FID vs training seconds and vs training TFLOPs for every model in `result`
    (benchmarks.time_to_fid draws its curves here too, with its common `target` as a line)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "train_seconds", "training wall-clock (s)"),
                           (axes[1], "train_tflops", "training compute (TFLOPs)")):
        for i, m in enumerate(result["models"]):
            pts = m["points"]
            ax.plot([p[key] for p in pts], [p["digits_fid"] for p in pts], marker="o", color=f"C{i}",
                    label=f"{m['name']} ({m['params'] / 1e6:.2f}M)")
        if target is not None:
            ax.axhline(target, color="grey", ls="--", lw=1, label=f"common target {target:.1f}")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"digits-FID ({result['settings']['eval_samples']} samples, lower is better)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    s = result["settings"]
    n = result["torch_threads"]
    fig.suptitle(title or f"digits: {s['budget_s']:g} s training budget per model, {n} torch "
                 f"thread{'s' * (n != 1)}, {result['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: dict, out: str | Path, table_fn=None, **chart_kw) -> list[Path]:
    """<out>.json, <out>.md (the command, then `table_fn`'s table: this module's by default) and
    <out>.png (`chart`); benchmarks.time_to_fid writes its outputs here too."""
    base = Path(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [Path(f"{base}{ext}") for ext in (".json", ".md", ".png")]
    paths[0].write_text(json.dumps(result, indent=1))
    paths[1].write_text(f"`{result['command']}`\n\n{(table_fn or table)(result)}\n")
    chart(result, paths[2], **chart_kw)
    return paths


def run(budget: float, out: str | Path | None = None, eval_samples: int = 500, points: int = 6,
        threads: int | None = None, preset: str = "digits", overrides: list[str] | None = None,
        sample_steps: int | None = None, calib_steps: int = 20, seed: int | None = None,
        device: str = "auto", eval_batch: int = 500, steps: list[int] | None = None, command: str = "",
        log=print) -> dict:
    """Train and evaluate RIN, then the U-Net. `steps` = [RIN's, U-Net's] fixes the step counts
    (e.g. to repeat a run exactly) instead of calibrating them to the budget."""
    from rinkit.train.trainer import pick_device
    if budget <= 0 or eval_samples < 2 or points < 1 or calib_steps < 1:
        raise RinkitError("--budget must be > 0, --eval-samples >= 2, --points and --calib-steps >= 1")
    if steps is not None and (len(steps) != 2 or min(steps) < 1):
        raise RinkitError("--steps takes two step counts >= 1: RIN's and the U-Net's")
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    pairs = models_for(preset, overrides or [])
    seed = pairs[0][1].train.seed if seed is None else seed
    sampler_over = {"steps": sample_steps} if sample_steps else {}
    s = pairs[0][1].sampler.model_copy(update=sampler_over)
    sampler = f"{s.name.upper()} {s.steps} steps" + (f", {s.ddpm_variance} variance" if s.name == "ddpm" else "") \
        + (f", guidance {s.guidance:g}" if s.guidance else "")
    start = {"loadavg": loadavg(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    rows = [run_model(e, cfg, dev, seed, budget, points, eval_samples, calib_steps, sampler_over,
                      eval_batch, steps[i] if steps else None, log) for i, (e, cfg) in enumerate(pairs)]
    try:
        from rinkit_plugins.image.digits_metric import DigitsMetric
        reference = DigitsMetric.reference_points(eval_samples)
    except ImportError:
        reference = None
    t = pairs[0][1].train
    result = {
        "command": command, "date_utc": start["date_utc"], "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "machine": {**machine(), "loadavg_start": start["loadavg"], "loadavg_end": loadavg()},
        "settings": {"budget_s": budget, "eval_samples": eval_samples, "points": points, "preset": preset,
                     "overrides": overrides or [], "seed": seed, "calib_steps": None if steps else calib_steps,
                     "fixed_steps": steps,
                     "sampler": sampler, "sample_steps": s.steps, "batch": t.batch_size,
                     "optimizer": t.optimizer, "lr": t.lr, "warmup_steps": t.warmup_steps, "decay": t.decay,
                     "weight_decay": t.weight_decay, "grad_clip": t.grad_clip, "ema_decay": t.ema_decay,
                     "order": "sequential, " + " then ".join(r["name"] for r in rows)},
        "flops_note": "training FLOPs = examples x (3 x forward FLOPs per example + RIN's no-grad "
                      "self-conditioning forward); FlopCounterMode formulas (matmul, conv, attention; "
                      "2 FLOPs per multiply-add); optimizer, EMA and elementwise ops not counted",
        "reference": reference, "models": rows,
    }
    if out:
        write_outputs(result, out)
    return result


def common_arguments(ap, out: str, eval_samples: int) -> None:
    """The options this benchmark shares with benchmarks.time_to_fid."""
    ap.add_argument("--budget", type=float, default=600, help="training seconds per model (default 600)")
    ap.add_argument("--eval-samples", type=int, default=eval_samples,
                    help=f"samples per digits-FID evaluation ({eval_samples})")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=out, help="writes OUT.json, OUT.md, OUT.png")
    ap.add_argument("--preset", default="digits")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides of the preset (the module docstring says which model each reaches)")
    ap.add_argument("--sample-steps", type=int, default=None, help="sampler steps (default: the preset's, 50)")
    ap.add_argument("--calib-steps", type=int, default=20, help="timed steps to estimate steps/s (20)")
    ap.add_argument("--seed", type=int, default=None, help="default: the preset's train.seed")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--eval-batch", type=int, default=500, help="sampling batch size")


def cli(prog: str, description: str, argv: list[str] | None, add_arguments, call, table_fn) -> int:
    """The command line of both digits benchmarks (this one and benchmarks.time_to_fid): parse,
    run `call(args, command, log)`, print `table_fn`'s table and the files written."""
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        res = call(args, f"python -m {prog} " + shlex.join(argv), lambda m: print(m, file=sys.stderr, flush=True))
    except RinkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table_fn(res))
    print(f"\nwrote {args.out}.json, {args.out}.md, {args.out}.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    def add(ap):
        common_arguments(ap, out="benchmarks/results/quality_digits", eval_samples=500)
        ap.add_argument("--points", type=int, default=6, help="evenly spaced evaluations per model (6)")
        ap.add_argument("--steps", type=int, nargs=2, default=None, metavar=("RIN", "UNET"),
                        help="fixed step counts instead of calibrating to --budget (to repeat a run exactly)")

    def call(a, command, log):
        return run(a.budget, a.out, a.eval_samples, a.points, a.threads, a.preset, a.overrides, a.sample_steps,
                   a.calib_steps, a.seed, a.device, a.eval_batch, a.steps, command, log=log)
    return cli("benchmarks.quality", "RIN vs an ADM-style U-Net on digits at equal wall-clock: digits-FID vs "
               "training compute", argv, add, call, table)


if __name__ == "__main__":
    raise SystemExit(main())
