"""VGGish embeddings for the Fréchet Audio Distance (Kilgour et al. 2019), from a LOCAL weights
file only (rinkit never downloads). The network and the state-dict layout are torchvggish's
(harritaylor/torchvggish, `vggish-10086976.pth`: keys features.N.* and embeddings.N.*), and the
frontend follows VGGish's own mel_features: 16 kHz, 25 ms periodic-Hann frames every 10 ms,
512-point |FFT|, 64 HTK-mel bands over 125-7500 Hz, log(mel + 0.01), 0.96 s examples of 96
frames. The 128-d embedding before PCA / quantisation is used, as FAD implementations do."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rinkit.plugin import RinkitError

ENV = "RINKIT_VGGISH_WEIGHTS"
SR, WIN, HOP, FFT, MELS, FRAMES = 16000, 400, 160, 512, 64, 96


class VGGish(nn.Module):
    def __init__(self):
        super().__init__()
        layers, c = [], 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True),
                                        nn.Linear(4096, 4096), nn.ReLU(True),
                                        nn.Linear(4096, 128), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 96, 64) log-mel examples -> (B, 128)."""
        x = self.features(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TF's NHWC flatten order
        return self.embeddings(x)


def _htk_mel(f):
    return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)


def _mel_matrix() -> np.ndarray:
    """(257, 64), VGGish's spectrogram_to_mel_matrix (triangles in HTK-mel space, DC row zero)."""
    bins_mel = _htk_mel(np.linspace(0.0, SR / 2, FFT // 2 + 1))
    edges = np.linspace(_htk_mel(125.0), _htk_mel(7500.0), MELS + 2)
    lower = (bins_mel[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - bins_mel[:, None]) / (edges[2:] - edges[1:-1])
    m = np.maximum(0.0, np.minimum(lower, upper))
    m[0] = 0.0
    return m


def examples(wave: np.ndarray) -> torch.Tensor:
    """One 16 kHz waveform -> (n, 1, 96, 64) VGGish input examples (at least one, zero-padded)."""
    wave = np.asarray(wave, np.float64)
    need = WIN + HOP * (FRAMES - 1)
    if len(wave) < need:
        wave = np.pad(wave, (0, need - len(wave)))
    n_frames = 1 + (len(wave) - WIN) // HOP
    idx = np.arange(WIN)[None] + HOP * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)  # periodic Hann
    mag = np.abs(np.fft.rfft(wave[idx] * window, FFT))
    logmel = np.log(mag @ _mel_matrix() + 0.01)
    n_ex = n_frames // FRAMES
    return torch.from_numpy(logmel[:n_ex * FRAMES].reshape(n_ex, 1, FRAMES, MELS)).float()


def weights_path(path: str | os.PathLike | None = None) -> Path:
    p = path or os.environ.get(ENV)
    if not p:
        raise RinkitError(f"FAD needs local VGGish weights: set {ENV} to torchvggish's vggish-10086976.pth "
                          "(rinkit never downloads)")
    p = Path(p)
    if not p.is_file():
        raise RinkitError(f"VGGish weights file {p} not found (set by {ENV}); FAD needs a local copy")
    return p


def load_vggish(path: str | os.PathLike | None = None) -> VGGish:
    p = weights_path(path)
    net = VGGish()
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as e:
        raise RinkitError(f"{p} is not a torchvggish state dict: {str(e).splitlines()[0]}") from None
    return net.eval().requires_grad_(False)


@torch.no_grad()
def embed(net: VGGish, waves: np.ndarray, sample_rate: int) -> np.ndarray:
    """Waveforms (B, L) -> all their 0.96 s examples' embeddings, stacked (FAD pools over them)."""
    if sample_rate != SR:
        from scipy.signal import resample_poly
        from math import gcd
        g = gcd(SR, sample_rate)
        waves = resample_poly(waves, SR // g, sample_rate // g, axis=-1)
    ex = torch.cat([examples(w) for w in waves])
    return torch.cat([net(b) for b in ex.split(64)]).double().numpy()
