"""`rinkit eval`: FID, sFID, Inception Score, precision and recall of a sample set against real
images or reference statistics, following OpenAI's ADM evaluator (guided-diffusion/evaluations):
the same network (TF Inception 2015-12-05), the same feature layers, k = 3 precision/recall
against at most 10k reference images, FID/sFID against the reference's stored statistics."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from rinkit.errors import RinkitError, first_line
from rinkit.evaluate.fid import Stats, fid, load_ref, save_ref, sfid, stats_from_features
from rinkit.evaluate.inception import InceptionFeatures, extract
from rinkit.evaluate.inception_score import inception_score
from rinkit.evaluate.precision_recall import precision_recall

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PR_REF_MAX = 10_000  # the size of ADM's reference image batches


def load_images(source: str | Path | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """An .npz (arr_0 uint8 NHWC, optional arr_1 labels), an .npy (uint8 NHWC), a folder of
    images or a uint8 array (N, H, W[, C]) -> (images NHWC, labels). Nothing is unpickled;
    unreadable files are named in the error."""
    if isinstance(source, np.ndarray):
        return _check_images(source, "images"), None
    p = Path(source)
    if not p.exists():
        raise RinkitError(f"not found: {p}")
    if p.is_dir():
        from PIL import Image
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise RinkitError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {p}")
        imgs = []
        for f in files:
            try:
                with Image.open(f) as im:
                    a = np.asarray(im.convert("L") if im.mode in ("L", "I;16", "1") else im.convert("RGB"))
            except (OSError, ValueError, SyntaxError) as e:  # truncated / not an image
                raise RinkitError(f"cannot read image {f}: {first_line(str(e)) or type(e).__name__}") from None
            imgs.append(a[..., None] if a.ndim == 2 else a)
        shapes = {a.shape for a in imgs}
        if len(shapes) > 1:
            raise RinkitError(f"images in {p} differ in size or channels: {sorted(shapes)[:2]}; resize them first")
        return np.stack(imgs), None
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):  # an .npy: the images alone
            x, labels, what = data, None, str(p)
        else:
            if "arr_0" not in data.files:
                raise RinkitError(f"{p}: no arr_0 image array (the ADM sample layout)")
            x, labels, what = data["arr_0"], (data["arr_1"] if "arr_1" in data.files else None), f"{p}: arr_0"
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        why = "object arrays are pickles and are not loaded" if "allow_pickle" in str(e) else first_line(str(e))
        raise RinkitError(f"cannot read {p}: {why or type(e).__name__}") from None
    return _check_images(x, what), labels


def _check_images(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise RinkitError(f"{what} must be uint8 images (N, H, W, 1 or 3), got {x.dtype} {x.shape}")
    return x if x.ndim == 4 else x[..., None]


def image_shape(images: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in images.shape[1:4])


def check_protocol(samples: np.ndarray, ref: Stats, min_samples: int | None = None) -> None:
    """FID compares like with like: samples at the reference images' resolution, and at least as
    many as the protocol asks for (`min_samples`, else the reference's own): a Fréchet distance
    of fewer samples is biased upward and not comparable."""
    if ref.image_shape is not None and tuple(samples.shape[1:3]) != tuple(ref.image_shape[:2]):
        h, w = ref.image_shape[:2]
        raise RinkitError(f"the samples are {samples.shape[1]}x{samples.shape[2]} but the reference was made from "
                          f"{h}x{w} images: resize or crop one of them (FID compares like with like)")
    need = ref.min_samples if min_samples is None else min_samples
    if need and len(samples) < need:
        raise RinkitError(f"{len(samples)} samples, but this reference's protocol needs at least {need} "
                          "(FID of fewer samples is biased upward); sample more, or pass --min-samples to "
                          "compute a proxy")


def _network(net) -> InceptionFeatures:
    """`net` or, given a loader (a function), what it returns: the CLI checks its inputs before
    the seconds-long weight load."""
    return net if isinstance(net, torch.nn.Module) else net()


def make_ref(source: str | Path | np.ndarray, out: str | Path, net, batch_size: int = 100,
             pr_images: int = PR_REF_MAX, seed: int = 0, progress: bool = True,
             min_samples: int | None = None) -> tuple[Path, Stats]:
    """Statistics of a real image set, saved once: mu/sigma over all images, plus up to
    `pr_images` images (a seeded random subset) and their features for precision/recall, the
    images' shape and the protocol's smallest sample count (`min_samples`, optional)."""
    images, _ = load_images(source)
    if len(images) < 2:
        raise RinkitError(f"{'images' if isinstance(source, np.ndarray) else source}: "
                          "need at least 2 images for statistics")
    feats = extract(_network(net), images, batch_size, progress, desc="reference")
    stats = stats_from_features(feats)
    keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:pr_images])
    stats.images, stats.pool = images[keep], feats["pool"][keep]
    stats.image_shape, stats.min_samples = image_shape(images), min_samples
    return save_ref(out, stats), stats


def evaluate(samples: str | Path | np.ndarray, ref: str | Path | Stats, net,
             batch_size: int = 100, pr: bool = True, progress: bool = True, min_samples: int | None = None) -> dict:
    """All metrics of `samples` (npz / folder / uint8 NHWC array) against `ref` (reference .npz
    with statistics, images as npz / folder, or loaded Stats) with `net` (InceptionFeatures or a
    function that loads it). `min_samples` overrides the reference's protocol minimum (a proxy
    evaluation)."""
    fake = load_images(samples)[0]
    if len(fake) < 2:
        raise RinkitError("need at least 2 samples")
    ref_stats = ref if isinstance(ref, Stats) else load_ref(ref) if Path(ref).is_file() else None
    if ref_stats is None:  # real images given: their statistics are computed here
        real = load_images(ref)[0]
        check_protocol(fake, Stats(None, None, image_shape=image_shape(real)), min_samples)
        net = _network(net)
        rf = extract(net, real, batch_size, progress, desc="reference")
        ref_stats = stats_from_features(rf)
        keep = np.sort(np.random.default_rng(0).permutation(len(real))[:PR_REF_MAX])
        ref_stats.pool, ref_stats.image_shape = rf["pool"][keep], image_shape(real)
    check_protocol(fake, ref_stats, min_samples)
    net = _network(net)
    ff = extract(net, fake, batch_size, progress, desc="samples")
    fs = stats_from_features(ff)
    if len(fs.mu) != len(ref_stats.mu):
        raise RinkitError(f"reference statistics are {len(ref_stats.mu)}-d, these features {len(fs.mu)}-d")
    out = {"samples": len(fake), "reference": ref_stats.n, "inception": net.source,
           "fid": fid(fs, ref_stats), "sfid": sfid(fs, ref_stats)}
    if net.has_logits:
        out["is"], out["is_std"] = inception_score(ff["logits"], splits=min(10, len(fake)))
    else:
        out["is"] = out["is_std"] = None
        out["is_unavailable"] = ("the Inception weights have no classifier layer (pool3-only TorchScript); "
                                 "pass torch-fidelity's weights-inception-2015-12-05-6726825d.pth for IS")
    if pr:
        if ref_stats.pool is None and ref_stats.images is not None:
            ref_stats.pool = extract(net, ref_stats.images, batch_size, progress, desc="reference images")["pool"]
        if ref_stats.pool is None:
            out["precision"] = out["recall"] = None
            out["pr_unavailable"] = "the reference holds statistics only (no arr_0 images)"
        else:
            if "radii" not in ref_stats.cache:
                from rinkit.evaluate.precision_recall import knn_radii
                ref_stats.cache["radii"] = knn_radii(torch.as_tensor(ref_stats.pool, dtype=torch.float32))
            out["precision"], out["recall"] = precision_recall(ref_stats.pool, ff["pool"],
                                                               real_radii=ref_stats.cache["radii"])
    return out
