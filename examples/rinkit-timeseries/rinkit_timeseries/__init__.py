"""A complete rinkit modality plugin: multichannel time series (B, C, L).

Tokens are patches of `patch` time steps of every channel; the built-in data are waves of three
classes whose second channel is a harmonic of the first (so a model must learn how channels
relate); samples are written as .npy plus a plot; the metric compares power spectra and the
channels' correlation with held-out waves. docs/writing-a-plugin.md walks through it."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from rinkit.plugin import DatasetSpec, MetricSpec, Modality, hookimpl, package_presets, sincos_grid

NAME = "timeseries"  # the modality's name in configs (`modality: timeseries`)
CLASSES = 3  # base frequencies 1, 2 and 4 cycles per window


class Options(BaseModel):
    """Validated from the config's `modality_options`; an unknown key is a one-line error."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    channels: int = Field(2, ge=1)
    length: int = Field(64, ge=2)
    patch: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _check(self):
        if self.length % self.patch:
            raise ValueError(f"length {self.length} is not divisible by patch {self.patch}")
        return self


def sample_shape(o: Options) -> tuple[int, ...]:
    return (o.channels, o.length)


class Tokenizer(nn.Module):
    """(B, C, L) -> (B, L / patch, D): token n holds steps [n*patch, (n+1)*patch) of every channel,
    plus a fixed sin-cos code of n (a wave's phase is only readable if tokens know where they are).
    Returns (tokens, state) as every tokenizer does; this one keeps no state for its detokenizer."""

    def __init__(self, o: Options, dim: int):
        super().__init__()
        self.o = o
        self.proj = nn.Linear(o.channels * o.patch, dim)
        self.register_buffer("pos", sincos_grid((o.length // o.patch,), dim), persistent=False)

    def forward(self, x, context=None):
        b, c, _ = x.shape
        patches = x.reshape(b, c, -1, self.o.patch).permute(0, 2, 1, 3).flatten(2)  # B, N, C*patch
        return self.proj(patches) + self.pos, None


class Detokenizer(nn.Module):
    """(B, N, D) -> (B, C, L): the exact inverse of the tokenizer's patch layout."""

    def __init__(self, o: Options, dim: int):
        super().__init__()
        self.o = o
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, o.channels * o.patch)

    def forward(self, tokens, context=None, state=None):
        n = self.o.length // self.o.patch
        x = self.proj(self.norm(tokens[:, :n]))  # read only the tokens it made
        return x.unflatten(2, (self.o.channels, self.o.patch)).permute(0, 2, 1, 3).flatten(2)


class Waves(torch.utils.data.Dataset):
    """Deterministic from (split, index): channel 0 a sine of the class's frequency, channel c a
    harmonic (c + 1) x that frequency at half the amplitude, plus a little noise; in [-1, 1]."""

    def __init__(self, o: Options, split: str = "train", n: int = 2048):
        self.o, self.n, self.seed = o, n, 0 if split == "train" else 1

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        label = i % CLASSES
        t = torch.arange(self.o.length) / self.o.length
        amp, phase = 0.5 + 0.4 * torch.rand((), generator=g), 2 * math.pi * torch.rand((), generator=g)
        f = 2.0 ** label
        x = torch.stack([amp / (c + 1) ** 0.5 * torch.sin(2 * math.pi * f * (c + 1) * t + (c + 1) * phase)
                         for c in range(self.o.channels)])
        x = x + 0.03 * torch.randn(x.shape, generator=g)
        return x.clamp(-1, 1), label


def write(samples, labels, path, options, context=None) -> list[Path]:
    """`path` is a stem: writes <stem>.npy (the samples, (B, C, L)) and <stem>.png (a plot per sample)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = samples.detach().float().cpu().numpy()
    np.save(path.with_suffix(".npy"), x)
    cols = min(8, len(x))
    rows = -(-len(x) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.0 * rows), squeeze=False, sharey=True)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(x):
            ax.plot(x[k].T, linewidth=0.8)
            if labels is not None:
                ax.set_title(str(int(labels[k])), fontsize=6)
    fig.savefig(path.with_suffix(".png"), dpi=100)
    plt.close(fig)
    return [path.with_suffix(".npy"), path.with_suffix(".png")]


def _log_power(x: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10((torch.fft.rfft(x.double(), dim=-1).abs() ** 2).mean(0) + 1e-6)  # C, F (dB)


def _corr(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] < 2:
        return torch.zeros((), dtype=torch.float64)
    a, b = x[:, 0].double(), x[:, 1].double()
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-8)).abs().mean()


class SpectrumMetric:
    """Samples vs as many held-out waves: mean |difference| of the per-channel power spectra (dB),
    the gap in |correlation| between channels 0 and 1 and, given labels, the fraction of samples
    whose channel 0 peaks at their class's frequency (1.0 for real waves, ~0.03 for noise)."""

    def __init__(self, o: Options, data_cfg=None):
        self.o = o

    def __call__(self, samples, labels=None) -> dict[str, float]:
        test = Waves(self.o, "test")
        ref = torch.stack([test[i][0] for i in range(min(len(samples), len(test)))])
        x = samples.detach().float().cpu()
        out = {"ts_spectrum_db": float((_log_power(x) - _log_power(ref)).abs().mean()),
               "ts_corr_gap": float((_corr(x) - _corr(ref)).abs())}
        if labels is not None:
            peak = torch.fft.rfft(x[:, 0].double(), dim=-1).abs()[:, 1:].argmax(-1) + 1  # cycles per window
            out["ts_freq_acc"] = float((peak == 2 ** labels.cpu()).double().mean())
        return out


@hookimpl
def rinkit_modalities():
    return [Modality(NAME, "multichannel time series (B, C, L): patches of time steps; .npy + plot",
                     options=Options, make_tokenizer=Tokenizer, make_detokenizer=Detokenizer,
                     sample_shape=sample_shape, write_samples=write, default_preset="timeseries",
                     invertible=True)]  # the contract check then proves the detokenizer undoes the tokenizer


@hookimpl
def rinkit_datasets():
    return [DatasetSpec(NAME, "waves", "harmonic waves, 3 classes (built in, deterministic)",
                        build=lambda o, data_cfg, split="train": Waves(o, split), num_classes=CLASSES)]


@hookimpl
def rinkit_metrics():
    return [MetricSpec(NAME, "spectrum", "power-spectrum and channel-correlation gaps vs held-out waves",
                       build=lambda o, data_cfg: SpectrumMetric(o, data_cfg), tags=("waves",))]


@hookimpl
def rinkit_presets():
    return package_presets(__name__)  # rinkit_timeseries/configs/*.yaml
