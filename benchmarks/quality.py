"""Quality at equal compute: RIN vs a baseline of the same modality (for images an ADM-style
U-Net), each trained for the same wall-clock budget on the same machine, compared by the
modality's quality metric.

    python -m benchmarks.quality --preset digits --budget 600 --out benchmarks/results/quality_digits
    python -m benchmarks.quality --preset fashion-mnist --calibrate --out benchmarks/results/fashion_rates
    python -m benchmarks.quality --preset fashion-mnist --budget 1800 --rates 2.0 1.1 \\
        --out benchmarks/results/quality_fashion_30min
    python -m benchmarks.quality --modality video --budget 900 --out benchmarks/results/quality_video_900s
    python -m benchmarks.quality --modality audio --budget 900 --out benchmarks/results/quality_audio_900s

writes <out>.json (every evaluation point, the settings, the budget basis, the machine and its
load, the exact command), <out>.md (a table), <out>.png (the metric vs training seconds and vs
training TFLOPs, both models) and <out>_samples.png (the models' sample grids side by side).

Modalities plug in as a `Task` (TASKS): what the baseline model is, which metric compares the
models (its name, the sample count its protocol needs, its reference rows) and how samples are
drawn side by side. Implemented:
* image: the baseline is benchmarks/models.py's ADM layout sized to the preset; the metric is
  digits-FID on the built-in digits and the real TF-Inception FID (rinkit_plugins.image.fid_metric)
  on datasets with a test split (Fashion-MNIST).
* video (`--modality video`: the video-digits preset, 4 given -> 4 predicted frames): the
  baseline is the VDM-style factorised space-time U-Net of benchmarks/models_video.py (per-frame
  convolutions, spatial + temporal attention; given frames clean in the clip plus a mask channel),
  under the same denoiser contract; the metric is the moving-digits proxy (plugins/video/
  metrics.py): the predicted frames' digits-FID against held-out clips, with the fraction of
  frames that keep the given digit's class and of clips on a bouncing path; reference rows from
  benchmarks/video_references.py (the true future of training clips, the last given frame
  frozen, another clip's future, noise); film strips side by side (given frames framed green).
  Both models train on the clips' first frames as given data (the plugin's `condition`, as the
  trainer does) and sample from the same held-out clips' given frames. The preset's
  `eval_samples` (128) at the end by default.
* audio (`--modality audio`: the audio-synth preset, 64 x 64 log-mel spectrograms): the
  baseline is the ADM-style 2-D U-Net on the spectrogram of benchmarks/baselines/audio.py; the
  metric is the synth classifier's Fréchet distance to the held-out split with its class
  accuracy and the mel-band level gap (plugins/audio/metric.py); reference rows are as many
  training spectrograms and uniform noise; spectrogram grids (one row per class) side by side.
  The preset's `eval_samples` (200) at the end by default.
* points (`--modality points`: the points-shapes preset): the baseline is the PVD-style PVCNN of
  benchmarks/baselines/points.py; the metric is 1-NNA under Chamfer distance against as many
  held-out clouds (plugins/points/metrics.py), with COV-CD and MMD-CD beside it (EMD measures in
  the JSON); 128 samples at the end by default (the exact EMD assignments grow with its square).
A modality without a Task (e.g. voxels) is a one-line error naming the implemented ones.

Protocol
* The models: RIN built from the preset exactly as `rinkit train` builds it, and the baseline,
  class-conditional through one extra embedding row as the null class (where the preset has
  classes), wrapped under rinkit's denoiser contract.
* The same objective and recipe for both, from the preset: `Diffusion.loss` with its schedules,
  prediction target and label dropout (the U-Net with self-conditioning rate 0: it has no
  latents; RIN keeps the preset's rate), the train split through the modality's dataset (split
  into target and given data by the plugin's `condition`, as the trainer does) and rinkit's
  deterministic `StepBatchSampler`, the preset's batch size, optimizer (`build_optimizer`), peak
  LR, warm-up steps and decay (`set_lr`), and the trainer's clip + step + EMA update
  (`apply_update`). Per-step seeds are the trainer's (`shard_seed(seed, step, 0)`), so at a given
  step both models see the same batch, noise levels, noise and dropped labels. Both start from
  `torch.manual_seed(seed)`.
* Equal wall-clock: the cosine LR schedule needs a step count, so each model gets total steps =
  budget x its steps/s. The steps/s (the *budget basis*, recorded in the JSON) is one of:
  `--rates R_RIN R_BASE`, rates measured earlier (`--calibrate`, best on a quiet machine:
  `--wait-quiet` waits for one); by default a calibration in this run; or `--steps N M` fixes the
  step counts. Calibration times all models in one process, alternating in short bursts after
  warm-up steps, so a busy machine slows both alike; it records the load average and each
  model's training peak memory (parameters, gradients, optimizer state + the first step's extra
  resident memory; run_model records the same for the run). Training
  seconds in the results are measured (data, forward, backward, clipping, optimizer and EMA
  update; evaluation excluded), not the budget: on a shared machine they exceed it.
* At `--points` evenly spaced steps (the last is the end of training), the EMA model draws
  class-balanced samples with the preset's sampler (or `--sample-steps`), the same labels, given
  data (held-out examples', for conditional modalities) and per-image noise seeds for both
  models, scored by the metric: `--eval-samples` at the end, which
  must meet the metric's protocol (real FID: >= 2,000), and `--proxy-samples` at the earlier
  points, labelled as proxies (a Fréchet distance of fewer samples is biased upward).
* Training FLOPs = examples seen x per-example training FLOPs, where the latter is the forward
  FLOPs counted once per model with FlopCounterMode's per-op formulas (`benchmarks.measure.
  count_flops`: matmuls, convolutions, attention; 2 FLOPs per multiply-add) x 3 (forward +
  backward), plus, for RIN, the extra no-grad forward of its self-conditioning pass (run on the
  whole batch, as `Diffusion.loss` does). Elementwise ops, the optimizer and EMA are not counted.
  A direct count of one `Diffusion.loss(...).backward()` is kept in the JSON as a cross-check.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from benchmarks.measure import PeakMemory, count_flops, loadavg, machine, state_bytes, sync
from benchmarks.models import Entry, unet_entry
from rinkit.errors import RinkitError

# -- what a modality supplies ---------------------------------------------------------------------


@dataclass
class Metric:
    """The number the models are compared by (lower is better) and its protocol."""
    key: str                       # the key in the registered metric's output, e.g. "fid"
    label: str                     # how tables and plots name it, e.g. "FID"
    protocol_samples: int | None   # final evaluations need at least this many samples
    reference_rows: Callable[[int], dict]  # n -> {row name: value} at n samples
    extra: tuple[str, ...] = ()    # other outputs shown in the table (e.g. class accuracy)
    note: str = ""
    default_samples: int | None = None  # --eval-samples when not given (else the protocol's, >= 500)


@dataclass
class Task:
    """A modality's part of the benchmark: its baseline model, its metric, its sample grid."""
    modality: str
    baseline: Callable  # (cfg, rin Entry, width) -> Entry
    metric: Callable    # cfg -> Metric
    grid: Callable      # ([(name, samples, labels, given data or None)], path, cfg) -> Path


def _image_baseline(cfg, rin: Entry, width: float = 1.0) -> Entry:
    c, h, w = rin.shape
    if h != w:
        raise RinkitError(f"the U-Net baseline needs square images, the preset's are {h}x{w}")
    return unet_entry(h, c, cfg.model.num_classes, rin.diffusion, width=width)


def _image_metric(cfg) -> Metric:
    from rinkit.build import resolve
    if cfg.data.dataset == "digits":
        from rinkit_plugins.image.digits_metric import DigitsMetric
        return Metric("digits_fid", "digits-FID", None, lambda n: DigitsMetric.reference_points(n),
                      extra=("digits_acc",), note="a digits classifier's 64-d features vs the held-out digits")
    from rinkit_plugins.image import fid_metric
    if cfg.data.dataset not in fid_metric.DATASETS:
        raise RinkitError(f"no quality metric for image dataset {cfg.data.dataset!r}: the benchmark knows digits "
                          f"(digits-FID) and {', '.join(fid_metric.DATASETS)} (real FID)")
    opts = resolve(cfg).options
    return Metric("fid", "FID", fid_metric.PROTOCOL_SAMPLES,
                  lambda n: fid_metric.reference_rows(opts, cfg.data, n), extra=("precision", "recall"),
                  note="TF-Inception pool3 features vs the cached statistics of the whole test split; no Inception "
                       "Score (the pool3-only weights have no classifier)")


def side_by_side(named: list[tuple[str, object]], path: Path) -> Path:
    """Images (PIL) side by side, each captioned with its model's name."""
    from PIL import Image, ImageDraw
    ims = [im.convert("RGB") for _, im in named]
    # the default font has no arrows or minus signs: draw them as ASCII
    named = [(name.translate({0x2192: "->", 0x2212: "-"}), im) for name, im in named]
    gap, top = 16, 22
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [max(g.width, int(draw.textlength(name)) + 4) for (name, _), g in zip(named, ims)]  # captions fit
    canvas = Image.new("RGB", (sum(widths) + gap * (len(ims) - 1), max(g.height for g in ims) + top), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for (name, _), g, w in zip(named, ims, widths):
        canvas.paste(g, (x, top))
        draw.text((x + 2, 4), name, fill="black")
        x += w + gap
    canvas.save(path)
    return path


def _image_grid(rows: list[tuple], path: Path, cfg) -> Path:
    """The models' grids (one row per class, same labels and seeds) side by side, captioned."""
    from rinkit_plugins.image.writer import grid_image
    per_class = int(torch.bincount(rows[0][2]).max())
    return side_by_side([(name, grid_image(x[torch.argsort(y, stable=True)], per_class, min_cell=56))
                         for name, x, y, _ in rows], path)


def _points_baseline(cfg, rin: Entry, width: float = 1.0) -> Entry:
    from benchmarks.baselines.points import pvcnn_entry
    return pvcnn_entry(cfg, width=max(4, round(32 * width)))


def _points_metric(cfg) -> Metric:
    def reference_rows(n: int) -> dict:
        from benchmarks.points_references import references_for
        rows = references_for(cfg, n, with_emd=False)
        real, blobs = rows["real train clouds"], rows["Gaussian blobs with each real cloud's mean and covariance"]
        return {"train_vs_test": real["pc_1nna_cd"], "real_COV_CD": real["pc_cov_cd"],
                "blobs_1NNA_CD": blobs["pc_1nna_cd"], "samples": n}
    if cfg.modality != "points":
        raise RinkitError(f"the quality benchmark compares point clouds; modality {cfg.modality!r} has no baseline")
    return Metric("pc_1nna_cd", "1-NNA-CD", None, reference_rows, extra=("pc_cov_cd", "pc_mmd_cd"),
                  note="1-NN accuracy of telling samples from as many held-out clouds under Chamfer distance "
                       "(0.5 = indistinguishable), coverage and MMD under CD (plugins/points/metrics.py); EMD "
                       "measures in the JSON", default_samples=128)


def _points_grid(rows: list[tuple], path: Path, cfg) -> Path:
    """Each model's renders (one titled row per class, same labels and seeds) side by side."""
    import tempfile

    from PIL import Image

    from rinkit_plugins.points import shapes
    from rinkit_plugins.points.writer import by_class, render
    names = shapes.CLASSES if cfg.data.dataset == "shapes" else None
    with tempfile.TemporaryDirectory() as tmp:
        ims = []
        for i, (name, x, y, _) in enumerate(rows):
            x, y = by_class(x.detach().float().cpu(), y)
            ims.append(Image.open(render([c.numpy() for c in x], Path(tmp) / f"{i}.png", y, names, name)).convert("RGB"))
        canvas = Image.new("RGB", (sum(im.width for im in ims) + 16 * (len(ims) - 1), max(im.height for im in ims)),
                           "white")
        x0 = 0
        for im in ims:
            canvas.paste(im, (x0, 0))
            x0 += im.width + 16
        canvas.save(path)
    return path


def _video_baseline(cfg, rin: Entry, width: float = 1.0) -> Entry:
    from benchmarks.models_video import video_unet_entry
    return video_unet_entry(cfg, width=width)


def _video_metric(cfg) -> Metric:
    if cfg.data.dataset != "moving_digits":
        raise RinkitError(f"the quality benchmark scores video with the moving-digits proxy; dataset "
                          f"{cfg.data.dataset!r} has only FVD, which needs local I3D weights (not wired here)")

    def reference_rows(n: int) -> dict:
        from benchmarks.video_references import references_for
        rows = references_for(cfg, n)
        true, frozen = rows["the true future"], rows["last given frame frozen"]
        return {"train_vs_test": true["video_digits_fid"], "true_future_motion_ok": true["video_motion_ok"],
                "frozen_last_frame": frozen["video_digits_fid"],
                "other_clip_future": rows["another clip's future"]["video_digits_fid"],
                "noise": rows["Gaussian noise"]["video_digits_fid"], "samples": n}
    return Metric("video_digits_fid", "moving-digits FID", None, reference_rows,
                  extra=("video_class_keep", "video_motion_ok"),
                  note="per-frame digits-FID of the predicted frames' digit crops vs held-out clips, the fraction "
                       "of predicted frames read as the given frames' digit, and of clips (given + predicted) on "
                       "a straight bouncing path (plugins/video/metrics.py); the given frames are the same "
                       "held-out clips' for both models; reference rows: train clips' true future, the last "
                       "given frame frozen, another clip's future, noise", default_samples=cfg.train.eval_samples)


def _video_grid(rows: list[tuple], path: Path, cfg) -> Path:
    """Each model's film strip (a row per clip: given frames framed green, predicted red; the
    same held-out given frames and seeds) side by side."""
    from PIL import Image

    from rinkit_plugins.video.writer import MAX_STRIP, film_strip, to_uint8_video
    strips = []
    for name, x, _, ctx in rows:
        full = x if ctx is None else torch.cat([ctx.to(x), x], 1)
        strips.append((name, Image.fromarray(film_strip(to_uint8_video(full[:MAX_STRIP]),
                                                        0 if ctx is None else ctx.shape[1]))))
    return side_by_side(strips, path)


def _audio_baseline(cfg, rin: Entry, width: float = 1.0) -> Entry:
    from benchmarks.baselines.audio import unet_entry
    return unet_entry(cfg, width=width)


def _audio_metric(cfg) -> Metric:
    if cfg.data.dataset != "synth":
        raise RinkitError(f"the audio metric compares with the built-in synth clips; dataset {cfg.data.dataset!r} "
                          "has no registered quality metric")
    from rinkit.build import resolve

    def reference_rows(n: int) -> dict:
        from rinkit_plugins.audio.data import synth
        from rinkit_plugins.audio.metric import AudioMetric
        o = resolve(cfg).options
        metric = AudioMetric(o)
        x, y = synth(o, None, "train").tensors(n)  # labels cycle through the classes: balanced
        with torch.random.fork_rng():
            torch.manual_seed(0)
            noise = torch.rand_like(x) * 2 - 1
        real, rand = metric(x, y), metric(noise, y)
        return {"train_vs_test": real["audio_fd"], "real_acc": real["audio_acc"], "noise": rand["audio_fd"],
                "samples": len(x)}
    return Metric("audio_fd", "classifier FD", None, reference_rows,
                  extra=("audio_acc", "audio_band_db_l1"),
                  note="Fréchet distance of a synth-spectrogram classifier's 64-d features vs the held-out split, "
                       "its accuracy on the intended classes, and the mean mel-band level gap in dB "
                       "(plugins/audio/metric.py); reference rows: training spectrograms and uniform noise",
                  default_samples=cfg.train.eval_samples)


def _audio_grid(rows: list[tuple], path: Path, cfg) -> Path:
    """Each model's spectrograms (one row per class, low frequencies at the bottom; same labels
    and seeds) side by side."""
    from rinkit_plugins.audio.writer import spectrogram_grid
    named = []
    for name, x, y, _ in rows:
        per_class = int(torch.bincount(y).max()) if y is not None else int(math.ceil(math.sqrt(len(x))))
        named.append((name, spectrogram_grid(x[torch.argsort(y, stable=True)] if y is not None else x, per_class)))
    return side_by_side(named, path)


TASKS = {"image": Task("image", _image_baseline, _image_metric, _image_grid),
         "video": Task("video", _video_baseline, _video_metric, _video_grid),
         "audio": Task("audio", _audio_baseline, _audio_metric, _audio_grid),
         "points": Task("points", _points_baseline, _points_metric, _points_grid)}


def task_for(modality: str) -> Task:
    if modality not in TASKS:
        raise RinkitError(f"the quality benchmark has no task for modality {modality!r} yet "
                          f"(implemented: {', '.join(TASKS)}); a modality plugs in as a benchmarks.quality.Task")
    return TASKS[modality]


def models_for(preset: str, overrides: list[str], modality: str | None = None, unet_width: float = 1.0):
    """(task, [(Entry, Config used to sample it)]) for RIN and the modality's baseline. The
    baseline's config is the preset's with self-conditioning rate 0, so the sampler builds the
    baseline's own Diffusion."""
    from rinkit.build import build_diffusion, build_model, resolve
    from rinkit.config import load_config
    cfg = resolve(load_config(preset, None, [*([f"modality={modality}"] if modality else []), *overrides]))
    task = task_for(cfg.modality)
    rin = Entry(f"RIN {cfg.name}", "rin", lambda: build_model(cfg), build_diffusion(cfg), cfg.sample_shape,
                cfg.model.num_classes, note=" ".join(overrides))
    base = task.baseline(cfg, rin, unet_width)
    base_cfg = cfg.replace(diffusion=cfg.diffusion.model_copy(update={"self_cond_rate": 0.0, "self_cond_x0": False}))
    return task, [(rin, cfg), (base, base_cfg)]


def role(entry: Entry) -> str:
    """What --models calls a model: "rin", or "unet" for the modality's baseline whatever its kind
    (the points baseline is a PVCNN)."""
    return "rin" if entry.kind == "rin" else "unet"


# -- training ---------------------------------------------------------------------------------------

class Training:
    """One model trained with the preset's recipe, one step at a time. It shares the trainer's
    update (`set_lr`, `apply_update`) and loss but not its loop, which owns a run folder,
    checkpoints and logging this benchmark does not want."""

    def __init__(self, entry: Entry, cfg, device: torch.device, seed: int, total_steps: int,
                 ema_decays: list[float] | None = None):
        from torch.utils.data import DataLoader

        from rinkit.build import check_backends, resolve
        from rinkit.train.data import StepBatchSampler
        from rinkit.train.optim import EMA, build_optimizer
        cfg = resolve(cfg)  # read through below: options, dataset, the plugin's condition
        self.entry, self.cfg, self.device, self.seed, self.total = entry, cfg, device, seed, total_steps
        t = cfg.train
        torch.manual_seed(seed)
        self.model = entry.build().to(device).train()
        self.ema = EMA(self.model, t.ema_decay)
        # further averages of the same run (an EMA sweep without retraining, as EDM2's post-hoc
        # EMA study): each sees exactly the updates the preset's EMA sees
        self.extra_emas = [EMA(self.model, d) for d in ema_decays or []]
        self.opt = build_optimizer(self.model, t.optimizer, t.lr, t.weight_decay, t.betas)
        ds = cfg.dataset.build(cfg.options, cfg.data, "train")
        sampler = StepBatchSampler(len(ds), t.batch_size, seed, total_steps=total_steps)
        self.batches = iter(DataLoader(ds, batch_sampler=sampler, num_workers=0,
                                       generator=torch.Generator().manual_seed(seed)))
        self.step, self.bad, self.losses = 0, 0, []
        self.params = sum(p.numel() for p in self.model.parameters())
        self.condition = cfg.impl.condition  # e.g. video: (frames to predict, given frames, loss mask)
        # train.precision as the trainer resolves it (auto: bf16 autocast on GPUs, fp32 on CPUs)
        self.bf16 = check_backends(cfg, device) == "bf16"

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
        x, context, mask = self.condition(x, self.cfg.options) if self.condition else (x, None, None)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.entry.diffusion.loss(self.model, x, labels, context, mask)
        loss.backward()
        value = float(loss.detach())
        self.step += 1
        if not math.isfinite(value):  # as the trainer: skip the update
            self.bad += 1
            self.opt.zero_grad(set_to_none=True)
            return
        apply_update(self.model, self.opt, self.ema, t.grad_clip)
        for ema in self.extra_emas:
            ema.update(self.model)
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
    """Training steps per second of one model on this machine now (a throwaway copy)."""
    return calibrate_all([(entry, cfg)], device, seed, steps, rounds=1, warmup=warmup)["rates"][0]


def calibrate_all(pairs, device, seed: int, steps: int, rounds: int = 4, warmup: int = 3) -> dict:
    """Steps/s of every model, measured alternating in this process (A B, B A, ...: `rounds`
    bursts of steps/rounds steps each after `warmup` untimed steps), so that a busy machine slows
    all of them alike. Throwaway copies; the load average is recorded per burst. Each model's
    training peak memory is measured as run_model measures it: parameters, gradients and
    optimizer state, plus the extra resident (CPU) or allocated (GPU) memory of its first step."""
    runs = [Training(e, c, device, seed, total_steps=warmup + steps + rounds) for e, c in pairs]
    peaks = []
    for r in runs:
        with PeakMemory(device) as pm:
            r.train_step()
        peaks.append((state_bytes(r.model, r.opt) + pm.bytes) / 2 ** 20)
        for _ in range(warmup - 1):
            r.train_step()
    per = max(1, steps // rounds)
    secs, cpu, done, loads = [0.0] * len(runs), [0.0] * len(runs), [0] * len(runs), []
    for k in range(rounds):
        order = range(len(runs)) if k % 2 == 0 else reversed(range(len(runs)))
        for i in order:
            loads.append(loadavg())
            c0 = time.process_time()
            secs[i] += runs[i].train_until(runs[i].step + per)
            cpu[i] += time.process_time() - c0
            done[i] += per
    rates = [d / s for d, s in zip(done, secs)]
    # CPU seconds per step: on a shared machine a single-threaded step's CPU time is close to its
    # wall time on a quiet core (wall time there is inflated by waiting for the core)
    return {"rates": rates, "cpu_rates": [d / c for d, c in zip(done, cpu)], "steps": done, "seconds": secs,
            "train_peak_mb": peaks, "params": [r.params for r in runs],
            "cpu_seconds": cpu, "threads": torch.get_num_threads(), "loadavg": loads + [loadavg()],
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def wait_quiet(limit: float, log=print, poll: float = 30.0, timeout: float = 24 * 3600) -> list[float]:
    """Block until the 1-minute load average is <= `limit` (a quiet machine for calibration)."""
    t0 = time.time()
    while (load := loadavg()) is not None and load[0] > limit:
        if time.time() - t0 > timeout:
            raise RinkitError(f"the machine did not get quiet (load <= {limit}) within {timeout:.0f} s")
        log(f"waiting for a quiet machine: load average {load}")
        time.sleep(poll)
    return load


def flops_per_example(entry: Entry, batch: int, context_shape: tuple | None = None) -> dict:
    """Per-example FLOPs, counted on the meta device (exact, free): the forward that gets the
    gradient (RIN reads previous latents there), RIN's no-grad self-conditioning forward, the
    training total 3 x forward + that extra pass, and a direct count of loss + backward.
    `context_shape`: the clean conditioning of one example (video: the given frames), if any."""
    with torch.device("meta"):
        model = entry.build()
    x = torch.zeros(batch, *entry.shape, device="meta")
    ctx = torch.zeros(batch, *context_shape, device="meta") if context_shape else None
    labels = torch.zeros(batch, dtype=torch.long, device="meta") if entry.num_classes else None
    gamma = torch.full((batch,), 0.5, device="meta")
    prev = None
    if entry.kind == "rin":
        prev = torch.zeros(batch, model.core.num_latents, model.core.latent_dim, device="meta")
    with torch.no_grad():
        fwd = count_flops(lambda: model(x, gamma, labels, prev, ctx)) / batch
        sc = count_flops(lambda: model(x, gamma, labels, None, ctx)) / batch \
            if entry.diffusion.self_cond_rate > 0 else 0.0
    direct = count_flops(lambda: entry.diffusion.loss(model, x, labels, ctx).backward()) / batch
    return {"forward": fwd, "self_cond_forward": sc, "train": 3 * fwd + sc, "train_direct_count": direct}


def eval_steps(total: int, points: int) -> list[int]:
    return sorted({max(1, round(total * k / points)) for k in range(1, points + 1)})


def sample_label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def run_model(entry: Entry, cfg, device, seed: int, total: int, points: int, eval_samples: int,
              proxy_samples: int, metric: Metric, sampler_over: dict, eval_batch: int, grid_per_class: int = 0,
              save: str | Path | None = None, ema_decays: list[float] | None = None,
              log=print) -> tuple[dict, tuple | None]:
    """Train one model for `total` steps, evaluating at `points` steps; (its results, its grid).
    `cfg`: the resolved config models_for gives (options, condition and shapes read from it).
    `ema_decays`: further EMA decays tracked in the same run, each evaluated at the end only."""
    from rinkit.evaluate.metrics import evaluate_metrics
    from rinkit.sampling import balanced_labels, conditioning_examples, generate
    flops = flops_per_example(entry, cfg.train.batch_size, cfg.context_shape)
    load_start = loadavg()
    run = Training(entry, cfg, device, seed, total, ema_decays)
    log(f"{entry.name}: {run.params / 1e6:.3f}M params, {flops['forward'] / 1e6:.2f} MFLOPs/example forward, "
        f"{total} steps")
    batch = cfg.train.batch_size
    train_s, eval_s, rows, last = 0.0, 0.0, [], 0
    targets = eval_steps(total, points)
    with PeakMemory(device) as pm:  # the first training step's peak (the run's own step, timed as the others)
        train_s += run.train_until(1)
    peak_mb = (state_bytes(run.model, run.opt) + pm.bytes) / 2 ** 20

    def evaluate(model, n: int) -> tuple[dict, float, bool, str]:
        """The metrics of n samples (labels and noise seeded alike for every model and point),
        the seconds they took, whether n is below the protocol's count, and their text for the log."""
        t0 = time.perf_counter()
        res = evaluate_metrics(model, cfg, n, device, seed=1, batch_size=eval_batch, **sampler_over)
        if metric.key not in res:
            raise RinkitError(f"the registered metrics gave no {metric.label} for preset {cfg.name!r}")
        proxy = metric.protocol_samples is not None and n < metric.protocol_samples
        text = (f"{metric.label}-{sample_label(n)}{' (proxy)' if proxy else ''} {res[metric.key]:.2f}"
                + "".join(f", {k} {res[k]:.3f}" for k in metric.extra if k in res))
        return res, time.perf_counter() - t0, proxy, text

    for target in targets:
        train_s += run.train_until(target)
        final = target == targets[-1]
        n = eval_samples if final else proxy_samples
        res, took, proxy, text = evaluate(run.ema.model, n)
        eval_s += took
        window = run.losses[last:] or [float("nan")]
        last = len(run.losses)
        rows.append({"step": run.step, "train_seconds": train_s, "examples": run.step * batch,
                     "train_tflops": run.step * batch * flops["train"] / 1e12, "loss": float(np.mean(window)),
                     "samples": n, "proxy": proxy, **res, "eval_seconds": took, "loadavg": loadavg()})
        log(f"  step {run.step}/{total}: {train_s:.1f} s, loss {rows[-1]['loss']:.4f}, {text} (eval {took:.1f} s)")
    ema_rows = []
    for ema in run.extra_emas:  # the same samples' labels and noise as the preset EMA's final row
        res, took, _, text = evaluate(ema.model, eval_samples)
        eval_s += took
        ema_rows.append({"ema_decay": ema.decay, "step": run.step, "samples": eval_samples, **res, "eval_seconds": took})
        log(f"  EMA {ema.decay:g} at step {run.step}: {text} (eval {took:.1f} s)")
    grid = None
    if grid_per_class and (cfg.model.num_classes or cfg.impl.condition):
        # class-balanced, or (a frame-conditional model without classes) grid_per_class held-out
        # examples' given data: the same labels, given frames and noise seeds for every model
        k = cfg.model.num_classes
        labels = balanced_labels(grid_per_class, k, "cpu") if k else None
        n = len(labels) if k else grid_per_class
        context = conditioning_examples(cfg, n, labels)
        grid = (f"{entry.name} ({total} steps)", generate(run.ema.model, cfg, n, labels, 2, device, context=context,
                                                            batch_size=eval_batch, **sampler_over), labels, context)
    if save:
        Path(save).mkdir(parents=True, exist_ok=True)
        torch.save(run.ema.model.state_dict(), Path(save) / f"{entry.kind}-ema.pt")
        for ema in run.extra_emas:
            torch.save(ema.model.state_dict(), Path(save) / f"{entry.kind}-ema{ema.decay:g}.pt")
    return {"name": entry.name, "kind": entry.kind, "note": entry.note, "params": run.params,
            "self_cond_rate": entry.diffusion.self_cond_rate, "total_steps": total, "batch": batch,
            "train_seconds": train_s, "eval_seconds": eval_s, "nonfinite_steps": run.bad,
            "steps_per_s": total / train_s, "examples_per_s": total * batch / train_s, "train_peak_mb": peak_mb,
            "gflops_per_example": {k: v / 1e9 for k, v in flops.items()}, "ema_variants": ema_rows,
            "loadavg_start": load_start, "loadavg_end": loadavg(), "points": rows}, grid


# -- outputs ----------------------------------------------------------------------------------------

def _budget_text(budget) -> str:
    """The budget as text: '600 s', or '1800 s and 3600 s' for a combination across budgets."""
    if isinstance(budget, list):
        return " and ".join(f"{b:g} s" for b in budget) + " (each run's final point)"
    return f"{budget:g} s"


def _metric_info(result: dict) -> dict:
    return result.get("metric") or {"key": "digits_fid", "label": "digits-FID", "extra": ["digits_acc"]}


def table(result: dict) -> str:
    s, m = result["settings"], _metric_info(result)
    key, extra = m["key"], [k for k in m.get("extra", [])]
    lines = [f"| model | params | step | seconds | examples | TFLOPs | samples | {m['label']} |"
             + "".join(f" {k.replace('_', ' ')} |" for k in extra), "|---" * (8 + len(extra)) + "|"]
    for mod in result["models"]:
        # each evaluation point, then the further EMA decays of the same run at its last point
        named = [(mod["name"], p) for p in mod["points"]] + [
            (f"{mod['name']}, EMA {e['ema_decay']:g}", {**mod["points"][-1], **e})
            for e in mod.get("ema_variants", [])]
        for name, p in named:
            def fmt(k):
                v = p.get(k)
                return "" if v is None else f"{100 * v:.1f} %" if k.endswith("acc") else f"{v:.3f}"
            n = p.get("samples", s.get("eval_samples"))
            lines.append(f"| {name} | {mod['params'] / 1e6:.2f}M | {p['step']} / {p.get('total_steps', mod['total_steps'])} | "
                         f"{p['train_seconds']:.1f} | {p['examples']} | {p['train_tflops']:.3f} | "
                         f"{n}{' (proxy)' if p.get('proxy') else ''} | {p[key]:.2f} |"
                         + "".join(f" {fmt(k)} |" for k in extra))
    mach = result["machine"]
    b = s.get("budget_basis") or {}
    fixed = b.get("kind") == "fixed steps" or s.get("fixed_steps")
    notes = ["", (b.get("text") or "Fixed step counts.") if fixed else
             f"Budget {_budget_text(s['budget_s'])} of training per model; " + b.get("text", "")]
    notes.append(f"{m['label']} of the EMA model on {'class-balanced ' if s.get('num_classes', 1) else ''}"
                 f"samples ({s['sampler']}): "
                 f"{s.get('eval_samples')} at the end"
                 + (f", {s.get('proxy_samples')} at earlier points (proxies, biased upward)"
                    if s.get("proxy_samples") not in (None, s.get("eval_samples")) else "")
                 + "; seconds are measured training time, evaluation excluded."
                 + (f" {m['note']}." if m.get("note") else ""))
    notes.append("Training FLOPs per example = 3 x forward (forward + backward), plus RIN's no-grad "
                 "self-conditioning forward; FlopCounterMode formulas (matmul, conv, attention).")
    for mod in result["models"]:
        g = mod["gflops_per_example"]
        notes.append(f"* {mod['name']}: {mod['params']:,} params; forward {g['forward'] * 1e3:.2f} MFLOPs/example"
                     + (f", self-cond pass {g['self_cond_forward'] * 1e3:.2f}" if g["self_cond_forward"] else "")
                     + f", training {g['train'] * 1e3:.2f} MFLOPs/example; {mod['total_steps']} steps trained in "
                     f"{mod['train_seconds']:.1f} s"
                     + (f" ({mod['steps_per_s']:.2f} steps/s, {mod['examples_per_s']:.1f} examples/s; training peak "
                        f"{mod['train_peak_mb']:.0f} MB: parameters, gradients, optimizer state + the first step's "
                        "extra resident memory)" if "train_peak_mb" in mod else "")
                     + f"; load average {mod['loadavg_start']} at start, "
                     f"{mod['loadavg_end']} at end"
                     + "".join(f"; the {p['budget_s']:g}-s run: {p['total_steps']} steps in {p['train_seconds']:.1f} s"
                               for p in mod["points"][:-1] if "budget_s" in p))
    ref = result.get("reference")
    if ref:
        n = ref.get("samples", s.get("eval_samples"))
        notes.append(f"* reference rows at {n} samples: " + ", ".join(
            f"{k.replace('_', ' ')} {v:.2f}" for k, v in ref.items() if isinstance(v, float)))
    notes.append(f"* {mach.get('gpu') or mach['cpu']}, {result['torch_threads']} torch threads, "
                 f"{mach['cores']} cores, torch {mach['torch']}, device {result['device']}")
    return "\n".join(lines + notes)


def chart(result: dict, path: Path, title: str | None = None, target: float | None = None) -> None:
    """The metric vs training seconds and vs training TFLOPs for every model in `result`; proxy
    points hollow (benchmarks.time_to_fid draws its curves here too, with its common `target`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m = _metric_info(result)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ref = result.get("reference") or {}
    floor = ref.get("train_vs_test")
    for ax, key, label in ((axes[0], "train_seconds", "training wall-clock (s)"),
                           (axes[1], "train_tflops", "training compute (TFLOPs)")):
        for i, mod in enumerate(result["models"]):
            pts = mod["points"]
            ax.plot([p[key] for p in pts], [p[m["key"]] for p in pts], color=f"C{i}",
                    label=f"{mod['name']} ({mod['params'] / 1e6:.2f}M)")
            for proxy in (False, True):
                sel = [p for p in pts if bool(p.get("proxy")) == proxy]
                ax.scatter([p[key] for p in sel], [p[m["key"]] for p in sel], color=f"C{i}", zorder=3,
                           facecolors="none" if proxy else f"C{i}", marker="o")
        if target is not None:
            ax.axhline(target, color="grey", ls="--", lw=1, label=f"common target {target:.1f}")
        if floor is not None:
            ax.axhline(floor, color="grey", ls=":", lw=1, label=f"real train images {floor:.1f}")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{m['label']} (lower is better)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    s = result["settings"]
    n = result["torch_threads"]
    proxies = any(p.get("proxy") for mod in result["models"] for p in mod["points"])
    budget = "fixed step counts" if s.get("fixed_steps") else f"{_budget_text(s['budget_s'])} training budget per model"
    fig.suptitle(title or f"{s['preset']}: {budget}, {n} torch "
                 f"thread{'s' * (n != 1)}, {result['device']}; {m['label']}-{sample_label(s['eval_samples'])}"
                 + (f" (hollow: {s['proxy_samples']}-sample proxies)" if proxies else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: dict, out: str | Path, table_fn=None, chart_fn=None, **chart_kw) -> list[Path]:
    """<out>.json, <out>.md (the command, then `table_fn`'s table: this module's by default) and
    <out>.png (`chart_fn`: this module's `chart` by default; False = no picture). The other
    benchmarks (time_to_fid, noise_levels, model_swap) write their outputs here too."""
    base = Path(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [Path(f"{base}{ext}") for ext in (".json", ".md", ".png")]
    paths[0].write_text(json.dumps(result, indent=1))
    paths[1].write_text(f"`{result['command']}`\n\n{(table_fn or table)(result)}\n")
    if chart_fn is False:
        return paths[:2]
    (chart_fn or chart)(result, paths[2], **chart_kw)
    return paths


# -- the run ------------------------------------------------------------------------------------------

def _sampler_text(cfg, sampler_over: dict) -> tuple[str, int]:
    s = cfg.sampler.model_copy(update=sampler_over)
    text = f"{s.name.upper()} {s.steps} steps" + (f", {s.ddpm_variance} variance" if s.name == "ddpm" else "") \
        + (f", guidance {s.guidance:g}" if s.guidance else "")
    return text, s.steps


def run(budget: float, out: str | Path | None = None, eval_samples: int | None = None, points: int = 6,
        threads: int | None = None, preset: str = "digits", overrides: list[str] | None = None,
        sample_steps: int | None = None, calib_steps: int = 20, seed: int | None = None,
        device: str = "auto", eval_batch: int = 500, steps: list[int] | None = None, command: str = "",
        rates: list[float] | None = None, rates_note: str = "", proxy_samples: int | None = None,
        models: list[str] | None = None, modality: str | None = None, unet_width: float = 1.0,
        grid_per_class: int = 8, save: str | None = None, final_proxy: bool = False,
        ema_decays: list[float] | None = None, log=print) -> dict:
    """Train and evaluate RIN, then the baseline (or only those in `models`: "rin", "unet").
    Step counts: `steps` = [RIN's, baseline's], else budget x `rates` (steps/s, e.g. measured on a
    quiet machine with --calibrate), else budget x steps/s calibrated in this run. `ema_decays`:
    further EMA decays tracked beside the preset's and evaluated at the end (an EMA sweep)."""
    from rinkit.train.distributed import pick_device
    if budget <= 0 or points < 1 or calib_steps < 1 or unet_width <= 0:
        raise RinkitError("--budget and --unet-width must be > 0, --points and --calib-steps >= 1")
    if any(not 0 < d < 1 for d in ema_decays or []):
        raise RinkitError(f"--ema-decays must lie in (0, 1), not {' '.join(f'{d:g}' for d in ema_decays)}")
    models = models or ["rin", "unet"]
    if not set(models) <= {"rin", "unet"} or not models:
        raise RinkitError(f"--models takes rin and/or unet, not {' '.join(models)}")
    for name, pair in (("--steps", steps), ("--rates", rates)):
        if pair is not None and (len(pair) not in (2, len(models)) or min(pair) <= 0):
            raise RinkitError(f"{name} takes two positive numbers, RIN's and the baseline's (or one per "
                              "model in --models)")
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    task, pairs = models_for(preset, overrides or [], modality, unet_width)
    cfg0 = pairs[0][1]
    metric = task.metric(cfg0)
    if eval_samples is None:
        eval_samples = metric.default_samples or max(500, metric.protocol_samples or 0)
    proxy_samples = proxy_samples or eval_samples
    if min(eval_samples, proxy_samples) < 2:
        raise RinkitError("--eval-samples and --proxy-samples must be >= 2")
    if metric.protocol_samples and eval_samples < metric.protocol_samples and not final_proxy:
        raise RinkitError(f"--eval-samples {eval_samples}: the {metric.label} protocol needs at least "
                          f"{metric.protocol_samples} samples at the end (earlier points may use --proxy-samples; "
                          "--final-proxy accepts a labelled proxy at the end too, for recipe searches)")
    seed = cfg0.train.seed if seed is None else seed
    sampler_over = {"steps": sample_steps} if sample_steps else {}
    sampler, n_steps = _sampler_text(cfg0, sampler_over)
    start = {"loadavg": loadavg(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    chosen = [i for i, (e, _) in enumerate(pairs) if role(e) in models]

    calibration = None

    def per_model(pair):  # two values (RIN, baseline) or one per chosen model -> one per pair
        return list(pair) if len(pair) == 2 else [pair[chosen.index(i)] if i in chosen else 0
                                                  for i in range(len(pairs))]
    if steps:
        totals = per_model(steps)
        basis = {"kind": "fixed steps", "text": "fixed step counts: " + ", ".join(
            f"{totals[i]} ({pairs[i][0].name})" for i in chosen) + "."}
    elif rates:
        rates = per_model(rates)
        totals = [max(points, int(budget * r)) for r in rates]
        basis = {"kind": "given rates", "rates": rates, "note": rates_note,
                 "text": "steps = budget x steps/s given (" + ", ".join(
                     f"{rates[i]:.3f} {pairs[i][0].name}" for i in chosen)
                 + (f"; {rates_note}" if rates_note else "") + ")."}
    else:
        calibration = calibrate_all([pairs[i] for i in chosen], dev, seed, calib_steps)
        measured = dict(zip(chosen, calibration["rates"]))
        totals = [max(points, int(budget * measured[i])) if i in measured else 0 for i in range(len(pairs))]
        basis = {"kind": "calibrated in this run", "calibration": calibration,
                 "text": f"steps = budget x steps/s calibrated in this run ({calib_steps} steps per model, "
                         f"alternating; load average {calibration['loadavg'][0]} .. {calibration['loadavg'][-1]})."}
    rows, grids = [], []
    for i in chosen:
        entry, cfg = pairs[i]
        res, grid = run_model(entry, cfg, dev, seed, totals[i], points, eval_samples, proxy_samples, metric,
                              sampler_over, eval_batch, grid_per_class, save, ema_decays, log)
        rows.append(res)
        if grid is not None:
            grids.append(grid)
    reference = metric.reference_rows(eval_samples)
    t = cfg0.train
    result = {
        "command": command, "date_utc": start["date_utc"], "device": str(dev),
        "torch_threads": torch.get_num_threads(), "modality": task.modality,
        "machine": {**machine(), "loadavg_start": start["loadavg"], "loadavg_end": loadavg()},
        "metric": {"key": metric.key, "label": metric.label, "protocol_samples": metric.protocol_samples,
                   "extra": list(metric.extra), "note": metric.note},
        "settings": {"budget_s": budget, "eval_samples": eval_samples, "proxy_samples": proxy_samples,
                     "points": points, "preset": preset, "overrides": overrides or [], "seed": seed,
                     "num_classes": cfg0.model.num_classes,
                     "calib_steps": calib_steps if calibration else None, "fixed_steps": steps,
                     "budget_basis": basis, "unet_width": unet_width, "models": models,
                     "sampler": sampler, "sample_steps": n_steps, "batch": t.batch_size,
                     "optimizer": t.optimizer, "lr": t.lr, "warmup_steps": t.warmup_steps, "decay": t.decay,
                     "weight_decay": t.weight_decay, "grad_clip": t.grad_clip, "ema_decay": t.ema_decay,
                     "ema_decays_extra": list(ema_decays or []),
                     "order": "sequential, " + " then ".join(r["name"] for r in rows)},
        "flops_note": "training FLOPs = examples x (3 x forward FLOPs per example + RIN's no-grad "
                      "self-conditioning forward); FlopCounterMode formulas (matmul, conv, attention; "
                      "2 FLOPs per multiply-add); optimizer, EMA and elementwise ops not counted",
        "reference": reference, "models": rows,
    }
    if out:
        write_outputs(result, out)
        if grids:
            task.grid(grids, Path(f"{out}_samples.png"), cfg0)
    return result


def run_calibration(preset: str, overrides: list[str] | None = None, modality: str | None = None,
                    unet_width: float = 1.0, calib_steps: int = 40, rounds: int = 4, threads: int | None = None,
                    seed: int | None = None, device: str = "auto", wait: float | None = None, out=None,
                    command: str = "", models: list[str] | None = None, variants: list[str] | None = None,
                    log=print) -> dict:
    """--calibrate: steps/s of RIN and the baseline (or those in `models`), alternating in this
    process, optionally after waiting for a quiet machine; written to <out>.json for later --rates.
    With `variants` (each a space-separated KEY=VALUE list, "" = none): RIN under each instead, and
    each one's steps/CPU-s relative to the first's, so a recipe row's equal-time rate follows from
    one quiet calibration of the first (CPU time: a shared core stretches wall time, not CPU time)."""
    from rinkit.train.distributed import pick_device
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    if variants:
        pairs = []
        for v in variants:
            entry, cfg = models_for(preset, [*(overrides or []), *v.split()], modality, unet_width)[1][0]
            pairs.append((dataclasses.replace(entry, name=f"{entry.name} [{v or 'as preset'}]"), cfg))
    else:
        _, pairs = models_for(preset, overrides or [], modality, unet_width)
        pairs = [(e, c) for e, c in pairs if role(e) in (models or ["rin", "unet"])]
    seed = pairs[0][1].train.seed if seed is None else seed
    waited = wait_quiet(wait, log) if wait is not None else None
    cal = calibrate_all(pairs, dev, seed, calib_steps, rounds)
    res = {"command": command, "machine": machine(), "preset": preset, "overrides": overrides or [],
           "unet_width": unet_width, "models": [e.name for e, _ in pairs], "batch": pairs[0][1].train.batch_size,
           "load_when_started": waited, **cal}
    if variants:
        res["variants"] = variants
        res["cpu_rate_vs_first"] = [r / cal["cpu_rates"][0] for r in cal["cpu_rates"]]
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out}.json").write_text(json.dumps(res, indent=1))
    return res


def _across_budgets(parts: list[dict]) -> list[dict]:
    """One entry per model name from runs at several budgets: each run contributes only its final
    (protocol) point, because a longer run's mid-run point is not the result of the shorter budget
    (its LR schedule has not decayed); the entry's other fields are its longest run's."""
    by_name: dict[str, list[tuple[float, dict]]] = {}
    for p in parts:
        for m in p["models"]:
            by_name.setdefault(m["name"], []).append((p["settings"]["budget_s"], m))
    models = []
    for runs in by_name.values():
        runs.sort(key=lambda r: r[0])
        merged = json.loads(json.dumps(runs[-1][1]))
        merged["points"] = [{**m["points"][-1], "budget_s": b, "total_steps": m["total_steps"]} for b, m in runs]
        # what the points do not hold already (their budget, steps and training seconds)
        merged["runs"] = [{"budget_s": b, **{k: m[k] for k in ("eval_seconds", "loadavg_start", "loadavg_end") if k in m}}
                          for b, m in runs]
        models.append(merged)
    return models


def _name_variants(models: list[dict], parts: list[dict]) -> None:
    """Models of one name from several runs (recipe variants of RIN) get the overrides that set
    their run apart appended, so the table, plot legend and JSON tell them apart."""
    names = [m["name"] for m in models]
    owns = [p["settings"].get("overrides") or [] for p in parts for _ in p["models"]]
    for name in {n for n in names if names.count(n) > 1}:
        same = [i for i, n in enumerate(names) if n == name]
        common = set.intersection(*(set(owns[i]) for i in same))  # e.g. the sampler all runs set
        for i in same:
            models[i]["name"] += f" [{' '.join(o for o in owns[i] if o not in common) or 'as preset'}]"


def combine(paths: list[str], out: str | Path, command: str = "", across_budgets: bool = False) -> dict:
    """Merge runs of the same protocol made in separate processes (e.g. RIN and the U-Net trained
    side by side with --models, each at 1 thread) into one result: table, plot and the runs'
    sample grids pasted side by side. Refuses runs whose protocols differ. With `across_budgets`
    the runs may differ in budget: each model's final points form its curve of quality vs
    budget (e.g. the 30- and 60-minute runs)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    same = ("preset", "eval_samples", "proxy_samples", "sampler", "batch", "seed") + (() if across_budgets else ("budget_s",))
    for p, path in zip(parts[1:], paths[1:]):
        diff = [k for k in same if p["settings"].get(k) != parts[0]["settings"].get(k)]
        if diff or p.get("metric", {}).get("key") != parts[0].get("metric", {}).get("key"):
            raise RinkitError(f"{path} does not share {paths[0]}'s protocol (differs in {', '.join(diff) or 'metric'})")
    result = json.loads(json.dumps(parts[0]))
    result["command"] = command
    if across_budgets:
        result["models"] = _across_budgets(parts)
        result["settings"]["budget_s"] = sorted({p["settings"]["budget_s"] for p in parts})
    else:
        result["models"] = [m for p in parts for m in p["models"]]
        _name_variants(result["models"], parts)
    result["parts"] = [{"command": p["command"], "date_utc": p["date_utc"], "budget_basis": p["settings"]["budget_basis"],
                        "machine": p["machine"], "models": [m["name"] for m in p["models"]]} for p in parts]
    texts = list(dict.fromkeys(p["settings"]["budget_basis"].get("text", "") for p in parts))
    result["settings"]["budget_basis"] = {"kind": "combined", "text": " ".join(texts)}
    result["settings"]["order"] = "separate processes: " + "; ".join(
        " then ".join(m["name"] for m in p["models"]) for p in parts)
    result["machine"]["loadavg_start"] = min((p["machine"]["loadavg_start"] for p in parts), key=lambda v: v or [0])
    write_outputs(result, out)
    grids = [Path(f"{Path(p).with_suffix('')}_samples.png") for p in paths]
    if all(g.is_file() for g in grids):
        from PIL import Image
        ims = [Image.open(g).convert("RGB") for g in grids]
        canvas = Image.new("RGB", (sum(i.width for i in ims) + 16 * (len(ims) - 1), max(i.height for i in ims)), "white")
        x = 0
        for im in ims:
            canvas.paste(im, (x, 0))
            x += im.width + 16
        canvas.save(f"{out}_samples.png")
    return result


# -- command line ---------------------------------------------------------------------------------------

def common_arguments(ap, out: str, eval_samples: int | None) -> None:
    """The options this benchmark shares with benchmarks.time_to_fid."""
    ap.add_argument("--budget", type=float, default=600, help="training seconds per model (default 600)")
    ap.add_argument("--eval-samples", type=int, default=eval_samples,
                    help="samples per final evaluation (default: the metric's protocol, at least 500)"
                    if eval_samples is None else f"samples per evaluation ({eval_samples})")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=out, help="writes OUT.json, OUT.md, OUT.png")
    ap.add_argument("--preset", default="digits")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides of the preset (the module docstring says which model each reaches)")
    ap.add_argument("--sample-steps", type=int, default=None, help="sampler steps (default: the preset's)")
    ap.add_argument("--calib-steps", type=int, default=20, help="timed steps to estimate steps/s (20)")
    ap.add_argument("--seed", type=int, default=None, help="default: the preset's train.seed")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--eval-batch", type=int, default=500, help="sampling batch size")


def cli(prog: str, description: str, argv: list[str] | None, add_arguments, call, table_fn) -> int:
    """The command line of both benchmarks (this one and benchmarks.time_to_fid): parse, run
    `call(args, command, log)`, print `table_fn`'s table and the files written."""
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
    if args.out:
        print(f"\nwrote {args.out}.json" + ("" if "rates" in res else f", {args.out}.md, {args.out}.png"))
    return 0


def calibration_table(res: dict) -> str:
    lines = ["| model | params | steps/s (wall) | steps/CPU-s | steps timed | seconds | CPU seconds | training peak MB |",
             "|---|---|---|---|---|---|---|---|"]
    nan = [float("nan")] * len(res["models"])
    for name, n_p, r, rc, n, s, c, mb in zip(res["models"], res.get("params", nan), res["rates"], res["cpu_rates"],
                                             res["steps"], res["seconds"], res["cpu_seconds"],
                                             res.get("train_peak_mb", nan)):
        lines.append(f"| {name} | {n_p / 1e6:.2f}M | {r:.3f} | {rc:.3f} | {n} | {s:.1f} | {c:.1f} | {mb:.0f} |")
    if "cpu_rate_vs_first" in res:
        lines += ["", "steps/CPU-s relative to the first: " + ", ".join(f"{r:.3f}" for r in res["cpu_rate_vs_first"])]
    return "\n".join(lines + ["", f"{res['threads']} torch threads; load average per burst: {res['loadavg']}"])


def main(argv: list[str] | None = None) -> int:
    def add(ap):
        common_arguments(ap, out="benchmarks/results/quality_digits", eval_samples=None)
        ap.add_argument("--modality", default=None, help="the preset's modality unless given; without --preset, "
                        "the modality's default preset (implemented: " + ", ".join(TASKS) + ")")
        ap.set_defaults(preset=None, out=None)
        ap.add_argument("--points", type=int, default=6, help="evenly spaced evaluations per model (6)")
        ap.add_argument("--proxy-samples", type=int, default=None,
                        help="samples at the points before the last (default: --eval-samples); labelled proxies")
        ap.add_argument("--steps", type=int, nargs="+", default=None, metavar="N",
                        help="fixed step counts, RIN's and the baseline's (one per --models), instead of "
                        "budget x steps/s (to repeat a run exactly)")
        ap.add_argument("--rates", type=float, nargs="+", default=None, metavar="R",
                        help="steps/s, RIN's and the baseline's (one per --models), to convert --budget into "
                        "steps (e.g. from --calibrate on a quiet machine)")
        ap.add_argument("--rates-note", default="", help="where the --rates come from (recorded)")
        ap.add_argument("--models", nargs="+", default=None, help="train only these: rin, unet (default both)")
        ap.add_argument("--unet-width", type=float, default=1.0, help="scale the baseline U-Net's channels (1)")
        ap.add_argument("--grid-per-class", type=int, default=8, help="samples per class in OUT_samples.png (8); "
                        "for a model without classes (video) the number of clips")
        ap.add_argument("--ema-decays", type=float, nargs="+", default=None, metavar="D",
                        help="further EMA decays to track in the same run and evaluate at the end "
                        "(an EMA sweep without retraining)")
        ap.add_argument("--save", default=None, metavar="DIR", help="save each model's final EMA weights here")
        ap.add_argument("--calibrate", action="store_true", help="only measure steps/s (alternating) to OUT.json")
        ap.add_argument("--variants", nargs="+", default=None, metavar="'KEY=VALUE ...'",
                        help="with --calibrate: RIN under each of these override lists ('' = the preset), "
                        "alternating, with each one's steps/CPU-s relative to the first's")
        ap.add_argument("--wait-quiet", type=float, default=None, metavar="LOAD",
                        help="with --calibrate: first wait until the 1-minute load average is <= LOAD")
        ap.add_argument("--final-proxy", action="store_true", help="allow --eval-samples below the metric's "
                        "protocol (the last point is then a labelled proxy too): for recipe searches")
        ap.add_argument("--combine", nargs="+", default=None, metavar="RUN.json",
                        help="merge runs of one protocol made in separate processes into OUT")
        ap.add_argument("--across-budgets", action="store_true", help="with --combine: the runs may differ in "
                        "--budget; each model's final points form its quality-vs-budget curve")

    def call(a, command, log):
        if a.preset is None:
            from rinkit.registry import get_modality
            a.preset = get_modality(a.modality).default_preset if a.modality else "digits"
        a.out = a.out or f"benchmarks/results/quality_{Path(a.preset).stem}"  # e.g. quality_video-digits
        if a.across_budgets and not a.combine:
            raise RinkitError("--across-budgets needs --combine RUN.json ...")
        if a.combine:
            return combine(a.combine, a.out, command, a.across_budgets)
        if a.calibrate:
            return run_calibration(a.preset, a.overrides, a.modality, a.unet_width, a.calib_steps, threads=a.threads,
                                   seed=a.seed, device=a.device, wait=a.wait_quiet, out=a.out, command=command,
                                   models=a.models, variants=a.variants, log=log)
        return run(a.budget, a.out, a.eval_samples, a.points, a.threads, a.preset, a.overrides, a.sample_steps,
                   a.calib_steps, a.seed, a.device, a.eval_batch, a.steps, command, rates=a.rates,
                   rates_note=a.rates_note, proxy_samples=a.proxy_samples, models=a.models, modality=a.modality,
                   unet_width=a.unet_width, grid_per_class=a.grid_per_class, save=a.save,
                   final_proxy=a.final_proxy, ema_decays=a.ema_decays, log=log)

    def show(res):
        return calibration_table(res) if "rates" in res else table(res)
    return cli("benchmarks.quality", "RIN vs a conventional baseline of the modality (images and spectrograms: "
               "ADM-style U-Nets; video: a VDM space-time U-Net; points: a PVCNN) at equal wall-clock: "
               "quality vs training compute", argv, add, call, show)


if __name__ == "__main__":
    raise SystemExit(main())
