"""Time to digits-FID (issue 7, item 7(b)): rinkit vs rin-pytorch (PyPI 0.8.0, in its own virtual
environment) trained on the built-in digits in one run, alternating, at the same architecture
settings, each library otherwise at its defaults; the wall-clock each needs to reach the same
digits-FID.

    python -m benchmarks.time_to_fid --budget 600 --rounds 10 --out benchmarks/results/time_to_fid_digits

writes <out>.json (every evaluation, the settings, the machine, the command), <out>.md (a table
of time-to-target) and <out>.png (digits-FID vs training seconds and vs training TFLOPs).

Protocol
* Settings: the `digits` preset with `model.num_classes=0`, because rin-pytorch has no class
  conditioning; rin-pytorch is built at that preset's patch size, interface width, latent width,
  number of latents, blocks and layers per block, and trained at its batch size.
* Everything else at each library's defaults. rinkit: the preset's recipe (`rinkit train`'s:
  v-prediction, sigmoid(-3,3,0.9) schedule, self-conditioning 0.9, AdamW 2e-3 with warm-up and
  cosine decay, EMA 0.995, DDPM sampler with the posterior variance). rin-pytorch: its Trainer's
  recipe (Adam 1e-4, clip 1, EMA 0.995 every 10 steps; v-objective, sigmoid schedule, min-SNR
  weights, self-conditioning 0.9) and its default DDIM sampler (`--rinpt-sampler ddpm` for its
  DDPM one; `--rinpt-other-sampler` also records the other one each round, `--rinpt-online` its
  weights without the EMA). Both sample with the preset's step count (50; rin-pytorch's own
  default is 1,000).
* rinkit's cosine schedule needs a step count: it is calibrated to the budget as in
  benchmarks.quality (steps/s on a throwaway copy x budget). Training runs in `--rounds` rounds:
  rinkit trains the round's share of its steps, then rin-pytorch trains for the same measured
  seconds, so both get the same wall-clock at every evaluation and machine noise hits both. After
  each round both EMA models draw `--eval-samples` samples (same count, seed 1) and rinkit's
  digits-FID scores both sets (`rinkit.evaluate.metrics.score_samples`). Training seconds exclude
  evaluation.
* Time to FID F: the training seconds at the first evaluation with digits-FID <= F (so resolved to
  one round, budget / rounds). The headline target is the best FID both reach: the larger of the
  two models' best values. A ladder of fixed targets is reported too; where only rinkit reaches
  one, the speed-up is at least rin-pytorch's whole training time over rinkit's time to it.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.measure import loadavg, machine
from rinkit.errors import RinkitError

LADDER = (200.0, 100.0, 50.0, 30.0, 20.0, 15.0)


def time_to(points: list[dict], target: float) -> float | None:
    """Training seconds at the first evaluation at or below `target`, None if none is."""
    return next((p["train_seconds"] for p in points if p["digits_fid"] <= target), None)


def summarize(models: list[dict]) -> dict:
    """The common target (the best FID both reach), each model's time to it and the speed-up of
    the first model (rinkit) over the second, and the same for a ladder of fixed targets. Where
    only rinkit reaches a target, the speed-up is at least rin-pytorch's whole training time over
    rinkit's time to it (`at_least`)."""
    ours, theirs = models
    best = [min(p["digits_fid"] for p in m["points"]) for m in models]
    target = max(best)
    t = [time_to(ours["points"], target), time_to(theirs["points"], target)]
    their_total = theirs["points"][-1]["train_seconds"]
    ladder = []
    for f in sorted({*LADDER, target}, reverse=True):
        a, b = time_to(ours["points"], f), time_to(theirs["points"], f)
        ladder.append({"target": f, "seconds": [a, b], "speedup": b / a if a and b else None,
                       "at_least": their_total / a if a and b is None else None})
    return {"target": target, "best": best, "seconds": t, "speedup": t[1] / t[0] if t[0] and t[1] else None,
            "ladder": ladder}


def table(result: dict) -> str:
    s, sm = result["settings"], result["summary"]
    names = [m["name"] for m in result["models"]]
    extra = [k for k in ("digits_fid_other_sampler", "digits_fid_online") if k in result["models"][1]["points"][0]]
    heads = {"digits_fid_other_sampler": "its other sampler", "digits_fid_online": "without its EMA"}
    lines = [f"| round | {names[0]}: step | seconds | digits-FID | {names[1]}: step | seconds | digits-FID |"
             + "".join(f" {heads[k]} |" for k in extra), "|---|---|---|---|---|---|---|" + "---|" * len(extra)]
    for i, (a, b) in enumerate(zip(*(m["points"] for m in result["models"]))):
        lines.append(f"| {i + 1} | {a['step']} | {a['train_seconds']:.1f} | {a['digits_fid']:.2f} | "
                     f"{b['step']} | {b['train_seconds']:.1f} | {b['digits_fid']:.2f} |"
                     + "".join(f" {b[k]:.2f} |" for k in extra))

    def sec(x):
        return "not reached" if x is None else f"{x:.0f} s"
    lines += ["", "| target digits-FID | " + " | ".join(names) + " | speed-up |", "|---|---|---|---|"]
    for row in sm["ladder"]:
        sp = f"{row['speedup']:.2f}x" if row["speedup"] else f"> {row['at_least']:.1f}x" if row["at_least"] else ""
        mark = " (common target)" if row["target"] == sm["target"] else ""
        lines.append(f"| {row['target']:.4g}{mark} | {sec(row['seconds'][0])} | {sec(row['seconds'][1])} | {sp} |")
    sp = "n/a" if sm["speedup"] is None else f"{sm['speedup']:.2f}x"
    per_round = result["models"][0]["points"][-1]["train_seconds"] / s["rounds"]
    notes = ["",
             (f"Common target = the best digits-FID both reach = {sm['target']:.2f} (best: {names[0]} "
              f"{sm['best'][0]:.2f}, {names[1]} {sm['best'][1]:.2f}); time to it: {sec(sm['seconds'][0])} vs "
              f"{sec(sm['seconds'][1])}, speed-up {sp}. Times are resolved to one round "
              f"({per_round:.0f} s on average)."),
             (f"digits-FID of {s['eval_samples']} EMA samples (seed 1), scored by rinkit for both; "
              f"samplers: {s['samplers'][0]} / {s['samplers'][1]}. Seconds exclude evaluation.")]
    for m in result["models"]:
        g = m["gflops_per_example"]
        notes.append(f"* {m['name']}: {m['params']:,} params, training {g['train'] * 1e3:.2f} MFLOPs/example; "
                     f"{m['recipe']}")
    mach = result["machine"]
    notes.append(f"* {mach.get('gpu') or mach['cpu']}, {result['torch_threads']} torch threads, "
                 f"{mach['cores']} cores, torch {mach['torch']}, device {result['device']}; load average "
                 f"{mach['loadavg_start']} at start, {mach['loadavg_end']} at end")
    return "\n".join(lines + notes)


def write_outputs(result: dict, out: str | Path) -> list[Path]:
    from benchmarks.quality import write_outputs as write
    s = result["settings"]
    return write(result, out, table, title=f"digits, unconditional: time to digits-FID, {s['budget_s']:g} s per "
                 f"model, alternating, {result['torch_threads']} torch threads", target=result["summary"]["target"])


def run(budget: float, rounds: int = 10, out: str | Path | None = None, eval_samples: int = 300,
        preset: str = "digits", overrides: list[str] | None = None, sample_steps: int | None = None,
        seed: int | None = None, device: str = "auto", threads: int | None = None,
        rinpt_python: str | None = None, rinpt_lr: float = 1e-4, rinpt_sampler: str = "ddim",
        rinpt_other_sampler: bool = False, rinpt_online: bool = False, calib_steps: int = 20,
        eval_batch: int = 500, command: str = "", log=print) -> dict:
    from benchmarks.models import Entry
    from benchmarks.quality import Training, calibrate, flops_per_example
    from benchmarks.rinpt import RemoteFit
    from rinkit.build import build_diffusion, build_model, resolve
    from rinkit.config import load_config
    from rinkit.evaluate.metrics import evaluate_metrics, score_samples
    from rinkit.train.distributed import pick_device
    if budget <= 0 or rounds < 1 or eval_samples < 2 or calib_steps < 1 or rinpt_lr <= 0:
        raise RinkitError("--budget and --rinpt-lr must be > 0, --rounds and --calib-steps >= 1, "
                          "--eval-samples >= 2")
    if rinpt_sampler not in ("ddim", "ddpm"):
        raise RinkitError(f"--rinpt-sampler must be ddim or ddpm, not {rinpt_sampler!r}")
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    cfg = resolve(load_config(preset, None, ["model.num_classes=0", *(overrides or [])]))  # rin-pytorch: no classes
    if cfg.modality != "image" or cfg.data.dataset != "digits":
        raise RinkitError(f"time-to-FID needs the built-in digits (digits-FID); preset {preset!r} is "
                          f"{cfg.modality} / {cfg.data.dataset}")
    seed = cfg.train.seed if seed is None else seed
    batch = cfg.train.batch_size
    steps = sample_steps or cfg.sampler.steps
    s = cfg.sampler
    variance = f", {s.ddpm_variance} variance" if s.name == "ddpm" else ""
    samplers = [f"rinkit {s.name.upper()} {steps} steps{variance}", f"rin-pytorch {rinpt_sampler.upper()} {steps} steps"]
    entry = Entry(f"rinkit {cfg.name}", "rin", lambda: build_model(cfg), build_diffusion(cfg), cfg.sample_shape, 0)
    start = {"loadavg": loadavg(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}

    with tempfile.TemporaryDirectory(prefix="rinkit-ttf-") as tmp:
        ds = cfg.dataset.build(cfg.options, cfg.data, "train")
        data = Path(tmp) / "train.npy"
        np.save(data, torch.stack([ds[i][0] for i in range(len(ds))]).numpy())
        theirs = RemoteFit(cfg, data, batch, str(dev), steps, seed, lr=rinpt_lr,
                           use_ddim=rinpt_sampler == "ddim", python=rinpt_python)
        try:
            flops = flops_per_example(entry, batch)
            their_flops = theirs.info()
            rate = calibrate(entry, cfg, dev, seed, calib_steps)
            total = max(rounds, int(budget * rate))
            ours = Training(entry, cfg, dev, seed, total)
            log(f"{entry.name}: {ours.params / 1e6:.3f}M params, {rate:.2f} steps/s -> {total} steps; "
                f"rin-pytorch: {theirs.params / 1e6:.3f}M params")
            rows: list[list[dict]] = [[], []]
            secs = [0.0, 0.0]

            def their_fid(**kw) -> tuple[float, float]:
                """rin-pytorch's samples now (EMA, its sampler unless `kw` says otherwise), scored by
                rinkit's metric: (digits-FID, sampling seconds)."""
                x, took = theirs.sample(eval_samples, Path(tmp) / "samples.npy", seed=1, batch=eval_batch, **kw)
                return score_samples(cfg, x)["digits_fid"], took

            for k in range(1, rounds + 1):
                first = len(ours.losses)
                dt = ours.train_until(round(total * k / rounds))
                secs[0] += dt
                r = theirs.train_for(dt)  # the same wall-clock, right after ours
                secs[1] += r["s"]
                t0 = time.perf_counter()
                res = evaluate_metrics(ours.ema.model, cfg, eval_samples, dev, seed=1, batch_size=eval_batch,
                                       steps=steps)
                e0 = time.perf_counter() - t0
                fid1, e1 = their_fid()
                other = {}
                if rinpt_other_sampler:  # its other sampler on the same model, for the record only
                    other["digits_fid_other_sampler"] = their_fid(use_ddim=rinpt_sampler != "ddim")[0]
                if rinpt_online:  # its trained weights without the EMA (its EMA warms up over ~3k steps)
                    other["digits_fid_online"] = their_fid(online=True)[0]
                window = ours.losses[first:] or [float("nan")]
                rows[0].append({"step": ours.step, "train_seconds": secs[0], "examples": ours.step * batch,
                                "train_tflops": ours.step * batch * flops["train"] / 1e12,
                                "loss": float(np.mean(window)), "digits_fid": res["digits_fid"], "eval_seconds": e0})
                rows[1].append({"step": r["steps"], "train_seconds": secs[1], "examples": r["examples"],
                                "train_tflops": r["examples"] * their_flops["train"] / 1e12, "loss": r["loss"],
                                "digits_fid": fid1, "eval_seconds": e1, **other})
                log(f"round {k}/{rounds}: rinkit step {ours.step} {secs[0]:.0f} s FID {res['digits_fid']:.2f} | "
                    f"rin-pytorch step {r['steps']} {secs[1]:.0f} s FID {fid1:.2f}"
                    + "".join(f", {key.removeprefix('digits_fid_')} {v:.2f}" for key, v in other.items()))
        finally:
            theirs.close()

    models = [
        {"name": entry.name, "params": ours.params, "total_steps": total, "calibrated_steps_per_s": rate,
         "gflops_per_example": {k: v / 1e9 for k, v in flops.items()}, "nonfinite_steps": ours.bad,
         "recipe": f"{cfg.train.optimizer} lr {cfg.train.lr:g}, {cfg.train.warmup_steps} warm-up steps, "
                   f"{cfg.train.decay} to {total} steps, pred {cfg.diffusion.pred}, "
                   f"{cfg.diffusion.train_schedule}, self-cond {cfg.diffusion.self_cond_rate:g}",
         "points": rows[0]},
        {"name": "rin-pytorch 0.8.0", "params": theirs.params, "total_steps": rows[1][-1]["step"],
         "gflops_per_example": {k: their_flops[k] / 1e9 for k in ("forward", "self_cond_forward", "train")},
         "recipe": f"Adam lr {rinpt_lr:g} (its Trainer's default 1e-4), clip 1, EMA 0.995/10 steps, v-objective, "
                   "sigmoid schedule, min-SNR 5, self-cond 0.9", "points": rows[1]},
    ]
    result = {
        "command": command, "date_utc": start["date_utc"], "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "machine": {**machine(), "loadavg_start": start["loadavg"], "loadavg_end": loadavg()},
        "settings": {"budget_s": budget, "rounds": rounds, "eval_samples": eval_samples, "preset": preset,
                     "overrides": ["model.num_classes=0", *(overrides or [])], "seed": seed, "batch": batch,
                     "sample_steps": steps, "samplers": samplers, "calib_steps": calib_steps,
                     "order": "alternating rounds: rinkit trains, then rin-pytorch for the same seconds"},
        "models": models, "summary": summarize(models),
    }
    if out:
        write_outputs(result, out)
    return result


def main(argv: list[str] | None = None) -> int:
    from benchmarks.quality import cli, common_arguments

    def add(ap):
        common_arguments(ap, out="benchmarks/results/time_to_fid_digits", eval_samples=300)
        ap.add_argument("--rounds", type=int, default=10, help="alternating rounds, one evaluation each (10)")
        ap.add_argument("--rinpt-python", default=None, help="python of the venv with rin-pytorch "
                        "(default: $RINPT_PYTHON or /tmp/rinpt/bin/python)")
        ap.add_argument("--rinpt-lr", type=float, default=1e-4, help="rin-pytorch's Adam LR (its default 1e-4)")
        ap.add_argument("--rinpt-sampler", default="ddim", help="ddim (its default) or ddpm")
        ap.add_argument("--rinpt-other-sampler", action="store_true", help="also score rin-pytorch's other "
                        "sampler each round (recorded, not used for time-to-FID)")
        ap.add_argument("--rinpt-online", action="store_true", help="also score rin-pytorch's weights without "
                        "its EMA each round (recorded, not used for time-to-FID)")

    def call(a, command, log):
        return run(a.budget, a.rounds, a.out, a.eval_samples, a.preset, a.overrides, a.sample_steps, a.seed,
                   a.device, a.threads, a.rinpt_python, a.rinpt_lr, a.rinpt_sampler, a.rinpt_other_sampler,
                   a.rinpt_online, a.calib_steps, a.eval_batch, command, log=log)
    return cli("benchmarks.time_to_fid", "rinkit vs rin-pytorch on digits, alternating: wall-clock to the same "
               "digits-FID", argv, add, call, table)


if __name__ == "__main__":
    raise SystemExit(main())
