"""The built-in audio modality: log-mel spectrograms tokenised as (frequency x time) patches.

    waveform --(spectrogram.py: STFT, Slaney mel, dB)--> (1, n_mels, frames) in [-1, 1]
             --(tokenizer.py)--> patches + frequency/time positions --> RIN --> patches
             --(writer.py: Griffin-Lim)--> WAV files + a spectrogram PNG grid
Datasets: `synth` (built in, deterministic notes / chords / arpeggios / drums) and `folder`
(WAV / FLAC files, class sub-folders as labels). Metric: `audio_fd` (metric.py).

Registered through the `rinkit` entry-point group (pyproject.toml), like any third-party plugin."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from rinkit.registry import DatasetSpec, MetricSpec, Modality, hookimpl


class AudioOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # frozen: hashable, datasets cache on it
    sample_rate: int = Field(16000, gt=0)
    duration: float = Field(1.0, gt=0)  # seconds per clip
    n_fft: int = Field(512, ge=16)
    hop_length: int = Field(250, ge=1)
    n_mels: int = Field(64, ge=1)
    f_min: float = Field(0.0, ge=0)
    f_max: float | None = None  # None = sample_rate / 2
    db_range: tuple[float, float] = (-80.0, 0.0)  # dB re a full-scale sine, mapped onto [-1, 1]
    patch_size: PositiveInt | tuple[PositiveInt, PositiveInt] = (8, 4)  # (mel bins, frames)
    pos_emb: Literal["sincos", "factorized", "sincos+factorized"] = "sincos+factorized"
    griffin_lim_iters: int = Field(32, ge=1)

    @property
    def n_samples(self) -> int:
        return round(self.sample_rate * self.duration)

    @property
    def frames(self) -> int:
        return self.n_samples // self.hop_length

    @property
    def patch(self) -> tuple[int, int]:
        p = self.patch_size
        return (p, p) if isinstance(p, int) else tuple(p)

    @model_validator(mode="after")
    def _check(self):
        if self.n_mels % self.patch[0] or self.frames % self.patch[1]:
            raise ValueError(f"the spectrogram ({self.n_mels} mels x {self.frames} frames) is not divisible "
                             f"by patch_size {self.patch}; change n_mels, duration or hop_length")
        if self.db_range[0] >= self.db_range[1]:
            raise ValueError(f"db_range {self.db_range} must be (low, high) with low < high")
        if (self.f_max or self.sample_rate / 2) > self.sample_rate / 2 or self.f_min >= (self.f_max or self.sample_rate / 2):
            raise ValueError("need f_min < f_max <= sample_rate / 2")
        return self


def _tokenizer(o: AudioOptions, dim: int):
    from rinkit_plugins.audio.tokenizer import SpectrogramTokenizer
    return SpectrogramTokenizer(o.n_mels, o.frames, o.patch, dim, o.pos_emb)


def _detokenizer(o: AudioOptions, dim: int):
    from rinkit_plugins.audio.tokenizer import SpectrogramDetokenizer
    return SpectrogramDetokenizer(o.n_mels, o.frames, o.patch, dim)


def _write(samples, labels, path, options, context=None, **kw):
    from rinkit_plugins.audio.writer import write_audio
    return write_audio(samples, labels, path, options, **kw)


def _synth(options, data_cfg, split="train"):
    from rinkit_plugins.audio.data import synth
    return synth(options, None, split)


def _folder(options, data_cfg, split="train"):
    from rinkit_plugins.audio.data import folder
    return folder(options, data_cfg, split)


def _metric(options, data_cfg):
    from rinkit_plugins.audio.metric import AudioMetric
    return AudioMetric(options, data_cfg)


@hookimpl
def rinkit_modalities():
    return [Modality(
        name="audio", description="log-mel spectrograms (1, mels, frames): freq x time patches, WAV + PNG",
        options=AudioOptions, make_tokenizer=_tokenizer, make_detokenizer=_detokenizer,
        sample_shape=lambda o: (1, o.n_mels, o.frames), write_samples=_write, default_preset="audio-synth",
        invertible=True)]


@hookimpl
def rinkit_datasets():
    return [DatasetSpec("audio", "synth", "built-in synthetic clips: note, chord, arpeggio, drums (4 classes)",
                        _synth, num_classes=4, reads_path=False),
            DatasetSpec("audio", "folder", "WAV/FLAC files under data.path, class sub-folders as labels",
                        _folder)]


@hookimpl
def rinkit_metrics():
    return [MetricSpec("audio", "audio_fd", "Fréchet distance of a synth-classifier's features + spectral "
                       "statistics vs held-out synth clips (+ FAD with local VGGish weights)",
                       _metric, tags=("synth",))]
