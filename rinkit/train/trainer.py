"""The training loop (EDM2-style: one short function you can read top to bottom).

    config -> modality plugin (tokenizer, dataset) -> RIN denoiser + EMA copy + optimizer
    loop: batch -> diffusion loss (two-pass latent self-conditioning) -> clip -> step -> EMA
          -> stats.jsonl / progress bar -> checkpoints (atomic) -> sample grids
    end:  final checkpoint, a PNG grid of EMA samples (one row per class), optional metrics

Runs live in `runs/<name>/`; a run folder that already holds checkpoints of the same config is
resumed from its newest one (exactly: RNG states and the data position are restored; stats.jsonl
and TensorBoard drop what was logged after that step, so nothing is logged twice).

Signals never cut an update in half: SIGTERM and a first Ctrl-C set a flag that the loop reads
between steps (then it checkpoints and returns); a second Ctrl-C aborts without saving. A data
error saves the steps done so far before it is raised."""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from rinkit.build import build_diffusion, build_model, check_backends
from rinkit.config import Config, modality_options
from rinkit.contract import check as check_contract
from rinkit.errors import RinkitError, describe, writing
from rinkit.registry import get_dataset, get_modality
# the sampling helpers live in rinkit.sampling; re-exported here for existing imports
from rinkit.sampling import (  # noqa: F401
    balanced_labels, conditioning_examples, evaluate_metrics, generate, load_for_sampling,
    log_proxy_metrics, write_samples)
from rinkit.train import distributed
from rinkit.train.checkpoint import (Checkpoint, list_checkpoints, load_checkpoint, prune_checkpoints,
                                     remove_stale_temps, save_checkpoint)
from rinkit.train.data import StepBatchSampler
from rinkit.train.optim import EMA, apply_update, build_optimizer, set_lr


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


_RESUME_FREE = ("init",)  # model keys that only shape the weights before step 0 (a resume loads them)


def _same_run(a: dict, b: dict) -> str | None:
    """First differing key outside `train`/`sampler`/`name` (those may change on resume)."""
    a, b = ({**c, "model": {k: v for k, v in c.get("model", {}).items() if k not in _RESUME_FREE}} for c in (a, b))
    for section in ("modality", "modality_options", "data", "model", "diffusion"):
        if a.get(section) != b.get(section):
            if isinstance(a.get(section), dict) and isinstance(b.get(section), dict):
                for k in sorted(set(a[section]) | set(b[section])):
                    if a[section].get(k) != b[section].get(k):
                        return f"{section}.{k}"
            return section
    return None


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[float]
    checkpoint: Path | None
    samples: list[Path]
    metrics: dict[str, float]
    stopped: str | None = None  # "SIGTERM" / "SIGINT" when a signal ended the run early


class _Stop:
    """SIGTERM (what cluster schedulers send) and Ctrl-C: finish the step, checkpoint, return.
    On CPU the optimizer updates one tensor at a time, so an exception raised by a signal
    handler could leave a half-updated model; a flag read between steps cannot. A second Ctrl-C
    raises KeyboardInterrupt: abort now, without saving (the last checkpoint stays as it was)."""

    def __init__(self, announce: bool = True):
        self.requested: str | None = None
        self.announce = announce
        self._old: dict = {}

    def _term(self, *_):
        self.requested = self.requested or "SIGTERM"

    def _int(self, *_):
        if self.requested == "SIGINT":
            raise KeyboardInterrupt
        self.requested = "SIGINT"
        if self.announce:
            print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to abort "
                  "without saving)", file=sys.stderr, flush=True)

    def __enter__(self):
        for sig, fn in ((signal.SIGTERM, self._term), (signal.SIGINT, self._int)):
            try:
                self._old[sig] = signal.signal(sig, fn)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class _Log:
    """stats.jsonl, appended and flushed line by line. On (re)start, records after the step the
    run continues from are dropped (they are about to be redone), so no step appears twice.
    A write that fails (disk full, read-only) raises a RinkitError naming the file."""

    def __init__(self, path: Path, step: int):
        self.path = path
        with writing(path, "the training log"):
            if path.exists():
                lines = path.read_text(errors="replace").splitlines(keepends=True)
                keep = [ln for ln in lines if _logged_step(ln) is not None and _logged_step(ln) <= step]
                if len(keep) != len(lines):
                    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                    tmp.write_text("".join(ln if ln.endswith("\n") else ln + "\n" for ln in keep))
                    os.replace(tmp, path)
            self.f = open(path, "a")

    def write(self, text: str) -> None:
        with writing(self.path, "the training log"):
            self.f.write(text)

    def flush(self) -> None:
        with writing(self.path, "the training log"):
            self.f.flush()

    def close(self) -> None:
        with writing(self.path, "the training log"):
            self.f.close()


def _logged_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):  # a torn last line of a killed run
        return None


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
    """Train (or resume) a run; under `torchrun` every process calls this and they train one
    model together (rinkit/train/distributed.py). `max_steps` stops early (tests / interrupted runs)."""
    info = distributed.setup(pick_device(cfg.train.device))
    try:
        return _train(cfg, info, run_dir, resume, fresh, progress, eval_samples, max_steps)
    finally:
        distributed.teardown(info)


def _memory_gb(device: torch.device) -> float:
    """Peak memory since the last call: CUDA allocator peak on GPUs, else the process's max RSS."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
        torch.cuda.reset_peak_memory_stats(device)
        return peak
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def _tensorboard(run: Path, step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed (pip install tensorboard): logging to stats.jsonl only")
        return None
    # purge_step: TensorBoard hides events of earlier attempts from this step on (a resumed run
    # redoes them), as stats.jsonl drops its records
    return SummaryWriter(str(run / "tensorboard"), purge_step=step + 1)


def _tb_images(tb, paths: list[Path], step: int) -> None:
    if tb is None:
        return
    from PIL import Image
    for p in paths:
        if Path(p).suffix.lower() == ".png":
            tb.add_image(f"samples/{Path(p).stem}", np.asarray(Image.open(p).convert("RGB")), step,
                         dataformats="HWC")
    tb.flush()


def _train(cfg: Config, info: distributed.DistInfo, run_dir, resume, fresh, progress, eval_samples,
           max_steps) -> TrainResult:
    t_cfg = cfg.train
    device, main = info.device, info.main
    progress = progress and main
    accum = t_cfg.grad_accum
    shards = info.world_size * accum  # micro-batches per global batch
    if t_cfg.batch_size % shards:
        raise RinkitError(f"train.batch_size={t_cfg.batch_size} is not divisible by world size "
                          f"{info.world_size} x train.grad_accum {accum}")
    micro = t_cfg.batch_size // shards
    # Rank 0 decides the run folder and the checkpoint to resume; every rank follows it.
    run = Path(distributed.broadcast_object(info, str(resolve_run_dir(cfg, run_dir, fresh)) if main else None))
    modality, opts = get_modality(cfg.modality), modality_options(cfg)
    ds_spec = get_dataset(cfg.modality, cfg.data.dataset)
    if cfg.data.path and not ds_spec.reads_path:
        raise RinkitError(f"dataset {ds_spec.name!r} is built in and does not read data.path / --data "
                          f"({cfg.data.path}); choose a {cfg.modality} dataset that reads files, e.g. "
                          f"--set data.dataset=folder (`rinkit plugins` lists them)")
    if run.exists() and not run.is_dir():
        raise RinkitError(f"run folder {run} exists and is not a folder; give --run-dir a folder")
    if cfg.model.num_classes and ds_spec.num_classes and cfg.model.num_classes < ds_spec.num_classes:
        raise RinkitError(f"model.num_classes={cfg.model.num_classes} but dataset {ds_spec.name!r} "
                          f"has {ds_spec.num_classes} classes")

    ckpt_path = None
    if main:
        if resume is not None:
            ckpt_path = str(resume)
        elif list_checkpoints(run):
            ckpt_path = str(list_checkpoints(run)[-1])
    ckpt_path = distributed.broadcast_object(info, ckpt_path)
    ckpt: Checkpoint | None = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    if ckpt is not None:
        diff = _same_run(ckpt.config, cfg.to_dict())
        if diff:
            raise RinkitError(f"{run} holds a run with a different config ({diff} differs); "
                              "use --fresh or --run-dir for a new run")

    if device.type == "cuda" and t_cfg.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    precision = check_backends(cfg, device)  # xformers / bf16 / compile: one-line errors, not crashes
    amp = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")  # noqa: E731

    # The same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    torch.manual_seed(t_cfg.seed)
    np.random.seed(t_cfg.seed % 2 ** 32)
    random.seed(t_cfg.seed)
    model = build_model(cfg).to(device)
    model.core.checkpoint_blocks = t_cfg.activation_checkpointing
    ema = EMA(model, t_cfg.ema_decay)
    diffusion = build_diffusion(cfg)
    step = 0
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt.model)
            ema.model.load_state_dict(ckpt.ema or ckpt.model)
        except RuntimeError as e:
            raise RinkitError(f"checkpoint weights do not fit the model: {str(e).splitlines()[0]}") from None
        set_rng_state(ckpt.rng)
        step = ckpt.step
        old_shards = ckpt.extra.get("shards", 1)
        if progress:
            print(f"resuming {run} from step {step}")
            if old_shards != shards:
                print(f"note: the run was saved with {old_shards} micro-batches per step and now has "
                      f"{shards}: the data order continues, the noise draws differ from an uninterrupted run")
    net = distributed.wrap(model, info, t_cfg.fsdp)
    if t_cfg.fsdp:
        distributed.shard_like(ema.model, info)
    opt = build_optimizer(model, t_cfg.optimizer, t_cfg.lr, t_cfg.weight_decay, t_cfg.betas)
    if ckpt is not None and ckpt.optimizer is not None:
        distributed.load_optimizer_state(model, opt, ckpt.optimizer, t_cfg.fsdp)
    if t_cfg.compile:
        net = torch.compile(net)

    # The data are opened before anything is written: a bad data path leaves no trace on disk.
    dataset = ds_spec.build(opts, cfg.data, "train")
    n_data = getattr(dataset, "num_classes", 0)  # datasets found on disk know their classes only now
    if cfg.model.num_classes and n_data > cfg.model.num_classes:
        raise RinkitError(f"model.num_classes={cfg.model.num_classes} but the data at {cfg.data.path} "
                          f"has {n_data} classes")
    end = t_cfg.steps if max_steps is None else min(t_cfg.steps, max_steps)
    # The plugin's contract on a few examples, the metrics if this run will compute any: a
    # mistake stops here, in one line, not after the last step (and before the run folder exists).
    proxy = t_cfg.metric_every and end // t_cfg.metric_every > step // t_cfg.metric_every
    check_contract(cfg, dataset, device, metrics=bool(proxy or (
        t_cfg.eval_samples if eval_samples is None else eval_samples)))
    if main:
        with writing(run, "the run folder"):
            run.mkdir(parents=True, exist_ok=True)
        with writing(run / "config.yaml", "the run config"):
            (run / "config.yaml").write_text(cfg.to_yaml())
        stale = remove_stale_temps(run)
        if stale and progress:
            print(f"removed {len(stale)} temporary checkpoint file(s) left by writers that were killed")
    # Micro-batch j of rank r at step s is shard k = j * world + r of the global batch: the
    # sampler's "step" counts micro-steps, its rank/world split each one across processes.
    sampler = StepBatchSampler(len(dataset), micro, t_cfg.seed, start_step=step * accum, rank=info.rank,
                               world_size=info.world_size, total_steps=end * accum)
    # The loader gets its own generator: creating its iterator must not consume the global RNG.
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.data.num_workers > 0,
                        generator=torch.Generator().manual_seed(distributed.shard_seed(t_cfg.seed, step, info.rank)))

    def save() -> Path | None:
        # Collective under FSDP (full weights are gathered), so every rank calls it; rank 0 writes.
        model_sd, ema_sd, opt_sd = distributed.full_state(model, ema.model, opt, t_cfg.fsdp)
        if not main:
            return None
        path = save_checkpoint(run / "checkpoints" / f"step-{step:07d}.safetensors", Checkpoint(
            cfg.to_dict(), step, model_sd, ema_sd, opt_sd, rng_state(),
            {"world_size": info.world_size, "grad_accum": accum, "shards": shards}))
        prune_checkpoints(run, t_cfg.keep_last)
        return path

    def samples_now(path: Path) -> list[Path]:
        sampler_model = distributed.full_copy(ema.model, cfg, t_cfg.fsdp, main)
        if not main:
            return []
        with writing(path, "samples"):
            written = write_samples(sampler_model, cfg, path, device)
            _tb_images(tb, written, step)
        return written

    def next_batch():
        """The next micro-batch. A loading error (a corrupt file, a worker that died) comes
        before any update of this step, so the steps done so far are saved first."""
        try:
            return next(batches)
        except Exception as e:
            saved = ""
            if step > max(last_saved, 0) and main and not info.enabled:
                saved = (f" (steps 1-{step} are saved in {save()}: fix the data and run the same command "
                         "to resume)")
            if isinstance(e, RinkitError) or "DataLoader worker process" in str(e):
                # one line: the worker's own message, not its traceback
                raise RinkitError(describe(e) + saved) from None
            if saved:
                print(f"data loading failed at step {step}{saved}", file=sys.stderr)
            raise

    losses: list[float] = []
    last_ckpt, last_saved, bad, window, gnorm, t0 = None, -1, 0, [], torch.zeros(()), time.perf_counter()
    stopped = False
    bar = tb = stats = None
    if main:
        stats = _Log(run / "stats.jsonl", step)
        with writing(run / "tensorboard", "TensorBoard events"):
            tb = _tensorboard(run, step) if t_cfg.tensorboard else None
    if progress and step < end:
        from tqdm import tqdm
        bar = tqdm(total=end, initial=step, desc=f"train {cfg.name}", dynamic_ncols=True)
    _memory_gb(device)
    model.train()
    batches = iter(loader)
    try:
        with _Stop(announce=main) as stop:
            while step < end:
                set_lr(opt, t_cfg, step, t_cfg.steps)
                opt.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=device)
                for j in range(accum):
                    # Augmentation (with in-process loading), noise, timesteps, label and model
                    # dropout of this micro-batch: keyed by (seed, step, shard), so they do not
                    # depend on how shards map to processes, nor on what ran before a resume.
                    torch.manual_seed(distributed.shard_seed(t_cfg.seed, step, j * info.world_size + info.rank))
                    x, y = next_batch()
                    x = x.to(device, non_blocking=True)
                    labels = y.to(device, non_blocking=True) if cfg.model.num_classes else None
                    x, context, mask = modality.condition(x, opts) if modality.condition else (x, None, None)
                    sync = j == accum - 1 or not info.enabled or t_cfg.fsdp
                    with (contextlib.nullcontext() if sync else net.no_sync()), amp():
                        loss = diffusion.loss(net, x, labels, context, mask)
                    (loss / accum).backward()
                    loss_sum += loss.detach().float()
                # One all-reduce tells every rank the mean loss (NaN anywhere -> NaN everywhere)
                # and whether any rank got SIGTERM, so all ranks skip / stop at the same step.
                flags = distributed.mean_over_ranks(info, torch.stack([
                    loss_sum / accum, torch.tensor(float(stop.requested is not None), device=device)]))
                step_loss, stopped = float(flags[0]), bool(flags[1] > 0)
                if not np.isfinite(step_loss):
                    bad += 1
                    opt.zero_grad(set_to_none=True)
                    if main:
                        print(f"step {step}: non-finite loss, step skipped ({bad} in a row)")
                    if bad >= t_cfg.max_bad_steps:
                        raise RinkitError(f"{bad} non-finite losses in a row at step {step}; "
                                          "lower train.lr or check the data (last good checkpoint kept)")
                    step += 1
                    if stopped:
                        break
                    continue
                bad = 0
                gnorm = apply_update(model, opt, ema, t_cfg.grad_clip)
                step += 1
                losses.append(step_loss)
                window.append(step_loss)
                if bar is not None:
                    bar.update(1)
                if main and (step % t_cfg.log_every == 0 or step == end):
                    dt = time.perf_counter() - t0
                    gn = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm
                    rec = {"step": step, "loss": float(np.mean(window)), "lr": opt.param_groups[0]["lr"],
                           "grad_norm": float(gn), "examples_per_s": len(window) * t_cfg.batch_size / dt,
                           "mem_gb": round(_memory_gb(device), 3)}
                    stats.write(json.dumps(rec) + "\n")
                    stats.flush()
                    if tb is not None:
                        with writing(run / "tensorboard", "TensorBoard events"):
                            for k, v in rec.items():
                                if k != "step":
                                    tb.add_scalar(f"train/{k}", v, step)
                    if bar is not None:
                        bar.set_postfix(loss=f"{rec['loss']:.4f}")
                    window, t0 = [], time.perf_counter()
                if step % t_cfg.ckpt_every == 0:
                    last_ckpt, last_saved = save(), step
                if t_cfg.sample_every and step % t_cfg.sample_every == 0:
                    samples_now(run / "samples" / f"step-{step:07d}")
                    model.train()
                if t_cfg.metric_every and step % t_cfg.metric_every == 0:  # proxy metric (FID-2k style)
                    proxy_model = distributed.full_copy(ema.model, cfg, t_cfg.fsdp, main)
                    if main:
                        res = log_proxy_metrics(proxy_model, cfg, device, step, stats)
                        if tb is not None:
                            for k, v in res.items():
                                tb.add_scalar(f"proxy/{k}", v, step)
                    model.train()
                # a signal during the update is honoured right after it (one process: no need to
                # wait for the next all-reduce that makes every rank agree)
                stopped = stopped or (stop.requested is not None and not info.enabled)
                if stopped:
                    break
    except BaseException:
        # A second Ctrl-C or an error: no save here. The state may be mid-update, and the last
        # checkpoint (or the one next_batch wrote) is the last state after a whole step.
        if stats is not None:
            with contextlib.suppress(Exception):
                stats.close()
            stats = None
        raise
    finally:
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.flush()
    if stats is not None:
        stats.close()
    if step > 0 and last_saved != step:
        last_ckpt, last_saved = save(), step
    if stopped:  # SIGTERM or Ctrl-C (on any rank)
        if main:
            print(f"stopped at step {step} on request; checkpoint {last_ckpt}; run the same command to resume")
        if tb is not None:
            tb.close()
        return TrainResult(run, step, losses, last_ckpt, [], {}, stop.requested or "SIGTERM")
    samples = samples_now(run / "samples") if step >= end else []
    results: dict[str, float] = {}
    n_eval = t_cfg.eval_samples if eval_samples is None else eval_samples
    eval_model = distributed.full_copy(ema.model, cfg, t_cfg.fsdp, main) if n_eval and step >= end else None
    if main and eval_model is not None:
        results = evaluate_metrics(eval_model, cfg, n_eval, device)
        with writing(run / "metrics.json", "metrics"):
            (run / "metrics.json").write_text(json.dumps({"step": step, "samples": n_eval, **results}, indent=1))
    if tb is not None:
        for k, v in results.items():
            tb.add_scalar(f"eval/{k}", v, step)
        tb.close()
    return TrainResult(run, step, losses, last_ckpt, samples, results)
