"""Video datasets of the built-in plugin. Every item is (clip (T, C, H, W) in [-1, 1], label).

moving_digits: one scikit-learn digit (no download), upscaled to `digit_size`, flying on a
    straight line at constant speed through a black canvas and bouncing off its walls (the
    Moving-MNIST recipe). Clip i of a split is a pure function of (data_seed, split, i), so the
    data are identical on every machine; train clips use the digits train split, test clips the
    held-out digits. Class = the digit.
video_folder: video files under data.path (data.path/train and data.path/test when present;
    a class-per-subfolder layout such as Kinetics' gives labels), decoded with decord (the
    imageio-ffmpeg reader is the fallback where no decord wheel exists). Clips of `frames`
    frames taken every `frame_stride` frames: a random start when training, the middle clip for
    the test split; short videos repeat their last frame. Frames are resized (short side,
    antialiased) and centre-cropped to frame_size. A video with fewer frames than a clip
    (`frames` = given + predicted) is an error naming it (data.skip_corrupt: checked up front and
    left out, with undecodable files).
frame_folders: the same with one folder of frame images (PNG/JPEG, sorted by name) per video;
    frames of one clip must share a size."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from rinkit.plugin import IMAGE_EXTENSIONS, RinkitError, digits_arrays

CLIPS = {"train": 16384, "test": 1024}  # clips per split (items are generated on the fly)
SPLIT_STREAM = {"train": 0, "test": 1}
VIDEO_EXT = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".gif"}


# -- moving digits ------------------------------------------------------------------------------

def bounce(p: np.ndarray, limit: float) -> np.ndarray:
    """Positions of a point moving freely on a line, folded into [0, limit] by elastic walls."""
    if limit <= 0:
        return np.zeros_like(p)
    u = np.mod(p, 2 * limit)
    return np.where(u <= limit, u, 2 * limit - u)


def trajectory(rng: np.random.Generator, frames: int, limit: tuple[float, float], speed: tuple[float, float]):
    """(frames, 2) top-left (row, col) positions: uniform start, uniform direction and speed."""
    start = rng.uniform(0, 1, 2) * np.asarray(limit)
    angle, v = rng.uniform(0, 2 * np.pi), rng.uniform(*speed)
    vel = v * np.array([np.sin(angle), np.cos(angle)])
    t = np.arange(frames)[:, None]
    free = start[None] + t * vel[None]
    return np.stack([bounce(free[:, 0], limit[0]), bounce(free[:, 1], limit[1])], axis=1)


class MovingDigits(Dataset):
    def __init__(self, digits: np.ndarray, labels: np.ndarray, frames: int, size: tuple[int, int],
                 channels: int, seed: int, stream: int, n: int):
        self.digits, self.labels = digits, labels  # digits (N, d, d) in [-1, 1]
        self.frames, self.size, self.channels, self.n = frames, size, channels, n
        self.seed, self.stream = seed, stream
        d = digits.shape[-1]
        self.limit = (size[0] - d, size[1] - d)
        scale = min(size) / 32  # ~1-2.5 px per frame on a 32-px canvas, proportionally larger
        self.speed = (1.0 * scale, 2.5 * scale)

    def __len__(self) -> int:
        return self.n

    def clip(self, i: int) -> tuple[np.ndarray, int, np.ndarray]:
        """(frames, H, W) float32 in [-1, 1], label, (frames, 2) integer top-left positions."""
        rng = np.random.default_rng([self.seed, self.stream, i])
        j = int(rng.integers(len(self.digits)))
        pos = np.rint(trajectory(rng, self.frames, self.limit, self.speed)).astype(int)
        d = self.digits.shape[-1]
        out = np.full((self.frames, *self.size), -1.0, np.float32)
        for t, (r, c) in enumerate(pos):
            out[t, r:r + d, c:c + d] = self.digits[j]
        return out, int(self.labels[j]), pos

    def __getitem__(self, i: int):
        x, y, _ = self.clip(int(i))
        x = torch.from_numpy(x)[:, None]
        return x.expand(-1, self.channels, -1, -1).contiguous(), y


@functools.lru_cache(maxsize=8)
def upscaled_digits(split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = digits_arrays()[split]
    t = F.interpolate(torch.from_numpy(x)[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return t[:, 0].clamp(-1, 1).numpy(), y


def digit_size(options) -> int:
    return options.digit_size or min(options.size) // 2


def moving_digits(options, data_cfg, split: str = "train") -> MovingDigits:
    digits, labels = upscaled_digits(split, digit_size(options))
    return MovingDigits(digits, labels, options.frames, options.size, options.channels,
                        options.data_seed, SPLIT_STREAM[split], CLIPS[split])


# -- real video ---------------------------------------------------------------------------------

def _decord():
    try:
        import decord
    except ImportError:
        return None
    decord.bridge.set_bridge("native")
    return decord


def video_length(path: Path) -> int:
    dec = _decord()
    try:
        if dec is not None:
            return len(dec.VideoReader(str(path), num_threads=1))
        import imageio.v2 as iio
        with iio.get_reader(path, "ffmpeg") as r:
            return int(r.count_frames())
    except Exception as e:  # decoder errors carry C++ traces: one line naming the file instead
        raise RinkitError(f"cannot decode {path}: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None


def read_frames(path: Path, indices: list[int]) -> np.ndarray:
    """(len(indices), H, W, 3) uint8 frames of a video file."""
    dec = _decord()
    try:
        if dec is not None:
            return dec.VideoReader(str(path), num_threads=1).get_batch(indices).asnumpy()[..., :3]
        import imageio.v2 as iio  # fallback: imageio's ffmpeg reader (decodes sequentially)
        want, out = set(indices), {}
        with iio.get_reader(path, "ffmpeg") as r:
            for i, frame in enumerate(r):
                if i in want:
                    out[i] = frame[..., :3]
                if i >= max(indices):
                    break
        return np.stack([out[i] for i in indices])
    except Exception as e:  # decoder errors carry C++ traces: one line naming the file instead
        raise RinkitError(f"cannot decode {path}: {str(e).splitlines()[0][:200]}") from None


def clip_indices(length: int, frames: int, stride: int, start: int) -> list[int]:
    return [min(start + i * stride, length - 1) for i in range(frames)]


def fit_frames(frames: np.ndarray, size: tuple[int, int], channels: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, C, h, w) in [-1, 1]: short-side resize, centre crop."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    h, w = x.shape[-2:]
    s = max(size[0] / h, size[1] / w)
    nh, nw = max(size[0], round(h * s)), max(size[1], round(w * s))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    x = x[:, :, top:top + size[0], left:left + size[1]].clamp(-1, 1)
    if channels == 1:
        x = x.mean(1, keepdim=True)
    elif channels != 3:
        raise RinkitError(f"video frames are RGB: channels must be 1 or 3, got {channels}")
    return x.contiguous()


def _split_root(data_cfg, split: str) -> Path:
    if not data_cfg.path:
        raise RinkitError(f"dataset {data_cfg.dataset!r} needs data.path (a folder of videos)")
    root = Path(data_cfg.path).expanduser()
    if not root.is_dir():
        raise RinkitError(f"data.path {root} is not a folder")
    return root / split if (root / split).is_dir() else root


def _labelled(root: Path, items: list[Path]) -> tuple[list[Path], list[int]]:
    """Label = index of the first-level subfolder (Kinetics' class folders), else 0."""
    classes = sorted({p.relative_to(root).parts[0] for p in items if len(p.relative_to(root).parts) > 1})
    index = {c: i for i, c in enumerate(classes)}
    return items, [index.get(p.relative_to(root).parts[0], 0) if len(p.relative_to(root).parts) > 1 else 0
                   for p in items]


class VideoClips(Dataset):
    def __init__(self, items: list, labels: list[int], options, train: bool, reader, length,
                 skip_corrupt: bool = False):
        self.items, self.labels, self.opts, self.train = items, labels, options, train
        self.reader, self.length = reader, length
        self._lengths: dict[int, int] = {}
        if skip_corrupt:  # check every video once, up front; leave out (and count) the bad ones
            keep = []
            for i in range(len(items)):
                try:
                    self._checked_length(i)
                    keep.append(i)
                except RinkitError:
                    pass
            if len(keep) < len(items):
                print(f"data: skipped {len(items) - len(keep)} of {len(items)} videos that are unreadable or "
                      f"shorter than {options.frames} frames (data.skip_corrupt)")
            self._lengths = {j: self._lengths[i] for j, i in enumerate(keep)}
            self.items, self.labels = [items[i] for i in keep], [labels[i] for i in keep]
            if not self.items:
                raise RinkitError("no usable videos left (all skipped by data.skip_corrupt)")

    def _checked_length(self, i: int) -> int:
        n = self._lengths.get(i)
        if n is None:
            n = self.length(self.items[i])
            if n < self.opts.frames:
                raise RinkitError(f"{self.items[i]}: {n} frame(s), shorter than a clip of {self.opts.frames} "
                                  f"(context_frames {self.opts.context_frames} given + "
                                  f"{self.opts.predicted_frames} predicted)")
            self._lengths[i] = n
        return n

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        o = self.opts
        n = self._checked_length(i)
        span = (o.frames - 1) * o.frame_stride + 1
        room = max(n - span, 0)
        start = int(torch.randint(room + 1, ())) if self.train else room // 2
        idx = clip_indices(n, o.frames, o.frame_stride, start)
        return fit_frames(self.reader(self.items[i], idx), o.size, o.channels), self.labels[i]


def video_folder(options, data_cfg, split: str = "train") -> VideoClips:
    root = _split_root(data_cfg, split)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXT and p.is_file())
    if not files:
        raise RinkitError(f"no video files ({', '.join(sorted(VIDEO_EXT))}) under {root}")
    items, labels = _labelled(root, files)
    return VideoClips(items, labels, options, split == "train", read_frames, video_length, data_cfg.skip_corrupt)


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _read_image_frames(folder: Path, indices: list[int]) -> np.ndarray:
    from PIL import Image
    files = _frame_files(folder)
    frames = {}
    for i in sorted(set(indices)):
        try:
            with Image.open(files[i]) as im:
                frames[i] = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as e:  # truncated / not an image
            raise RinkitError(f"cannot read frame {files[i]}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    sizes = {i: f.shape[:2] for i, f in frames.items()}
    if len(set(sizes.values())) > 1:
        a, b = sorted(sizes, key=lambda i: sizes[i])[::len(sizes) - 1]
        raise RinkitError(f"{folder}: frames differ in size ({files[a].name} is {sizes[a][1]}x{sizes[a][0]}, "
                          f"{files[b].name} is {sizes[b][1]}x{sizes[b][0]}); one video's frames must share a size")
    return np.stack([frames[i] for i in indices])


def frame_folders(options, data_cfg, split: str = "train") -> VideoClips:
    root = _split_root(data_cfg, split)
    folders = sorted({p.parent for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()})
    if not folders:
        raise RinkitError(f"no folders of frame images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    items, labels = _labelled(root, folders)
    return VideoClips(items, labels, options, split == "train", _read_image_frames,
                      lambda f: len(_frame_files(f)), data_cfg.skip_corrupt)
