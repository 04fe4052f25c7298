"""The Gaussian diffusion process RIN is trained with (docs/method.md §3-4).

Continuous time t ~ U(0, 1); gamma(t) is the signal variance; data in [-1, 1] are scaled by the
input scale b, so x_0 lies in [-b, b]:   x_t = sqrt(gamma) x_0 + sqrt(1 - gamma) eps.
The network predicts eps, x_0 or v = sqrt(gamma) eps - sqrt(1 - gamma) x_0 and every consumer
(loss, clipping, samplers, guidance) goes through `to_x0_eps`, the single place that converts
a prediction; the self-conditioning bugs of other ports came from converting in several places.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from rinkit.diffusion.schedules import Schedule, parse_schedule

TARGETS = ("eps", "x0", "v")


def broadcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def randn(shape, generator=None, device=None) -> torch.Tensor:
    """Gaussian noise; with a list of generators, example i is drawn from generator i alone,
    so an example's noise does not depend on the batch it sits in (per-image seeds)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.stack([torch.randn(shape[1:], generator=g, device=g.device) for g in generator]).to(device)
    return torch.randn(shape, generator=generator, device=device)


class Diffusion:
    def __init__(self, train_schedule: str | Schedule = "cosine", sample_schedule: str | Schedule = "cosine",
                 pred: str = "eps", input_scale: float = 1.0, self_cond_rate: float = 0.9,
                 cond_dropout: float = 0.0, num_classes: int = 0):
        if pred not in TARGETS:
            raise ValueError(f"unknown prediction target {pred!r}; choose one of {TARGETS}")
        as_sched = lambda s: parse_schedule(s) if isinstance(s, str) else s  # noqa: E731
        self.train_schedule, self.sample_schedule = as_sched(train_schedule), as_sched(sample_schedule)
        self.pred, self.b = pred, float(input_scale)
        self.self_cond_rate, self.cond_dropout, self.num_classes = self_cond_rate, cond_dropout, num_classes

    # -- conversions ------------------------------------------------------------------------
    def add_noise(self, x0, gamma, eps):
        g = broadcast(gamma, x0)
        return g.sqrt() * x0 + (1 - g).sqrt() * eps

    def target(self, x0, eps, gamma):
        g = broadcast(gamma, x0)
        return {"eps": eps, "x0": x0, "v": g.sqrt() * eps - (1 - g).sqrt() * x0}[self.pred]

    def to_x0_eps(self, pred, x_t, gamma, clip: bool = False):
        """Network output -> (x_0, eps). With clip, x_0 is clipped to [-b, b] and eps is
        re-derived from the clipped x_0 so the two stay consistent with x_t."""
        g = broadcast(gamma, x_t)
        sg, s1g = g.sqrt(), (1 - g).sqrt()
        if self.pred == "eps":
            x0, eps = (x_t - s1g * pred) / sg, pred
        elif self.pred == "x0":
            x0, eps = pred, (x_t - sg * pred) / s1g
        else:  # v
            x0, eps = sg * x_t - s1g * pred, s1g * x_t + sg * pred
        if clip:
            x0 = x0.clamp(-self.b, self.b)
            eps = (x_t - sg * x0) / s1g
        return x0, eps

    # -- training -----------------------------------------------------------------------------
    def drop_labels(self, labels, generator=None):
        if labels is None or self.num_classes == 0 or self.cond_dropout <= 0:
            return labels
        drop = torch.rand(labels.shape, generator=generator, device=labels.device) < self.cond_dropout
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def loss(self, model: Callable, x: torch.Tensor, labels: torch.Tensor | None = None,
             context=None, loss_mask: torch.Tensor | None = None, generator=None):
        """Unweighted MSE on the target. `x` is data in [-1, 1]; `loss_mask` (broadcastable to
        x) restricts the loss, e.g. to the predicted frames of a video.

        Latent self-conditioning in the official "masking" mode: pass 1 runs on the whole batch
        with no previous latents (dropout on, no gradient = stop-gradient); its latents are kept
        for a fraction `self_cond_rate` of the examples and zeroed for the rest; the loss is
        taken on pass 2 only. Rate 0 is exactly one pass. Label dropout (classifier-free
        guidance) is drawn afresh for each pass, as the official code does (each call of its
        `cond_denoise` draws its own mask)."""
        b = x.shape[0]
        x0 = x * self.b
        t = torch.rand(b, generator=generator, device=x.device)
        gamma = self.train_schedule(t)
        eps = randn(x0.shape, generator, x.device)
        x_t = self.add_noise(x0, gamma, eps)
        prev = None
        if self.self_cond_rate > 0:
            with torch.no_grad():
                _, latents = model(x_t, gamma, self.drop_labels(labels, generator), None, context)
            keep = torch.rand(b, generator=generator, device=x.device) < self.self_cond_rate
            prev = latents * broadcast(keep.to(latents.dtype), latents)
        pred, _ = model(x_t, gamma, self.drop_labels(labels, generator), prev, context)
        err = (pred.float() - self.target(x0, eps, gamma).float()) ** 2
        if self.pred == "x0":
            err = err / self.b ** 2  # in data units; unclipped, unlike the official x-loss (docs/method.md §9)
        if loss_mask is None:
            return err.mean()
        mask = loss_mask.to(err.dtype).expand_as(err)
        return (err * mask).sum() / mask.sum().clamp_min(1.0)
