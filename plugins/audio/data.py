"""Audio datasets: built-in synthetic clips (no download) and folders of WAV / FLAC files.

`synth`: four classes of deterministic synthetic clips, generated from (split, index) alone so
every run and machine sees the same data:
    0 note      one harmonic tone (random pitch, timbre, onset, length; ADSR envelope)
    1 chord     a major or minor triad struck together
    2 arpeggio  the triad and its octave played one after another
    3 drums     kick / snare / hi-hat patterns on an 8-step grid
Clips are `duration` seconds at `sample_rate`; the model sees their normalised log-mel
spectrograms (spectrogram.py).

`folder`: data.path holds audio files (.wav / .flac / .ogg, read with soundfile), in class
sub-folders (sorted names = labels) or directly (label 0). Files are mixed to mono, resampled to
`sample_rate` (scipy's polyphase resampler) and cut into consecutive `duration`-long clips (the
last one zero-padded). A file sampled too slowly to fill the spectrogram (its Nyquist frequency
below f_max, which defaults to sample_rate / 2) is an error naming it: upsampling cannot add the
missing band, and the model would learn silent high frequencies. Sub-folders `train/` and `test/` are used as the splits when present;
otherwise every 10th file of each class is held out."""
from __future__ import annotations

import functools
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rinkit.datafiles import labelled_files
from rinkit.errors import RinkitError

CLASSES = ("note", "chord", "arpeggio", "drums")
SIZES = {"train": 1024, "test": 256}
AUDIO_EXTS = (".wav", ".flac", ".ogg")
_SPLIT_ID = {"train": 0, "test": 1}


def _adsr(n: int, sr: int, rng) -> np.ndarray:
    a, d = int(sr * rng.uniform(0.005, 0.03)), int(sr * rng.uniform(0.05, 0.2))
    sustain, r = rng.uniform(0.3, 0.8), int(sr * rng.uniform(0.05, 0.2))
    env = np.full(n, sustain)
    env[:a] = np.linspace(0, 1, a, endpoint=False)
    env[a:a + d] = np.linspace(1, sustain, len(env[a:a + d]), endpoint=False)
    env[max(n - r, 0):] *= np.linspace(1, 0, len(env[max(n - r, 0):]))
    return env


def _tone(freq: float, n: int, sr: int, rng, decay: float) -> np.ndarray:
    t = np.arange(n) / sr
    out = np.zeros(n)
    for k in range(1, 7):
        if freq * k < sr / 2:
            out += decay ** (k - 1) * np.sin(2 * np.pi * freq * k * t + rng.uniform(0, 2 * np.pi))
    return out


def _midi(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def _place(clip: np.ndarray, part: np.ndarray, start: int) -> None:
    end = min(len(clip), start + len(part))
    if end > start:
        clip[start:end] += part[:end - start]


def synth_clip(label: int, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    clip = np.zeros(n)
    decay = rng.uniform(0.3, 0.7)  # timbre: how fast the harmonics fall off
    if label in (0, 1, 2):
        root = rng.integers(48, 73)
        notes = [root] if label == 0 else [root, root + (4 if rng.random() < 0.5 else 3), root + 7]
        if label == 2:
            notes = notes + [root + 12]
            step = int(n * rng.uniform(0.16, 0.22))
            start = int(n * rng.uniform(0.0, 0.1))
            for i, m in enumerate(notes):
                length = int(step * 1.5)
                _place(clip, _tone(_midi(m), length, sr, rng, decay) * _adsr(length, sr, rng), start + i * step)
        else:
            length = int(n * rng.uniform(0.35, 0.75))
            start = int(n * rng.uniform(0.0, 0.25))
            env = _adsr(length, sr, rng)
            for m in notes:
                _place(clip, _tone(_midi(m), length, sr, rng, decay) * env, start)
    else:  # drums: 8 steps over the clip
        step = n // 8
        pattern = rng.random((3, 8)) < np.array([[0.45], [0.35], [0.7]])
        pattern[0, 0] = pattern[1, 4] = True  # always a kick and a snare
        t = np.arange(step * 2) / sr
        kick_f = rng.uniform(40, 70) + rng.uniform(60, 120) * np.exp(-t * 40)
        kick = np.sin(2 * np.pi * np.cumsum(kick_f) / sr) * np.exp(-t * rng.uniform(12, 25))
        noise = rng.standard_normal(len(t))
        snare = (0.6 * noise + 0.5 * np.sin(2 * np.pi * rng.uniform(170, 240) * t)) * np.exp(-t * rng.uniform(20, 35))
        hat = np.diff(noise, prepend=0.0) * np.exp(-t * rng.uniform(60, 120)) * 0.4
        for s in range(8):
            for drum, on in zip((kick, snare, hat), pattern[:, s]):
                if on:
                    _place(clip, drum, s * step)
    peak = np.abs(clip).max()
    return (clip / max(peak, 1e-8) * rng.uniform(0.3, 0.9)).astype(np.float32)


def synth_wave(split: str, i: int, n_samples: int, sample_rate: int) -> tuple[np.ndarray, int]:
    """Example i of a split: a function of (split, i) only. Labels cycle through the classes."""
    label = i % len(CLASSES)
    rng = np.random.default_rng([_SPLIT_ID[split], i, 7919])
    return synth_clip(label, n_samples, sample_rate, rng), label


def synth_waves(split: str, n_samples: int, sample_rate: int, count: int | None = None):
    """(N, n_samples) waveforms and labels of the first `count` examples of a split."""
    pairs = [synth_wave(split, i, n_samples, sample_rate) for i in range(count or SIZES[split])]
    return torch.from_numpy(np.stack([w for w, _ in pairs])), torch.tensor([k for _, k in pairs])


class Spectrograms(Dataset):
    """In-memory (N, 1, n_mels, frames) spectrograms in [-1, 1] with integer labels."""

    def __init__(self, specs: torch.Tensor, labels: torch.Tensor):
        self.specs, self.labels = specs.contiguous(), labels.long()

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i):
        return self.specs[i], int(self.labels[i])


def to_spectrograms(waves: torch.Tensor, options, batch: int = 256) -> torch.Tensor:
    from rinkit_plugins.audio.spectrogram import LogMel
    lm = LogMel(options)
    return torch.cat([lm(w) for w in waves.split(batch)]) if len(waves) else torch.empty(0, 1, options.n_mels, options.frames)


class SynthSpectrograms(Dataset):
    """The built-in clips, synthesised on first access and kept (the first epoch pays for them,
    so a short run or a test does not wait for the whole split)."""

    def __init__(self, options, split: str):
        self.o, self.split = options, split
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return SIZES[self.split]

    def __getitem__(self, i):
        if i not in self._cache:
            wave, _ = synth_wave(self.split, i, self.o.n_samples, self.o.sample_rate)
            self._cache[i] = to_spectrograms(torch.from_numpy(wave)[None], self.o)[0]
        return self._cache[i], i % len(CLASSES)

    def tensors(self, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All (or the first `count`) examples at once, batched: (specs, labels)."""
        n = min(count or len(self), len(self))
        missing = [i for i in range(n) if i not in self._cache]
        if missing:
            waves = torch.from_numpy(np.stack([synth_wave(self.split, i, self.o.n_samples, self.o.sample_rate)[0]
                                               for i in missing]))
            self._cache.update(zip(missing, to_spectrograms(waves, self.o)))
        return torch.stack([self._cache[i] for i in range(n)]), torch.arange(n) % len(CLASSES)


@functools.lru_cache(maxsize=8)
def synth(options, data_cfg=None, split: str = "train") -> SynthSpectrograms:
    """One shared instance per (options, split), so the trainer and the metric share the cache."""
    return SynthSpectrograms(options, split)


# -- real audio on disk --------------------------------------------------------------------------

def read_audio(path: Path, sample_rate: int, f_max: float | None = None) -> np.ndarray:
    """Mono float32 waveform at `sample_rate`; with `f_max`, files whose content stops below it
    (sampled at less than 2 f_max) are refused."""
    import soundfile as sf
    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises its own error types for unreadable files
        raise RinkitError(f"cannot read audio file {path}: {e}") from None
    if f_max is not None and sr < 2 * f_max:
        raise RinkitError(f"{path}: sampled at {sr} Hz, so it holds nothing above {sr / 2:g} Hz, but the "
                          f"spectrogram reaches {f_max:g} Hz (modality_options.sample_rate {sample_rate}); use "
                          f"files sampled at >= {2 * f_max:g} Hz or lower modality_options.sample_rate / f_max")
    wave = wave.mean(1)
    if sr != sample_rate:
        from scipy.signal import resample_poly
        ratio = Fraction(sample_rate, sr).limit_denominator(1000)
        wave = resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)
    return wave


def clips(wave: np.ndarray, n: int) -> list[np.ndarray]:
    """Consecutive n-sample clips; the last is zero-padded (a short file gives one clip)."""
    out = []
    for start in range(0, max(len(wave), 1), n):
        c = wave[start:start + n]
        out.append(np.pad(c, (0, n - len(c))))
    return out


def folder(options, data_cfg, split: str = "train") -> Spectrograms:
    files = labelled_files(data_cfg.path, AUDIO_EXTS, split, "WAV/FLAC files")
    waves, labels = [], []
    for f, k in files:
        for c in clips(read_audio(f, options.sample_rate, options.f_max or options.sample_rate / 2), options.n_samples):
            waves.append(c)
            labels.append(k)
    return Spectrograms(to_spectrograms(torch.from_numpy(np.stack(waves)), options), torch.tensor(labels))
