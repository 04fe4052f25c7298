"""The training loop (EDM2-style: one short function you can read top to bottom).

    config -> modality plugin (tokenizer, dataset) -> RIN denoiser + EMA copy + optimizer
    loop: batch -> diffusion loss (two-pass latent self-conditioning) -> clip -> step -> EMA
          -> stats.jsonl / progress bar -> checkpoints (atomic) -> sample grids
    end:  final checkpoint, a PNG grid of EMA samples (one row per class), optional metrics

Runs live in `runs/<name>/`; a run folder that already holds checkpoints of the same config is
resumed from its newest one (exactly: RNG states and the data position are restored)."""
from __future__ import annotations

import json
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from rinkit.build import build_diffusion, build_model, sample_shape
from rinkit.config import Config, modality_options, validate
from rinkit.diffusion import sample
from rinkit.errors import RinkitError
from rinkit.registry import get_dataset, get_modality, metrics
from rinkit.train.checkpoint import Checkpoint, list_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint
from rinkit.train.data import StepBatchSampler
from rinkit.train.optim import EMA, build_optimizer, lr_factor


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RinkitError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": json.dumps(np.random.get_state()[1].tolist()),
          "numpy_pos": int(np.random.get_state()[2]), "python": repr(random.getstate())}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            st[f"cuda{i}"] = s
    return st


def set_rng_state(st: dict) -> None:
    import ast
    if "torch" in st:
        torch.set_rng_state(st["torch"])
    if "numpy" in st:
        np.random.set_state(("MT19937", np.array(json.loads(st["numpy"]), dtype=np.uint32), st["numpy_pos"], 0, 0.0))
    if "python" in st:
        random.setstate(ast.literal_eval(st["python"]))
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        if f"cuda{i}" in st:
            torch.cuda.set_rng_state(st[f"cuda{i}"], i)


def _same_run(a: dict, b: dict) -> str | None:
    """First differing key outside `train`/`sampler`/`name` (those may change on resume)."""
    for section in ("modality", "modality_options", "data", "model", "diffusion"):
        if a.get(section) != b.get(section):
            if isinstance(a.get(section), dict) and isinstance(b.get(section), dict):
                for k in sorted(set(a[section]) | set(b[section])):
                    if a[section].get(k) != b[section].get(k):
                        return f"{section}.{k}"
            return section
    return None


def balanced_labels(n_per_class: int, num_classes: int, device) -> torch.Tensor:
    return torch.arange(num_classes, device=device).repeat_interleave(n_per_class)


@torch.no_grad()
def generate(model, cfg: Config, n: int, labels: torch.Tensor | None, seed: int, device,
             batch_size: int = 256, context: torch.Tensor | None = None,
             **sampler_overrides) -> torch.Tensor:
    """n samples with the config's sampler (overridable), in batches, deterministic in seed.
    `context` (n examples' clean conditioning, for modalities with `condition`) is sliced along."""
    diffusion, shape = build_diffusion(cfg), sample_shape(cfg)
    s = cfg.sampler.model_copy(update=sampler_overrides)
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for i in range(0, n, batch_size):
        lab = labels[i:i + batch_size] if labels is not None else None
        ctx = context[i:i + batch_size].to(device) if context is not None else None
        b = min(batch_size, n - i)
        noise_gen = torch.Generator(device="cpu").manual_seed(int(torch.randint(2 ** 62, (1,), generator=g)))
        x = sample(model, diffusion, (b, *shape), lab, steps=s.steps, sampler=s.name, eta=s.eta,
                   guidance=s.guidance if cfg.model.num_classes else 0.0, ddpm_variance=s.ddpm_variance,
                   context=ctx, generator=noise_gen, device=device)
        out.append(x.cpu())
    return torch.cat(out)


def conditioning_examples(cfg: Config, n: int, labels: torch.Tensor | None = None, split: str = "test"):
    """For modalities that condition on clean data (e.g. given video frames): the contexts of n
    held-out examples (of the requested labels where given), else None."""
    modality = get_modality(cfg.modality)
    if modality.condition is None:
        return None
    opts = modality_options(cfg)
    ds = get_dataset(cfg.modality, cfg.data.dataset).build(opts, cfg.data, split)
    if labels is None:
        idx = [i % len(ds) for i in range(n)]
    else:
        by_label: dict[int, list[int]] = {}
        for i in range(len(ds)):
            by_label.setdefault(int(ds[i][1]), []).append(i)
        seen: dict[int, int] = {}
        idx = []
        for lab in labels.tolist():
            pool = by_label.get(int(lab)) or list(range(len(ds)))
            idx.append(pool[seen.get(lab, 0) % len(pool)])
            seen[lab] = seen.get(lab, 0) + 1
    x = torch.stack([ds[i][0] for i in idx])
    return modality.condition(x, opts)[1]


def write_samples(model, cfg: Config, path: Path, device, seed: int = 0, per_class: int = 10) -> list[Path]:
    modality = get_modality(cfg.modality)
    k = cfg.model.num_classes
    labels = balanced_labels(per_class, k, device) if k else None
    n = per_class * k if k else 64
    context = conditioning_examples(cfg, n, labels.cpu() if labels is not None else None)
    x = generate(model, cfg, n, labels, seed, device, context=context)
    return modality.write_samples(x, labels.cpu() if labels is not None else None, path,
                                  modality_options(cfg), context=context)


def evaluate_metrics(model, cfg: Config, n: int, device, seed: int = 1) -> dict[str, float]:
    """Every metric registered for this modality and dataset, on n EMA samples."""
    specs = [m for m in metrics(cfg.modality).values() if not m.tags or cfg.data.dataset in m.tags]
    if not specs or n <= 0:
        return {}
    k = cfg.model.num_classes
    labels = balanced_labels(-(-n // k), k, device)[:n] if k else None
    context = conditioning_examples(cfg, n, labels.cpu() if labels is not None else None)
    x = generate(model, cfg, n, labels, seed, device, context=context)
    out: dict[str, float] = {}
    opts = modality_options(cfg)
    for spec in specs:
        out.update(spec.build(opts, cfg.data)(x, labels.cpu() if labels is not None else None))
    return out


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[float]
    checkpoint: Path | None
    samples: list[Path]
    metrics: dict[str, float]


class _Stop:
    """SIGTERM (what cluster schedulers send): finish the step, checkpoint, exit cleanly."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, lambda *_: setattr(self, "requested", True))
        except ValueError:  # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def resolve_run_dir(cfg: Config, run_dir: str | Path | None, fresh: bool) -> Path:
    base = Path(run_dir) if run_dir else Path("runs") / cfg.name
    if fresh and list_checkpoints(base):
        i = 1
        while list_checkpoints(base.with_name(f"{base.name}-{i}")):
            i += 1
        base = base.with_name(f"{base.name}-{i}")
    return base


def train(cfg: Config, run_dir: str | Path | None = None, resume: str | Path | None = None,
          fresh: bool = False, progress: bool = True, eval_samples: int | None = None,
          max_steps: int | None = None) -> TrainResult:
    """Train (or resume) a run. `max_steps` stops early (for tests / interrupted runs)."""
    t_cfg = cfg.train
    device = pick_device(t_cfg.device)
    run = resolve_run_dir(cfg, run_dir, fresh)
    modality, opts = get_modality(cfg.modality), modality_options(cfg)
    ds_spec = get_dataset(cfg.modality, cfg.data.dataset)
    if cfg.model.num_classes and ds_spec.num_classes and cfg.model.num_classes < ds_spec.num_classes:
        raise RinkitError(f"model.num_classes={cfg.model.num_classes} but dataset {ds_spec.name!r} "
                          f"has {ds_spec.num_classes} classes")

    ckpt: Checkpoint | None = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
    elif list_checkpoints(run):
        ckpt = load_checkpoint(list_checkpoints(run)[-1])
    if ckpt is not None:
        diff = _same_run(ckpt.config, cfg.to_dict())
        if diff:
            raise RinkitError(f"{run} holds a run with a different config ({diff} differs); "
                              "use --fresh or --run-dir for a new run")

    torch.manual_seed(t_cfg.seed)
    np.random.seed(t_cfg.seed % 2 ** 32)
    random.seed(t_cfg.seed)
    model = build_model(cfg).to(device)
    ema = EMA(model, t_cfg.ema_decay)
    opt = build_optimizer(model, t_cfg.optimizer, t_cfg.lr, t_cfg.weight_decay, t_cfg.betas)
    diffusion = build_diffusion(cfg)
    step = 0
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt.model)
            ema.model.load_state_dict(ckpt.ema or ckpt.model)
        except RuntimeError as e:
            raise RinkitError(f"checkpoint weights do not fit the model: {str(e).splitlines()[0]}") from None
        if ckpt.optimizer is not None:
            opt.load_state_dict(ckpt.optimizer)
        set_rng_state(ckpt.rng)
        step = ckpt.step
        if progress:
            print(f"resuming {run} from step {step}")

    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(cfg.to_yaml())
    dataset = ds_spec.build(opts, cfg.data, "train")
    end = t_cfg.steps if max_steps is None else min(t_cfg.steps, max_steps)
    sampler = StepBatchSampler(len(dataset), t_cfg.batch_size, t_cfg.seed, start_step=step, total_steps=end)
    # The loader gets its own generator: creating its iterator must not consume the global RNG,
    # whose state a resumed run restores (exact resume).
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.data.num_workers > 0,
                        generator=torch.Generator().manual_seed(t_cfg.seed + step))

    def save() -> Path:
        path = save_checkpoint(run / "checkpoints" / f"step-{step:07d}.safetensors", Checkpoint(
            cfg.to_dict(), step, model.state_dict(), ema.model.state_dict(), opt.state_dict(), rng_state()))
        prune_checkpoints(run, t_cfg.keep_last)
        return path

    losses: list[float] = []
    last_ckpt, bad, window, t0 = None, 0, [], time.perf_counter()
    bar = None
    if progress and step < end:
        from tqdm import tqdm
        bar = tqdm(total=end, initial=step, desc=f"train {cfg.name}", dynamic_ncols=True)
    stats = open(run / "stats.jsonl", "a")
    model.train()
    try:
        with _Stop() as stop:
            for x, y in loader:
                x = x.to(device, non_blocking=True)
                labels = y.to(device) if cfg.model.num_classes else None
                x, context, mask = modality.condition(x, opts) if modality.condition else (x, None, None)
                for g in opt.param_groups:
                    g["lr"] = t_cfg.lr * lr_factor(step, t_cfg.steps, t_cfg.warmup_steps, t_cfg.decay)
                loss = diffusion.loss(model, x, labels, context, mask)
                opt.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    bad += 1
                    print(f"step {step}: non-finite loss, step skipped ({bad} in a row)")
                    if bad >= t_cfg.max_bad_steps:
                        raise RinkitError(f"{bad} non-finite losses in a row at step {step}; "
                                          "lower train.lr or check the data (last good checkpoint kept)")
                    step += 1
                    continue
                bad = 0
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), t_cfg.grad_clip or float("inf"))
                opt.step()
                ema.update(model)
                step += 1
                losses.append(loss.item())
                window.append(loss.item())
                if bar is not None:
                    bar.update(1)
                if step % t_cfg.log_every == 0 or step == end:
                    dt = time.perf_counter() - t0
                    rec = {"step": step, "loss": float(np.mean(window)), "lr": opt.param_groups[0]["lr"],
                           "grad_norm": float(gnorm), "examples_per_s": len(window) * t_cfg.batch_size / dt}
                    stats.write(json.dumps(rec) + "\n")
                    stats.flush()
                    if bar is not None:
                        bar.set_postfix(loss=f"{rec['loss']:.4f}")
                    window, t0 = [], time.perf_counter()
                if step % t_cfg.ckpt_every == 0:
                    last_ckpt = save()
                if t_cfg.sample_every and step % t_cfg.sample_every == 0:
                    write_samples(ema.model, cfg, run / "samples" / f"step-{step:07d}", device)
                    model.train()
                if stop.requested:
                    break
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if step > 0 and (last_ckpt is None or not last_ckpt.name.endswith(f"{step:07d}.safetensors")):
            save()
        stats.close()
        raise
    finally:
        if bar is not None:
            bar.close()
    stats.close()
    if step > 0 and (last_ckpt is None or f"{step:07d}" not in last_ckpt.name):
        last_ckpt = save()
    if stop.requested:
        return TrainResult(run, step, losses, last_ckpt, [], {})
    samples = write_samples(ema.model, cfg, run / "samples", device) if step >= end else []
    results: dict[str, float] = {}
    n_eval = t_cfg.eval_samples if eval_samples is None else eval_samples
    if n_eval and step >= end:
        results = evaluate_metrics(ema.model, cfg, n_eval, device)
        (run / "metrics.json").write_text(json.dumps({"step": step, "samples": n_eval, **results}, indent=1))
    return TrainResult(run, step, losses, last_ckpt, samples, results)


def load_for_sampling(path: str | Path, device: str = "auto"):
    """Checkpoint -> (EMA denoiser in eval mode, its Config, device)."""
    ckpt = load_checkpoint(path, weights_only=True)
    cfg = validate(ckpt.config)
    dev = pick_device(device)
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt.ema or ckpt.model)
    except RuntimeError as e:
        raise RinkitError(f"checkpoint weights do not fit its config: {str(e).splitlines()[0]}") from None
    return model.to(dev).eval(), cfg, dev
