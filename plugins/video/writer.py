"""Sample videos: an animated GIF and an H.264 MP4 (imageio with its packaged ffmpeg) of a grid
of clips, plus a PNG film strip (one row per clip, one column per frame). Given frames get a
green border and generated frames a red one (the usual frame-prediction convention)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rinkit.plugin import RinkitError, to_uint8

GIVEN, GENERATED = (40, 180, 60), (210, 50, 50)
MAX_GRID, MAX_STRIP = 64, 16


def to_uint8_video(x: torch.Tensor) -> np.ndarray:
    """(B, T, C, H, W) in [-1, 1] -> (B, T, H, W, 3) uint8 (grey repeated to RGB)."""
    x = torch.from_numpy(to_uint8(x))  # the layout is kept for non-image (not 4-D) samples
    if x.shape[2] == 1:
        x = x.expand(-1, -1, 3, -1, -1)
    elif x.shape[2] != 3:
        x = x[:, :, :3]
    return x.permute(0, 1, 3, 4, 2).numpy()


def _cells(videos: np.ndarray, given: int, pad: int) -> np.ndarray:
    """Frames with a coloured border of `pad` pixels: (B, T, H + 2 pad, W + 2 pad, 3)."""
    b, t, h, w, _ = videos.shape
    out = np.empty((b, t, h + 2 * pad, w + 2 * pad, 3), np.uint8)
    out[:, :given] = GIVEN
    out[:, given:] = GENERATED if given else 255
    out[:, :, pad:pad + h, pad:pad + w] = videos
    return out


def _tile(cells: np.ndarray, ncol: int, multiple: int = 1) -> np.ndarray:
    """(N, H, W, 3) -> one image with ncol columns, padded white to a multiple of `multiple`."""
    n, h, w, _ = cells.shape
    nrow = -(-n // ncol)
    hh, ww = nrow * h, ncol * w
    canvas = np.full((-(-hh // multiple) * multiple, -(-ww // multiple) * multiple, 3), 255, np.uint8)
    for i, c in enumerate(cells):
        r, k = divmod(i, ncol)
        canvas[r * h:(r + 1) * h, k * w:(k + 1) * w] = c
    return canvas


def _upscale(frames: np.ndarray, min_cell: int, h: int) -> np.ndarray:
    s = max(1, min_cell // h)  # tiny frames are enlarged (nearest) so they can be seen
    return frames.repeat(s, axis=-3).repeat(s, axis=-2) if s > 1 else frames


def video_grid_frames(videos: np.ndarray, given: int, min_cell: int = 64, multiple: int = 16) -> np.ndarray:
    """(B, T, H, W, 3) -> (T, H', W', 3): every clip in a square grid, frame by frame."""
    b, t, h, w, _ = videos.shape
    cells = _cells(_upscale(videos, min_cell, h), given, pad=2)
    ncol = int(np.ceil(np.sqrt(b)))
    return np.stack([_tile(cells[:, i], ncol, multiple) for i in range(t)])


def film_strip(videos: np.ndarray, given: int, min_cell: int = 32) -> np.ndarray:
    """(B, T, H, W, 3) -> one image: a row per clip, a column per frame."""
    b, t, h, w, _ = videos.shape
    cells = _cells(_upscale(videos, min_cell, h), given, pad=1)
    return np.concatenate([_tile(cells[i], t) for i in range(b)], axis=0)


def write_gif(path: Path, frames: np.ndarray, fps: float) -> Path:
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=max(20, round(1000 / fps)), loop=0)
    return path


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> Path:
    try:
        import imageio.v2 as iio
    except ImportError:
        raise RinkitError("writing MP4 needs imageio and its ffmpeg: pip install 'rinkit[video]'") from None
    # yuv420p + even sizes: plays everywhere; sizes are already multiples of 16 (no rescaling).
    iio.mimwrite(path, list(frames), fps=fps, codec="libx264", quality=8, macro_block_size=16,
                 pixelformat="yuv420p")
    return path


def write_videos(samples: torch.Tensor, labels: torch.Tensor | None, path: Path, options=None,
                 context: torch.Tensor | None = None, mp4: bool = True) -> list[Path]:
    """samples: (B, T - k, C, H, W) generated frames; context: (B, k, C, H, W) given frames or
    None. Writes <path>.gif, <path>.mp4 (context + prediction) and <path>.png (film strip)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    given = 0 if context is None else context.shape[1]
    full = samples if context is None else torch.cat([context.to(samples), samples], dim=1)
    if labels is not None:  # clips of one class side by side, as the image grids do
        order = torch.argsort(labels.cpu(), stable=True)
        full = full[order]
    videos = to_uint8_video(full)
    fps = options.fps if options is not None else 8.0
    grid = video_grid_frames(videos[:MAX_GRID], given)
    out = [write_gif(path.with_suffix(".gif"), grid, fps)]
    if mp4:
        out.append(write_mp4(path.with_suffix(".mp4"), grid, fps))
    Image.fromarray(film_strip(videos[:MAX_STRIP], given)).save(path.with_suffix(".png"))
    out.append(path.with_suffix(".png"))
    return out
