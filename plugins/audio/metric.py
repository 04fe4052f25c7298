"""Audio quality numbers that need no download.

audio_fd   Fréchet distance of the penultimate (64-d) features of a small spectrogram classifier,
           trained deterministically on the built-in `synth` classes, between generated samples
           and the held-out synth test split (the audio analogue of the digits-FID).
audio_acc  that classifier's accuracy on the intended labels (class-conditional samples).
Spectral statistics, generated vs held-out (absolute gaps; 0 = identical on average):
  audio_band_db_l1      mean over mel bands of |average band level| difference, dB
  audio_centroid_gap_hz spectral centroid (power-weighted mean mel-band frequency)
  audio_flatness_gap    spectral flatness (geometric / arithmetic mean power, 0..1)
  audio_dynamics_gap_db the std over time of frame loudness (how "eventful" a clip is), dB
audio_fad  Fréchet Audio Distance on VGGish embeddings of Griffin-Lim waveforms of the generated and
           the held-out spectrograms; only when RINKIT_VGGISH_WEIGHTS names a local weights file
           (see vggish.py; a set but missing file is a one-line error)."""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rinkit.plugin import frechet_distance, frechet_distance_features, gaussian_stats

FEATURES = 64


class SpecNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.AvgPool2d(2),  # 64 x 64 -> 32 x 32: the classes differ coarsely; keeps it cheap
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten(),  # coarse frequency AND time: a chord and
            nn.Linear(32 * 16, FEATURES), nn.ReLU())      # an arpeggio share a mean spectrum
        self.head = nn.Linear(FEATURES, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


@functools.lru_cache(maxsize=2)
@torch.enable_grad()  # first use is often inside a no_grad sampling context
def classifier(options, seed: int = 0, epochs: int = 4) -> SpecNet:
    """Trained once per process and options, deterministically from `seed` (a few seconds)."""
    from rinkit_plugins.audio.data import CLASSES, synth
    x, y = synth(options, None, "train").tensors()
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = SpecNet(len(CLASSES))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            # random time shifts: features should care about what sounds, not exactly when
            xb = torch.roll(x[idx], int(torch.randint(-8, 9, (1,), generator=g)), dims=3)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval().requires_grad_(False)


@torch.no_grad()
def features(options, specs: torch.Tensor) -> np.ndarray:
    net = classifier(options)
    return torch.cat([net.body(b) for b in specs.float().cpu().clamp(-1, 1).split(256)]).double().numpy()


def spectral_stats(options, specs: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-clip statistics of (B, 1, n_mels, frames) spectrograms in [-1, 1]."""
    from rinkit_plugins.audio.spectrogram import LogMel, mel_centres_hz
    db = LogMel(options).denormalise(specs.detach().cpu()[:, 0])  # (B, M, T) dB
    power = 10 ** (db / 10)
    centres = torch.from_numpy(mel_centres_hz(options.n_mels, options.sample_rate, options.f_min, options.f_max))
    frame_power = power.sum(1)  # (B, T)
    centroid = (power * centres[None, :, None]).sum(1) / frame_power.clamp_min(1e-12)
    flat = torch.exp(torch.log(power.clamp_min(1e-12)).mean(1)) / power.mean(1).clamp_min(1e-12)
    w = frame_power / frame_power.sum(1, keepdim=True).clamp_min(1e-12)  # weight frames by energy
    return {"band_db": db.mean(2).numpy(), "centroid": (centroid * w).sum(1).numpy(),
            "flatness": (flat * w).sum(1).numpy(),
            "dynamics": (10 * torch.log10(frame_power.clamp_min(1e-12))).std(1).numpy()}


def spectral_gaps(options, gen: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    a, b = spectral_stats(options, gen), spectral_stats(options, ref)
    return {"audio_band_db_l1": float(np.abs(a["band_db"].mean(0) - b["band_db"].mean(0)).mean()),
            "audio_centroid_gap_hz": float(abs(a["centroid"].mean() - b["centroid"].mean())),
            "audio_flatness_gap": float(abs(a["flatness"].mean() - b["flatness"].mean())),
            "audio_dynamics_gap_db": float(abs(a["dynamics"].mean() - b["dynamics"].mean()))}


def fad(options, gen: torch.Tensor, ref: torch.Tensor, weights=None) -> float:
    """FAD between the Griffin-Lim waveforms of two spectrogram sets (both sides go through the
    same inversion, so its artefacts cancel and the number measures the generative model)."""
    from rinkit_plugins.audio.spectrogram import LogMel
    from rinkit_plugins.audio.vggish import embed, load_vggish
    net, lm = load_vggish(weights), LogMel(options)
    e = [embed(net, lm.invert(s).numpy(), options.sample_rate) for s in (gen, ref)]
    return frechet_distance_features(*e)


class AudioMetric:
    """callable(samples, labels) -> dict, comparing with the held-out split of `synth`."""

    def __init__(self, options, data_cfg=None, fad_weights=None):
        import os

        from rinkit_plugins.audio.vggish import ENV
        self.o = options
        self.fad_weights = fad_weights or os.environ.get(ENV) or None

    @functools.cached_property
    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        from rinkit_plugins.audio.data import synth
        return synth(self.o, None, "test").tensors()

    def __call__(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        ref, _ = self.reference
        out = {"audio_fd": frechet_distance(*gaussian_stats(features(self.o, samples)),
                                            *gaussian_stats(features(self.o, ref)))}
        if labels is not None and (labels < 4).all():
            logits = classifier(self.o)(samples.float().cpu().clamp(-1, 1))
            out["audio_acc"] = float((logits.argmax(1) == labels.cpu()).float().mean())
        out.update(spectral_gaps(self.o, samples, ref))
        if self.fad_weights:
            out["audio_fad"] = fad(self.o, samples, ref[:len(samples)], self.fad_weights)
        return out
