"""Image datasets of the built-in plugin.

`digits`: the 1,797 8x8 handwritten digits that ship inside scikit-learn (no download), 10
classes, split once into a stratified 80 % train / 20 % test split with a fixed seed
(rinkit.plugin.digits_arrays). Pixels 0..16 map to [-1, 1]; other image sizes / channel counts
are produced by resizing / repeating."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from rinkit.plugin import digits_arrays  # the digits and their split: public, the video plugin uses them too


class TensorImages(Dataset):
    """In-memory images (N, C, H, W) in [-1, 1] with integer labels; optional random h-flip."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, hflip: bool = False):
        self.images, self.labels, self.hflip = images.contiguous(), labels.long(), hflip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, int(self.labels[i])


def fit_images(x: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> the configured channel count and size (antialiased bilinear)."""
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise ValueError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)
    return x.contiguous()


def digits(options, data_cfg, split: str = "train") -> TensorImages:
    x, y = digits_arrays()[split]
    images = fit_images(torch.from_numpy(x)[:, None], options.channels, options.size)
    return TensorImages(images, torch.from_numpy(y), hflip=data_cfg.hflip if split == "train" else False)


# -- datasets read from disk ---------------------------------------------------------------------
# Every source yields (x, label) with x a float (C, H, W) tensor in [-1, 1] of the configured
# size. Files are decoded lazily in __getitem__ (so DataLoader workers share the work) and
# arrays are kept as uint8. A file that cannot be read raises RinkitError naming it; with
# data.skip_corrupt the file sources check every file once when the dataset is built and leave
# out (and count) the bad ones instead.

import gzip  # noqa: E402
import io  # noqa: E402
import pickle  # noqa: E402
import re  # noqa: E402
import tarfile  # noqa: E402
import zipfile  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

from rinkit.plugin import IMAGE_EXTENSIONS, RinkitError  # noqa: E402

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def adm_center_crop(img, size: tuple[int, int]):
    """guided-diffusion's `center_crop_arr`: halve with a BOX filter while the image is at least
    twice the target, bicubic-resize the short side to the target, centre-crop."""
    from PIL import Image
    h, w = size
    while min(img.size) >= 2 * max(h, w):
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = max(h / img.size[1], w / img.size[0])
    img = img.resize(tuple(max(round(x * scale), t) for x, t in zip(img.size, (w, h))), resample=Image.BICUBIC)
    arr = np.asarray(img)
    top, left = (arr.shape[0] - h) // 2, (arr.shape[1] - w) // 2
    return arr[top:top + h, left:left + w]


def pad_or_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) in [-1, 1] -> (..., H, W): pad with the background (-1) / centre-crop."""
    out = x
    for dim, target in ((-2, size[0]), (-1, size[1])):
        n = out.shape[dim]
        if n < target:
            before = (target - n) // 2
            pads = [0, 0, 0, 0]
            pads[(0 if dim == -1 else 2)] = before
            pads[(1 if dim == -1 else 3)] = target - n - before
            out = F.pad(out, pads, value=-1.0)
        elif n > target:
            start = (n - target) // 2
            out = out.narrow(dim, start, target)
    return out


def _to_tensor(arr: np.ndarray, channels: int) -> torch.Tensor:
    """HxW or HxWxC uint8 -> (channels, H, W) float in [-1, 1]."""
    x = torch.from_numpy(np.array(arr))  # a copy: the arrays may be read-only buffers
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
    x = x.float() / 127.5 - 1.0
    if x.shape[0] != channels:
        x = fit_images(x[None], channels, tuple(x.shape[-2:]))[0]
    return x


def decode_image(data, name: str, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Bytes or a path -> (C, H, W) in [-1, 1] with the ADM crop; RinkitError names the file."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            return _to_tensor(adm_center_crop(img, size), channels)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise RinkitError(f"cannot read image {name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _usable(read, name: str) -> bool:
    from PIL import Image
    try:
        with Image.open(read()) as img:
            img.load()
        return True
    except Exception:  # noqa: BLE001 - any failure means "unreadable"
        return False


class ImageFileDataset(Dataset):
    """Images decoded on access. `items` are (source, label); a source is a path or a
    (tar path, member name, offset, size) record read with one seek."""

    def __init__(self, items: list, options, data_cfg, split: str, classes: list[str] | None = None):
        self.items, self.classes = items, classes
        self.channels, self.size = options.channels, options.size
        self.hflip = data_cfg.hflip and split == "train"
        self.num_classes = len(classes) if classes else 0
        self.skipped = 0
        if data_cfg.skip_corrupt:
            keep = [it for it in items if _usable(lambda it=it: io.BytesIO(self._bytes(it[0])), self._name(it[0]))]
            self.skipped = len(items) - len(keep)
            if self.skipped:
                print(f"data: skipped {self.skipped} unreadable file(s) of {len(items)} (data.skip_corrupt)")
            self.items = keep
        if not self.items:
            raise RinkitError("no readable images found" + (f" ({self.skipped} skipped as unreadable)" if self.skipped else ""))

    @staticmethod
    def _name(src) -> str:
        return str(src) if not isinstance(src, tuple) else f"{src[0]}:{src[1]}"

    @staticmethod
    def _bytes(src) -> bytes:
        try:
            if isinstance(src, tuple):
                with open(src[0], "rb") as f:
                    f.seek(src[2])
                    data = f.read(src[3])
                if len(data) != src[3]:
                    raise OSError("shard truncated")
                return data
            return Path(src).read_bytes()
        except OSError as e:
            raise RinkitError(f"cannot read {ImageFileDataset._name(src)}: {e.strerror or e}") from None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        src, label = self.items[i]
        x = decode_image(self._bytes(src), self._name(src), self.channels, self.size)
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, label


class ArrayImages(Dataset):
    """uint8 images (N, H, W[, C]) kept as they are; converted, fitted and flipped per item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, options, data_cfg, split: str,
                 name: str, num_classes: int = 0):
        if images.ndim not in (3, 4) or len(images) == 0:
            raise RinkitError(f"{name}: expected images shaped (N, H, W) or (N, H, W, C), got {images.shape}")
        if labels is not None and len(labels) != len(images):
            raise RinkitError(f"{name}: {len(images)} images but {len(labels)} labels")
        if images.dtype.kind not in "buif":
            raise RinkitError(f"{name}: pixels must be numbers, got dtype {images.dtype}")
        if images.dtype.kind == "f":  # NaN would silently become 0 below
            for start in range(0, len(images), 4096):  # in chunks: no full-size boolean copy
                bad = ~np.isfinite(images[start:start + 4096]).reshape(min(4096, len(images) - start), -1).all(1)
                if bad.any():
                    raise RinkitError(f"{name}: image {start + int(np.argmax(bad))} holds NaN or infinite pixels")
        if images.dtype != np.uint8:  # floats in [-1, 1] or [0, 1], or integers 0..255
            if np.issubdtype(images.dtype, np.floating) and images.min() >= -1.0 and images.max() <= 1.0:
                images = (images + 1.0) * 127.5 if images.min() < 0 else images * 255.0
            images = np.clip(np.round(images), 0, 255).astype(np.uint8)
        self.images = images
        self.labels = np.zeros(len(images), np.int64) if labels is None else np.asarray(labels).astype(np.int64)
        if len(self.labels) and self.labels.min() < 0:
            raise RinkitError(f"{name}: negative label {int(self.labels.min())}")
        self.num_classes = num_classes or (int(self.labels.max()) + 1 if labels is not None else 0)
        self.channels, self.size, self.fit = options.channels, options.size, data_cfg.fit
        self.hflip = data_cfg.hflip and split == "train"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        x = _to_tensor(self.images[i], self.channels)
        if tuple(x.shape[-2:]) != tuple(self.size):
            if self.fit == "pad":
                x = pad_or_crop(x, self.size)
            else:  # ADM: centre-crop to a square, then resize
                s = min(x.shape[-2:])
                x = pad_or_crop(x, (s, s))
                x = fit_images(x[None], self.channels, self.size)[0]
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, int(self.labels[i])


def _need_path(data_cfg, what: str) -> Path:
    if not data_cfg.path:
        raise RinkitError(f"dataset {data_cfg.dataset!r} reads {what} from disk: set data.path")
    p = Path(data_cfg.path).expanduser()
    if not p.exists():
        raise RinkitError(f"data.path {str(p)!r} does not exist")
    return p


def _split_dir(root: Path, split: str) -> Path:
    names = ("train",) if split == "train" else ("test", "val", "valid", "validation")
    for n in names:
        if (root / n).is_dir():
            return root / n
    return root


def image_folder(options, data_cfg, split: str = "train") -> ImageFileDataset:
    """`root/<class>/*.png|jpg...` -> labels by sorted class-folder name; images directly in
    `root` (no class folders) -> unconditional (label 0). `root/train` and `root/test|val` are
    used for the splits when present."""
    root = _split_dir(_need_path(data_cfg, "an image folder"), split)
    is_img = lambda p: p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS  # noqa: E731
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and d.name not in ("train", "test", "val"))
    class_dirs = [d for d in class_dirs if any(is_img(p) for p in d.rglob("*"))]
    if class_dirs:
        items = [(p, k) for k, d in enumerate(class_dirs) for p in sorted(d.rglob("*")) if is_img(p)]
        classes = [d.name for d in class_dirs]
    else:
        items, classes = [(p, 0) for p in sorted(root.iterdir()) if is_img(p)], None
    if not items:
        raise RinkitError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {root}")
    return ImageFileDataset(items, options, data_cfg, split, classes)


# CIFAR-10's official batches are Python pickles of {b"data": uint8 (N, 3072), b"labels": [...]}.
# Unpickling can run arbitrary code, so only the globals a numpy array needs are allowed.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _ArraysOnly(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, OSError) as e:
        raise RinkitError(f"cannot read CIFAR batch {path}: {e}") from None
    if not isinstance(d, dict):
        raise RinkitError(f"{path}: not a CIFAR batch (a {type(d).__name__}, not a dict)")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    data, labels = d.get("data"), d.get("labels", d.get("fine_labels"))
    if not isinstance(data, np.ndarray) or labels is None or data.ndim != 2 or data.shape[1] != 3072:
        raise RinkitError(f"{path}: not a CIFAR batch (expected 'data' (N, 3072) and 'labels')")
    labels = np.asarray(labels, np.int64)
    if len(labels) != len(data):
        raise RinkitError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def cifar10(options, data_cfg, split: str = "train") -> ArrayImages:
    """The official `cifar-10-batches-py` folder (data_batch_1..5, test_batch): data.path is
    that folder or the one holding it."""
    root = _need_path(data_cfg, "the CIFAR-10 python batches")
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise RinkitError(f"CIFAR-10 batch {root / missing[0]} not found (expected the official "
                          "cifar-10-batches-py folder)")
    parts = [load_cifar_batch(root / n) for n in names]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if y.max() >= 10:
        raise RinkitError(f"{root}: CIFAR-10 label {int(y.max())} out of range 0..9")
    return ArrayImages(x, y, options, data_cfg, split, str(root), num_classes=10)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format), gzipped or not, of unsigned bytes."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise RinkitError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RinkitError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    start, n = 4 + 4 * ndim, int(np.prod(dims))
    if len(raw) != start + n:
        raise RinkitError(f"{path}: IDX header says {n} values, file holds {len(raw) - start}")
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise RinkitError(f"IDX file {root / (stem + '.gz')} not found")


def idx_images(options, data_cfg, split: str, default_dir: str | None = None) -> ArrayImages:
    """MNIST-format `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` (MNIST, Fashion-MNIST)."""
    if data_cfg.path and default_dir and not Path(data_cfg.path).expanduser().exists():
        raise RinkitError(f"dataset {data_cfg.dataset!r}: data.path {data_cfg.path!r} does not exist "
                          f"(the default is {default_dir}: apt-get install dataset-fashion-mnist)")
    if data_cfg.path:
        root = _need_path(data_cfg, "IDX files")
    elif default_dir and Path(default_dir).is_dir():
        root = Path(default_dir)
    else:
        hint = (f" (default {default_dir}: apt-get install dataset-fashion-mnist)" if default_dir else "")
        raise RinkitError(f"dataset {data_cfg.dataset!r}: no IDX files; set data.path / --data{hint}")
    pre = "train" if split == "train" else "t10k"
    x = read_idx(_idx_file(root, f"{pre}-images-idx3-ubyte"))
    y = read_idx(_idx_file(root, f"{pre}-labels-idx1-ubyte"))
    if x.ndim != 3 or y.ndim != 1:
        raise RinkitError(f"{root}: expected (N, H, W) images and (N,) labels, got {x.shape} and {y.shape}")
    if y.size and y.max() >= 10:
        raise RinkitError(f"{root}: label {int(y.max())} out of range 0..9")
    return ArrayImages(x, y, options, data_cfg, split, str(root), num_classes=10)


def npz_images(options, data_cfg, split: str = "train") -> ArrayImages:
    """A `.npz` of images (`x`, `images` or `arr_0`; uint8 NHWC / NHW, or floats in [0, 1] or
    [-1, 1]) and optional labels (`y`, `labels` or `arr_1`). data.path is the file, or a folder
    with train.npz / test.npz. Loaded with allow_pickle=False."""
    p = _need_path(data_cfg, "a .npz file")
    if p.is_dir():
        cand = [p / f"{split}.npz"] + ([p / "val.npz"] if split != "train" else [])
        p = next((c for c in cand if c.is_file()), cand[0])
        if not p.is_file():
            raise RinkitError(f"{p} not found")
    try:
        z = np.load(p, allow_pickle=False)
        if not hasattr(z, "files"):
            raise RinkitError(f"{p}: a single array, not a .npz archive of named arrays (x, y)")
        with z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        why = "object arrays are pickles and are not loaded" if "allow_pickle" in str(e) else str(e).splitlines()[0]
        raise RinkitError(f"cannot read {p}: {why or type(e).__name__}") from None
    xk = next((k for k in ("x", "images", "arr_0") if k in arrays), None)
    if xk is None:
        raise RinkitError(f"{p}: no image array (looked for x, images, arr_0; found {', '.join(arrays)})")
    yk = next((k for k in ("y", "labels", "arr_1") if k in arrays), None)
    x = arrays[xk]
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):  # NCHW -> NHWC
        x = x.transpose(0, 2, 3, 1)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    y = arrays[yk] if yk else None
    if y is not None and not np.issubdtype(y.dtype, np.integer):
        raise RinkitError(f"{p}: labels {yk!r} must be integers, got {y.dtype}")
    return ArrayImages(x, y, options, data_cfg, split, str(p))


def _expand_shards(spec: str) -> list[Path]:
    """A folder of .tar, a glob, or webdataset brace notation `shard-{000000..000146}.tar`."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if m:
        a, b = m.group(1), m.group(2)
        return [Path(spec[:m.start()] + str(i).zfill(len(a)) + spec[m.end():]) for i in range(int(a), int(b) + 1)]
    p = Path(spec).expanduser()
    if p.is_dir():
        return sorted(p.glob("*.tar"))
    if any(c in spec for c in "*?["):
        import glob
        return [Path(q) for q in sorted(glob.glob(str(p)))]
    return [p]


def tar_shards(options, data_cfg, split: str = "train") -> ImageFileDataset:
    """webdataset-style uncompressed .tar shards: files sharing a key (`n01440764_10026.jpg`,
    `n01440764_10026.cls`) form one example; the label is the integer in `.cls` (or `.label`),
    0 if there is none. Member offsets are indexed once, then each example is one seek + read,
    so access is random (exact resume) rather than a stream."""
    if not data_cfg.path:
        raise RinkitError("dataset 'tar' reads webdataset .tar shards: set data.path (folder, glob or {a..b} pattern)")
    spec = data_cfg.path
    root = Path(spec).expanduser()
    if root.is_dir() and _split_dir(root, split) != root:
        spec = str(_split_dir(root, split))
    shards = _expand_shards(spec)
    missing = [s for s in shards if not s.is_file()]
    if not shards or missing:
        raise RinkitError(f"tar shard {missing[0] if missing else spec} not found")
    skip = data_cfg.skip_corrupt
    per_shard, truncated, skipped = [], 0, 0
    for shard in shards:
        images, labels, cut = _scan_shard(shard)
        if cut and not skip:
            raise RinkitError(f"tar shard {shard} is truncated ({cut}); re-create or re-download it, or set "
                              "data.skip_corrupt=true to train on its complete examples")
        truncated += bool(cut)
        per_shard.append((shard, images, labels))
    # A webdataset example is all files of a key: when labels exist, an image without one is an
    # incomplete example (e.g. its .cls was cut off), not one of class 0.
    labelled = any(labels for _, _, labels in per_shard)
    items, labels_seen = [], set()
    for shard, images, labels in per_shard:
        for key in sorted(images):
            if labelled and key not in labels:
                if not skip:
                    raise RinkitError(f"{shard}:{key}: an image without a .cls label while the shards have "
                                      "labels (an incomplete example); set data.skip_corrupt=true to skip it")
                skipped += 1
                continue
            items.append((images[key], labels.get(key, 0)))
            labels_seen.add(labels.get(key, 0))
    if truncated or skipped:
        print(f"data: {truncated} truncated shard(s) (their complete examples kept), {skipped} image(s) "
              "without a label skipped (data.skip_corrupt)")
    if not items:
        raise RinkitError(f"no images in the tar shards {spec}")
    n_cls = max(labels_seen) + 1 if labels_seen != {0} else 0
    return ImageFileDataset(items, options, data_cfg, split,
                            classes=[str(i) for i in range(n_cls)] if n_cls else None)


def _scan_shard(shard: Path) -> tuple[dict, dict, str]:
    """Index one shard: {key: (shard, member, offset, size)} of images, {key: label}, and why the
    shard is truncated ('' if it is whole). Only complete members are indexed. A tar ends with
    two zero blocks; a file cut at a member boundary reads as a shorter valid archive without them."""
    size, members, cut = shard.stat().st_size, [], ""
    try:
        with tarfile.open(shard, "r:") as tf:
            try:
                for m in tf:
                    members.append(m)
            except tarfile.ReadError as e:  # the file ends inside a member
                if not members:
                    raise
                cut = f"{e} after {members[-1].name}"
            if not cut:
                with open(shard, "rb") as f:
                    f.seek(tf.offset)
                    if f.read(1024) != bytes(1024):
                        cut = f"no end-of-archive marker after {members[-1].name if members else 'the start'}"
            images, labels = {}, {}
            with open(shard, "rb") as f:
                for m in members:
                    if not m.isfile() or m.offset_data + m.size > size:
                        continue
                    key, _, ext = m.name.partition(".")
                    ext = "." + ext.lower()
                    if ext in IMAGE_EXTENSIONS:
                        images[key] = (str(shard), m.name, m.offset_data, m.size)
                    elif ext in (".cls", ".label"):
                        f.seek(m.offset_data)
                        text = f.read(m.size).decode("utf-8", "replace").strip()
                        if not re.fullmatch(r"\d+", text):
                            raise RinkitError(f"{shard}:{m.name}: label {text[:20]!r} is not a non-negative integer")
                        labels[key] = int(text)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise RinkitError(f"cannot read tar shard {shard}: {e}") from None
    return images, labels, cut


def imagenet(options, data_cfg, split: str = "train") -> ImageFileDataset:
    """ImageNet (or any large class-labelled set) either as the usual ILSVRC folder of synset
    folders (`train/n01440764/*.JPEG`, `val/...`) or as webdataset .tar shards (a folder of
    .tar, a glob or a `{000000..001281}` pattern)."""
    if not data_cfg.path:
        raise RinkitError("dataset 'imagenet' reads from disk: set data.path (a folder of synset "
                          "folders with train/ and val/, or webdataset .tar shards)")
    spec, root = data_cfg.path, Path(data_cfg.path).expanduser()
    sub = _split_dir(root, split) if root.is_dir() else root
    if root.is_dir() and not any(sub.glob("*.tar")):
        return image_folder(options, data_cfg, split)
    if not root.is_dir() and not spec.endswith(".tar") and not any(c in spec for c in "*?[{"):
        raise RinkitError(f"data.path {spec!r} is neither a folder nor .tar shards")
    return tar_shards(options, data_cfg, split)
