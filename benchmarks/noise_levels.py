"""Where along the noise levels one model denoises better than another: the held-out denoising
loss of trained models, level by level.

    python -m benchmarks.noise_levels --preset fashion-mnist --weights /tmp/w_rin /tmp/w_unet \\
        --out benchmarks/results/noise_levels_fashion_3600

A training loss averaged over all noise levels cannot say which levels a model misses, and FID
is decided by a few of them (the coarse layout at low SNR, edges and texture at high SNR). This
measures, for each of `--levels` equal-width bins of the training time t ~ U(0, 1) (evaluated at
the bin's midpoint, so the bins' mean is the held-out value of the training objective), on
`--examples` images of each `--split`:

* the loss the models were trained on (the preset's target, e.g. the v-prediction MSE,
  unweighted), and
* the x_0 error in data units (MSE of the unclipped x_0 estimate, data in [-1, 1]), which
  reads the same whatever the prediction target.

Every model sees the same images, labels (the true class, never the dropped one), noise and
levels. Weights are the EMA state dicts
`benchmarks.quality --save DIR` writes (`rin-ema.pt`, `unet-ema.pt`); the models are built as
`benchmarks.quality.models_for` builds them from `--preset` and `--set`, so pass the overrides
the runs were trained with. A model with self-conditioning (rate > 0) is measured as its
training loss measures the kept examples: its second pass, given the first pass's latents at the
same level.

Writes <out>.json (per level, per model and split: mean and standard error), <out>.md (a table)
and <out>.png (the loss vs log-SNR per model, and each model's difference to the first).
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.measure import loadavg, machine
from rinkit.errors import RinkitError


def level_grid(diffusion, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, gamma) at the midpoints of `levels` equal bins of t in (0, 1)."""
    t = (torch.arange(levels, dtype=torch.float64) + 0.5) / levels
    return t.float(), diffusion.train_schedule(t.float())


@torch.no_grad()
def per_level_losses(model, diffusion, x: torch.Tensor, labels: torch.Tensor | None, levels: int,
                     seed: int = 0, batch: int = 250) -> dict:
    """The model's held-out losses at each level on images `x` (data in [-1, 1]): per-example
    arrays (levels, N) of the training target's squared error and of the x_0 error in data
    units. The noise of example i at level k is fixed by (seed, k), so every model sees the same.
    `model` is called as the denoiser contract: (x_t, gamma, labels, prev_latents, context)."""
    t, gamma = level_grid(diffusion, levels)
    n = x.shape[0]
    target_err, x0_err = np.zeros((levels, n)), np.zeros((levels, n))
    for k in range(levels):
        gen = torch.Generator().manual_seed(seed * 100_003 + k)
        eps_all = torch.randn(x.shape, generator=gen)
        for s in range(0, n, batch):
            xb = x[s:s + batch]
            x0 = xb * diffusion.b
            eps = eps_all[s:s + batch]
            g = gamma[k].expand(xb.shape[0])
            x_t = diffusion.add_noise(x0, g, eps)
            lab = None if labels is None else labels[s:s + batch]
            prev = None
            if diffusion.self_cond_rate > 0:
                _, prev = model(x_t, g, lab, None, None)
            pred, _ = model(x_t, g, lab, prev, None)
            pred = pred.float()
            err = diffusion.squared_error(pred, x0, eps, g)  # the training loss's terms
            est = diffusion.to_x0_eps(pred, x_t, g, clip=False)[0]
            target_err[k, s:s + batch] = err.flatten(1).mean(1).numpy()
            x0_err[k, s:s + batch] = ((est - x0) / diffusion.b).pow(2).flatten(1).mean(1).numpy()
    return {"t": t.tolist(), "gamma": gamma.tolist(), "target_err": target_err, "x0_err": x0_err}


def _summary(arr: np.ndarray) -> dict:
    return {"mean": arr.mean(1).tolist(), "sem": (arr.std(1, ddof=1) / np.sqrt(arr.shape[1])).tolist(),
            "average": float(arr.mean())}


def split_examples(cfg, split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`n` images of the split (a fixed random subset) and their labels, unflipped."""
    ds = cfg.dataset.build(cfg.options, cfg.data, split)
    if n > len(ds):
        raise RinkitError(f"--examples {n} is more than the {split} split's {len(ds)} images")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    items = [ds[int(i)] for i in idx]
    x = torch.stack([it[0] for it in items]).float()
    labels = torch.as_tensor([int(it[1]) for it in items]) if cfg.model.num_classes else None
    return x, labels


def load_models(preset: str, overrides: list[str], weights: list[str]) -> tuple[object, list[tuple[str, object, object]]]:
    """(the resolved config, [(label, model, diffusion, kind)]) for every `<kind>-ema.pt` in the given
    folders, built as the quality benchmark builds them."""
    from benchmarks.quality import models_for
    _, pairs = models_for(preset, overrides)
    by_kind = {entry.kind: entry for entry, _ in pairs}
    out = []
    for folder in weights:
        d = Path(folder)
        found = sorted(d.glob("*-ema.pt")) if d.is_dir() else []
        if not found:
            raise RinkitError(f"{folder}: no <kind>-ema.pt weights there (benchmarks.quality --save DIR writes them)")
        for f in found:
            kind = f.name[: -len("-ema.pt")]
            if kind not in by_kind:
                raise RinkitError(f"{f}: no model of kind {kind!r} in this benchmark (kinds: {', '.join(by_kind)})")
            entry = by_kind[kind]
            model = entry.build().eval()
            try:
                state = torch.load(f, map_location="cpu", weights_only=True)
                model.load_state_dict(state)
            except Exception as e:  # a truncated file, another architecture or other overrides
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise RinkitError(f"{f}: cannot load into {entry.name} built from --preset {preset} "
                                  f"{' '.join(overrides)} ({first[:200]})") from None
            out.append((f"{entry.name} ({d.name})", model, entry.diffusion, kind))
    return pairs[0][1], out


def run(preset: str, overrides: list[str], weights: list[str], examples: int = 1000, levels: int = 16,
        splits: tuple[str, ...] = ("test",), seed: int = 0, threads: int | None = None, log=print) -> dict:
    if threads:
        torch.set_num_threads(threads)
    if levels < 2 or examples < 2:
        raise RinkitError("--levels and --examples must be at least 2")
    cfg, models = load_models(preset, overrides, weights)
    res = {"preset": preset, "overrides": overrides, "weights": weights, "examples": examples, "levels": levels,
           "seed": seed, "pred": models[0][2].pred, "machine": machine(), "torch_threads": torch.get_num_threads(),
           "loadavg_start": loadavg(), "splits": {}, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    t, gamma = level_grid(models[0][2], levels)  # the preset's schedule: the same for every model
    res.update(t=t.tolist(), gamma=gamma.tolist(), logsnr=(gamma / (1 - gamma)).log().tolist())
    for split in splits:
        x, labels = split_examples(cfg, split, examples, seed)
        rows = {}
        for label, model, diffusion, _ in models:
            t0 = time.perf_counter()
            r = per_level_losses(model, diffusion, x, labels, levels, seed)
            rows[label] = {"target": _summary(r["target_err"]), "x0": _summary(r["x0_err"]),
                           "seconds": time.perf_counter() - t0}
            log(f"{split}: {label}: mean target loss {rows[label]['target']['average']:.4f} "
                f"({rows[label]['seconds']:.0f} s)")
        res["splits"][split] = rows
    res["loadavg_end"] = loadavg()
    return res


def table(res: dict) -> str:
    lines = []
    for split, rows in res["splits"].items():
        names = list(rows)
        lines += [f"**{split} split, {res['examples']} images**: the {res['pred']}-loss (the training target, "
                  "mean over images) per level; x_0 MSE in data units in brackets", "",
                  "| t | log-SNR | " + " | ".join(names) + (" | difference to the first |" if len(names) > 1 else " |"),
                  "|---" * (2 + len(names) + (len(names) > 1)) + "|"]
        for k, t in enumerate(res["t"]):
            cells = [f"{rows[n]['target']['mean'][k]:.4f} ({rows[n]['x0']['mean'][k]:.4f})" for n in names]
            diff = [f"{rows[n]['target']['mean'][k] - rows[names[0]]['target']['mean'][k]:+.4f}" for n in names[1:]]
            lines.append(f"| {t:.3f} | {res['logsnr'][k]:+.2f} | " + " | ".join(cells)
                         + (f" | {' / '.join(diff)} |" if diff else " |"))
        avg = {n: rows[n]["target"]["average"] for n in names}
        lines.append("| **mean over t** | | " + " | ".join(
            f"**{avg[n]:.4f}** ({rows[n]['x0']['average']:.4f})" for n in names)
            + (" | " + " / ".join(f"{avg[n] - avg[names[0]]:+.4f}" for n in names[1:]) + " |" if len(names) > 1 else " |"))
        lines.append("")
    m = res["machine"]
    lines.append(f"Levels: midpoints of {res['levels']} equal bins of t ~ U(0, 1) (the mean over them is the held-out "
                 f"training objective); the same images, labels and noise for every model; seed {res['seed']}. "
                 f"{m['cpu']}, {res['torch_threads']} torch threads, load {res['loadavg_start']} at start.")
    return "\n".join(lines)


def chart(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    splits = list(res["splits"])
    single = len(next(iter(res["splits"].values()))) < 2  # one model: nothing to take a difference of
    cols = 1 if single else 2
    fig, axes = plt.subplots(len(splits), cols, figsize=(5 * cols, 3.6 * len(splits)), squeeze=False)
    x = res["logsnr"]
    for row, split in zip(axes, splits):
        rows = res["splits"][split]
        names = list(rows)
        for i, n in enumerate(names):
            m, e = np.asarray(rows[n]["target"]["mean"]), np.asarray(rows[n]["target"]["sem"])
            row[0].errorbar(x, m, yerr=e, color=f"C{i}", marker="o", ms=3, label=n)
            if i:
                base = np.asarray(rows[names[0]]["target"]["mean"])
                row[1].plot(x, m - base, color=f"C{i}", marker="o", ms=3, label=f"{n} − {names[0]}")
        row[0].set_ylabel(f"{res['pred']}-loss ({split})")
        if not single:
            row[1].axhline(0, color="grey", lw=1)
            row[1].set_ylabel("difference")
        for ax in row:
            ax.set_xlabel("log-SNR (noisier to the left)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"{res['preset']}: held-out denoising loss per noise level, {res['examples']} images", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_weights_arguments(ap: argparse.ArgumentParser, weights_help: str) -> None:
    """--preset, --set and --weights: how the tools that reload `benchmarks.quality --save` weights
    rebuild the models (see `load_models`)."""
    ap.add_argument("--preset", default="digits")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="the overrides the weights were trained with")
    ap.add_argument("--weights", nargs="+", required=True, metavar="DIR", help=weights_help)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.noise_levels", description=__doc__.split("\n")[0])
    add_weights_arguments(ap, "folders of <kind>-ema.pt files (benchmarks.quality --save)")
    ap.add_argument("--examples", type=int, default=1000, help="images per split (1000)")
    ap.add_argument("--levels", type=int, default=16, help="noise-level bins (16)")
    ap.add_argument("--splits", nargs="+", default=["test"], choices=["test", "train"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="writes OUT.json, OUT.md, OUT.png")
    a = ap.parse_args(argv)
    try:
        res = run(a.preset, a.overrides, a.weights, a.examples, a.levels, tuple(a.splits), a.seed, a.threads,
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    except RinkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res["command"] = "python -m benchmarks.noise_levels " + shlex.join(argv)
    print(table(res))
    if a.out:
        from benchmarks.quality import write_outputs
        print(f"\nwrote {', '.join(map(str, write_outputs(res, a.out, table, chart)))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
