"""Audio samples on disk: one WAV per sample (Griffin-Lim from the generated log-mel
spectrogram) and a PNG grid of the spectrograms (low frequencies at the bottom, one row per
class when labels are given)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def spectrogram_grid(specs: torch.Tensor, nrow: int, pad: int = 2, scale: int = 2) -> Image.Image:
    """(B, 1, n_mels, frames) in [-1, 1] -> a magma-coloured grid image."""
    from matplotlib import colormaps
    x = ((specs[:, 0].detach().float().cpu().clamp(-1, 1) + 1) / 2).flip(1).numpy()  # low mels at the bottom
    b, h, w = x.shape
    rows = max(1, -(-b // nrow))
    canvas = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), np.float32)
    colour = colormaps["magma"](x)[..., :3]
    for i in range(b):
        r, k = divmod(i, nrow)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = colour[i]
    im = Image.fromarray((canvas * 255).round().astype(np.uint8))
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST)


def write_audio(samples: torch.Tensor, labels: torch.Tensor | None, path: Path, options,
                context=None, wav: bool = True) -> list[Path]:
    import soundfile as sf

    from rinkit_plugins.audio.spectrogram import LogMel
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = samples.detach().float().cpu()
    nrow = int(np.ceil(np.sqrt(len(samples))))
    if labels is not None:
        order = torch.argsort(labels.cpu(), stable=True)
        samples, labels = samples[order], labels.cpu()[order]
        counts = torch.bincount(labels)
        counts = counts[counts > 0]
        if len(set(counts.tolist())) == 1:
            nrow = int(counts[0])
    png = path.with_suffix(".png")
    spectrogram_grid(samples, nrow).save(png)
    out = [png]
    if wav:
        folder = path.with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
        waves = LogMel(options).invert(samples)
        for i, w in enumerate(waves.numpy()):
            name = f"{i:03d}" + (f"-class{int(labels[i])}" if labels is not None else "") + ".wav"
            sf.write(str(folder / name), w, options.sample_rate, subtype="PCM_16")
            out.append(folder / name)
    return out
