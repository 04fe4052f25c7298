"""Sampling at scale: per-image seeds, batches, torchrun shards, PNG folders and ADM-style .npz.

Image i of a run with global seed s always starts from the same noise and gets the same DDPM
noise at every step, whatever the batch size or the number of processes: its torch.Generator is
seeded by `image_seed(s, i)` and the samplers draw example i's noise from generator i only
(EDM2's `--seeds=0-49999`). Labels are a function of (s, i) too, so shards never disagree.

The .npz layout is what OpenAI's ADM evaluator and its reference batches read: `arr_0` uint8
NHWC and, for class-conditional models, `arr_1` the labels (guided-diffusion's sample script
writes the same two arrays). Under `torchrun` each rank samples a contiguous slice of the indices,
writes a shard, and rank 0 merges the shards in index order.

The trainer's sample grids use `generate` / `write_samples` from here; running the metrics on
samples is rinkit.evaluate.metrics.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from rinkit.build import ConfigLike, build_diffusion, build_model, resolve
from rinkit.config import validate
from rinkit.datafiles import to_uint8
from rinkit.diffusion import sample
from rinkit.engine.attention import xformers_unavailable
from rinkit.errors import RinkitError
from rinkit.train.distributed import dist_context, pick_device


def image_seed(seed: int, index: int) -> int:
    """The noise seed of image `index` in a run with global seed `seed` (a SeedSequence hash, so
    neighbouring (seed, index) pairs give unrelated streams)."""
    return int(np.random.SeedSequence([int(seed) & (2 ** 63 - 1), int(index)]).generate_state(1, np.uint64)[0]
               & np.uint64(2 ** 63 - 1))


def image_generators(seed: int, indices, device="cpu") -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(image_seed(seed, i)) for i in indices]


def draw_labels(n: int, num_classes: int, seed: int, classes: list[int] | None = None) -> torch.Tensor:
    """Uniform labels for images 0..n-1, a function of the seed alone (every shard agrees)."""
    pool = torch.tensor(classes if classes else list(range(num_classes)))
    g = torch.Generator().manual_seed(int(seed))
    return pool[torch.randint(len(pool), (n,), generator=g)]


def balanced_labels(n_per_class: int, num_classes: int, device) -> torch.Tensor:
    return torch.arange(num_classes, device=device).repeat_interleave(n_per_class)


@torch.no_grad()
def generate(model, cfg: ConfigLike, n: int, labels: torch.Tensor | None, seed: int, device,
             batch_size: int = 256, context: torch.Tensor | None = None, start: int = 0,
             progress=None, carry_latents: bool | None = None, **sampler_overrides) -> torch.Tensor:
    """n samples (images start .. start+n-1 of seed `seed`) with the config's sampler, whose
    fields (name, steps, eta, guidance, guidance_interval, ddpm_variance) may be overridden. `labels` and `context`
    hold the n examples' labels / clean conditioning. `progress(k)` is called after each batch
    of k samples. Returns data in [-1, 1] on the CPU."""
    r = resolve(cfg)
    diffusion, shape = build_diffusion(cfg), r.sample_shape
    s = cfg.sampler.model_copy(update=sampler_overrides)
    out = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        lab = labels[i:i + b].to(device) if labels is not None else None
        ctx = context[i:i + b].to(device) if context is not None else None
        gens = image_generators(seed, range(start + i, start + i + b))
        x = sample(model, diffusion, (b, *shape), lab, steps=s.steps, sampler=s.name, eta=s.eta,
                   guidance=s.guidance if guided(cfg) else 0.0, ddpm_variance=s.ddpm_variance,
                   guidance_interval=s.guidance_interval, carry_latents=carry_latents, context=ctx,
                   generator=gens, device=device)
        if r.impl.finish is not None:  # e.g. a uniform random pose for shapes learned in their own frame
            x = r.impl.finish(x, r.options, gens)
        out.append(x.cpu())
        if progress is not None:
            progress(b)
    return torch.cat(out) if out else torch.empty(0, *shape)


def guided(cfg: ConfigLike) -> bool:
    """Whether the model was trained for classifier-free guidance (labels or context dropped)."""
    return bool(cfg.model.num_classes) or cfg.diffusion.context_dropout > 0


def conditioning_examples(cfg: ConfigLike, n: int, labels: torch.Tensor | None = None, split: str = "test"):
    """For modalities that condition on clean data (e.g. given video frames): the contexts of n
    held-out examples (of the requested labels where given), else None."""
    r = resolve(cfg)
    if r.impl.condition is None:
        return None
    ds = r.dataset.build(r.options, r.cfg.data, split)
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
    return r.impl.condition(x, r.options)[1]


def write_samples(model, cfg: ConfigLike, path: Path, device, seed: int = 0, per_class: int = 10) -> list[Path]:
    cfg = resolve(cfg)
    k = cfg.model.num_classes
    labels = balanced_labels(per_class, k, device) if k else None
    n = per_class * k if k else 64
    context = conditioning_examples(cfg, n, labels.cpu() if labels is not None else None)
    x = generate(model, cfg, n, labels, seed, device, context=context)
    return cfg.impl.write_samples(x, labels.cpu() if labels is not None else None, path,
                                  cfg.options, context=context)


def load_for_sampling(path: str | Path, device: str = "auto", ema: bool = True):
    """Checkpoint -> (EMA denoiser, or the raw weights with ema=False, in eval mode, its Config, device)."""
    from rinkit.train.checkpoint import load_checkpoint
    ckpt = load_checkpoint(path, weights_only=True)
    cfg = resolve(validate(ckpt.config), needs=ckpt.plugin)  # a missing plugin: which package to install
    dev = pick_device(device)
    if cfg.model.attention == "xformers" and (why := xformers_unavailable(dev)):
        # the kernel is an implementation detail of the same maths: say so, sample with SDPA
        print(f"note: the checkpoint was trained with attention=xformers, which {why}; sampling with sdpa")
        cfg.model.attention = "sdpa"
    model = build_model(cfg)
    try:
        if not ema and not ckpt.model:
            raise RinkitError(f"{path} holds EMA weights only (a shipped model); load it with ema=True")
        model.load_state_dict((ckpt.ema or ckpt.model) if ema else ckpt.model)
    except RuntimeError as e:
        raise RinkitError(f"checkpoint weights do not fit its config: {str(e).splitlines()[0]}") from None
    return model.to(dev).eval(), cfg, dev


# -- files ----------------------------------------------------------------------------------------

def save_npz(path: str | Path, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"arr_0": images}
    if labels is not None:
        arrays["arr_1"] = np.asarray(labels, dtype=np.int64)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:  # disk full / interrupted: no partial file stays
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_png_folder(folder: str | Path, images: np.ndarray, start: int = 0) -> None:
    """uint8 NHWC images -> folder/000123.png named by global index (as DiT's sample_ddp)."""
    from PIL import Image
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise RinkitError(f"a PNG folder needs image samples (N, H, W, C), got shape {images.shape}; use --npz")
    for j, img in enumerate(images):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{start + j:06d}.png")


# -- shards ---------------------------------------------------------------------------------------

def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous [start, stop) of the n indices for this rank (sizes differ by at most one)."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return start, start + per + (rank < extra)


class _Progress:
    """tqdm on rank 0 counting all ranks' images (rank 0's rate times the world size)."""

    def __init__(self, total: int, world: int, enabled: bool, desc: str = "sample"):
        self.world, self.bar = world, None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True)

    def __call__(self, k: int) -> None:
        if self.bar is not None:
            self.bar.update(min(k * self.world, self.bar.total - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def sample_to_files(model, cfg: ConfigLike, n: int, seed: int, device, *, npz: str | Path | None = None,
                    png_dir: str | Path | None = None, labels: torch.Tensor | None = None,
                    classes: list[int] | None = None, batch_size: int = 256, progress: bool = True,
                    carry_latents: bool | None = None, **sampler_overrides) -> dict:
    """Sample images 0..n-1 of `seed` (this rank's slice under torchrun) and write them.

    Labels: `labels` (n given labels) or, for a class-conditional model, drawn uniformly (from
    `classes` if given) as a function of the seed. Returns {"n", "npz", "png_dir", "seconds"}."""
    import torch.distributed as dist
    if npz is None and png_dir is None:
        raise RinkitError("give an output: --npz FILE and/or --png-dir FOLDER")
    rank, world = dist_context()
    k = cfg.model.num_classes
    if labels is not None:
        labels = torch.as_tensor(labels).long()
        if len(labels) != n:
            raise RinkitError(f"{len(labels)} labels given for {n} samples")
    elif k:
        labels = draw_labels(n, k, seed, classes)
    lo, hi = shard_range(n, rank, world)
    mine = labels[lo:hi] if labels is not None else None
    context = conditioning_examples(cfg, hi - lo, mine)
    bar = _Progress(n, world, progress and rank == 0)
    t0 = time.perf_counter()
    try:
        x = generate(model, cfg, hi - lo, mine, seed, device, batch_size=batch_size, context=context,
                     start=lo, progress=bar, carry_latents=carry_latents, **sampler_overrides)
    finally:
        bar.close()
    u8 = to_uint8(x)
    if png_dir is not None:
        write_png_folder(png_dir, u8, start=lo)
    out = {"n": n, "npz": None, "png_dir": str(png_dir) if png_dir else None}
    if npz is not None:
        final = Path(npz) if str(npz).endswith(".npz") else Path(f"{npz}.npz")
        if world == 1:
            out["npz"] = str(save_npz(final, u8, mine.numpy() if mine is not None else None))
        else:
            shard = final.with_name(f".{final.stem}.shard{rank:05d}-of-{world:05d}.npz")
            save_npz(shard, u8, mine.numpy() if mine is not None else None)
            dist.barrier()
            if rank == 0:
                out["npz"] = str(merge_shards(final, world))
            dist.barrier()
    out["seconds"] = time.perf_counter() - t0
    return out


def merge_shards(final: Path, world: int) -> Path:
    """Concatenate the ranks' shards (contiguous index ranges, rank order) into one .npz."""
    shards = [final.with_name(f".{final.stem}.shard{r:05d}-of-{world:05d}.npz") for r in range(world)]
    missing = [s.name for s in shards if not s.exists()]
    if missing:
        raise RinkitError(f"cannot merge: shard {missing[0]} is missing")
    parts = [np.load(s) for s in shards]
    images = np.concatenate([p["arr_0"] for p in parts])
    labels = np.concatenate([p["arr_1"] for p in parts]) if "arr_1" in parts[0] else None
    path = save_npz(final, images, labels)
    for s in shards:
        s.unlink()
    return path
