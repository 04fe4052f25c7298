"""Waveform <-> normalised log-mel spectrogram, with no torchaudio or librosa.

Forward: torch.stft (Hann window, centred) -> amplitude scaled by 2 / sum(window), so a
full-scale sine peaks at 1 (0 dB) -> power -> mel filterbank -> dB -> [db_min, db_max] mapped
linearly onto [-1, 1] (the range the diffusion model works in). The last centred frame is dropped
so that `n_samples / hop` frames tile the clip exactly.

The mel filterbank is the Slaney (Auditory Toolbox) mel scale, written out: linear below 1 kHz
(200/3 Hz per mel), logarithmic above (27 mels per factor 6.4), triangles with peak 1 (librosa's
`filters.mel(htk=False, norm=None)`; peak-1 triangles keep "0 dB = a full-scale sine").

Inverse: dB -> mel power -> linear power by the pseudo-inverse of the filterbank clipped at 0
(torchaudio's InverseMelScale uses the same least-squares idea) -> magnitude -> fast Griffin-Lim
(Perraudin et al. 2013, momentum 0.99, as librosa / torchaudio) from a seeded random phase.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def hz_to_mel(f):
    """Slaney mel scale (librosa's default, htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters, peak 1, centres equally spaced in mels."""
    f_max = sample_rate / 2 if f_max is None else f_max
    fft_freqs = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower = (fft_freqs[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - fft_freqs[None]) / (edges[2:] - edges[1:-1])[:, None]
    return np.maximum(0.0, np.minimum(lower, upper))


def mel_centres_hz(n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> np.ndarray:
    f_max = sample_rate / 2 if f_max is None else f_max
    return mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))[1:-1]


class LogMel:
    """Both directions of the transform for one set of audio options (AudioOptions)."""

    def __init__(self, o):  # float32 throughout: half the cost of float64, ample for 80 dB
        self.o = o
        self.window = torch.hann_window(o.n_fft)
        self.scale = 2.0 / float(self.window.sum())
        self.fb = torch.from_numpy(mel_filterbank(o.sample_rate, o.n_fft, o.n_mels, o.f_min, o.f_max)).float()
        self.fb_pinv = torch.linalg.pinv(self.fb)

    # -- forward -----------------------------------------------------------------------------
    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.stft(wave.float(), self.o.n_fft, self.o.hop_length, window=self.window,
                          center=True, return_complex=True)

    def db(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, L) waveforms -> (B, n_mels, frames) mel power in dB re a full-scale sine."""
        power = (self.stft(wave).abs() * self.scale) ** 2
        mel = torch.einsum("mf,bft->bmt", self.fb, power)[..., :self.o.frames]
        return 10 * torch.log10(mel.clamp_min(1e-12))

    def normalise(self, db: torch.Tensor) -> torch.Tensor:
        lo, hi = self.o.db_range
        return ((db.clamp(lo, hi) - lo) / (hi - lo) * 2 - 1).float()

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.o.db_range
        return (x.float().clamp(-1, 1) + 1) / 2 * (hi - lo) + lo

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, 1, n_mels, frames) in [-1, 1]."""
        return self.normalise(self.db(wave))[:, None]

    # -- inverse -----------------------------------------------------------------------------
    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, n_mels, frames) in [-1, 1] -> (B, 1 + n_fft//2, frames + 1) STFT magnitude."""
        mel = 10 ** (self.denormalise(x[:, 0]) / 10)
        power = torch.einsum("fm,bmt->bft", self.fb_pinv, mel).clamp_min(0)
        mag = power.sqrt() / self.scale
        return torch.cat([mag, mag[..., -1:]], dim=-1)  # restore the dropped last frame

    def griffin_lim(self, mag: torch.Tensor, n_iter: int = 64, momentum: float = 0.99,
                    seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        angles = torch.polar(torch.ones_like(mag), 2 * math.pi * torch.rand(mag.shape, generator=g, dtype=mag.dtype))
        prev = torch.zeros_like(angles)
        n = self.o.n_samples
        for _ in range(n_iter):
            wave = torch.istft(mag * angles, self.o.n_fft, self.o.hop_length, window=self.window,
                               center=True, length=n)
            rebuilt = self.stft(wave)
            angles = rebuilt - (momentum / (1 + momentum)) * prev
            angles = angles / angles.abs().clamp_min(1e-16)
            prev = rebuilt
        wave = torch.istft(mag * angles, self.o.n_fft, self.o.hop_length, window=self.window,
                           center=True, length=n)
        return wave.float()

    def invert(self, x: torch.Tensor, n_iter: int | None = None, seed: int = 0) -> torch.Tensor:
        """(B, 1, n_mels, frames) in [-1, 1] -> (B, n_samples) waveforms in [-1, 1]."""
        wave = self.griffin_lim(self.magnitude(x), n_iter or self.o.griffin_lim_iters, seed=seed)
        return wave.clamp(-1, 1)
