"""The Gaussian diffusion process RIN is trained with (docs/method.md §3-4).

Continuous time t ~ U(0, 1); gamma(t) is the signal variance; data in [-1, 1] are scaled by the
input scale b, so x_0 lies in [-b, b]:   x_t = sqrt(gamma) x_0 + sqrt(1 - gamma) eps.
The network predicts eps, x_0 or v = sqrt(gamma) eps - sqrt(1 - gamma) x_0 and every consumer
(loss, clipping, samplers, guidance) goes through `to_x0_eps`, the single place that converts
a prediction; the self-conditioning bugs of other ports came from converting in several places.

x_0-prediction with `x0_skip` = sigma_data > 0 is EDM's preconditioning (Karras et al. 2022,
c_skip): the estimate is c_skip x_t / sqrt(gamma) + (1 - c_skip) F, with F the network's output
and c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), sigma^2 = (1 - gamma) / gamma. At low noise
the estimate is the input itself, which a network that must redraw every pixel from its tokens
cannot match; at high noise it is F. (Measured worse than plain x_0- or v-prediction on the
video and point presets: docs/video.md and docs/points.md, s21.) The loss is EDM's weighting,
1 / (1 - c_skip) times the squared error of the estimate (a unit-scale loss for F at every
noise level). With sigma_data = 1 this is v-prediction's parameterisation and loss, written
with an x_0-shaped output, so a readout that builds an x_0 estimate from the data (the video
plugin's copy) stays an x_0 estimate where the noise is high.
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
                 cond_dropout: float = 0.0, num_classes: int = 0, self_cond_x0: bool = False,
                 context_dropout: float = 0.0, x0_skip: float = 0.0):
        if pred not in TARGETS:
            raise ValueError(f"unknown prediction target {pred!r}; choose one of {TARGETS}")
        if x0_skip < 0 or (x0_skip > 0 and pred != "x0"):
            raise ValueError(f"x0_skip (sigma_data) must be >= 0 and needs pred='x0', got {x0_skip} with pred={pred!r}")
        self.x0_skip = float(x0_skip)
        as_sched = lambda s: parse_schedule(s) if isinstance(s, str) else s  # noqa: E731
        self.train_schedule, self.sample_schedule = as_sched(train_schedule), as_sched(sample_schedule)
        self.pred, self.b = pred, float(input_scale)
        self.self_cond_rate, self.cond_dropout, self.num_classes = self_cond_rate, cond_dropout, num_classes
        if self_cond_x0 and self_cond_rate <= 0:
            raise ValueError("self_cond_x0 needs self_cond_rate > 0 (the estimate comes from the first pass)")
        self.self_cond_x0 = self_cond_x0
        # Classifier-free guidance on clean conditioning data (e.g. given video frames): the
        # context is replaced by the null context, zeros (a constant mid-grey clip for data in
        # [-1, 1], which no dataset holds), for this fraction of training examples.
        self.context_dropout = context_dropout

    # -- conversions ------------------------------------------------------------------------
    def add_noise(self, x0, gamma, eps):
        g = broadcast(gamma, x0)
        return g.sqrt() * x0 + (1 - g).sqrt() * eps

    def skip(self, gamma, like):
        """EDM's c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), sigma^2 = (1 - gamma) / gamma, and
        the coefficient a = c_skip / sqrt(gamma) it puts on x_t, both broadcast like `like` and
        written without dividing by gamma (finite at gamma 0): the estimate is a x_t + (1 - c) F."""
        g, sd2 = broadcast(gamma, like), (self.x0_skip * self.b) ** 2  # sigma_data of the scaled x_0
        den = (1 - g) + sd2 * g
        return sd2 * g / den, sd2 * g.sqrt() / den

    def target(self, x0, eps, gamma):
        g = broadcast(gamma, x0)
        if self.pred == "x0" and self.x0_skip:  # the F whose skip-combined estimate is x0
            c, a = self.skip(gamma, x0)
            # at gamma 1 every F gives x0 (0 / clamped 0)
            return (x0 - a * self.add_noise(x0, gamma, eps)) / (1 - c).clamp_min(1e-6)
        return {"eps": eps, "x0": x0, "v": g.sqrt() * eps - (1 - g).sqrt() * x0}[self.pred]

    def to_x0_eps(self, pred, x_t, gamma, clip: bool = False):
        """Network output -> (x_0, eps). With clip, x_0 is clipped to [-b, b] and eps is
        re-derived from the clipped x_0 so the two stay consistent with x_t."""
        g = broadcast(gamma, x_t)
        sg, s1g = g.sqrt(), (1 - g).sqrt()
        if self.pred == "eps":
            x0, eps = (x_t - s1g * pred) / sg, pred
        elif self.pred == "x0":
            if self.x0_skip:
                c, a = self.skip(gamma, x_t)
                pred = a * x_t + (1 - c) * pred
            x0, eps = pred, (x_t - sg * pred) / s1g
        else:  # v
            x0, eps = sg * x_t - s1g * pred, s1g * x_t + sg * pred
        if clip:
            x0 = x0.clamp(-self.b, self.b)
            eps = (x_t - sg * x0) / s1g
        return x0, eps

    def squared_error(self, pred, x0, eps, gamma, x_t=None):
        """Elementwise squared error of a prediction against the target, the loss's terms."""
        if self.pred == "x0" and self.x0_skip:
            if x_t is None:
                x_t = self.add_noise(x0, gamma, eps)
            est = self.to_x0_eps(pred.float(), x_t.float(), gamma)[0]
            # EDM's weight 1 / c_out^2, over its high-noise limit 1 / sigma_data^2
            # (at gamma 1 the estimate is x_0 itself: 0 / clamped 0)
            return (est - x0.float()) ** 2 / (1 - self.skip(gamma, est)[0]).clamp_min(1e-6) / self.b ** 2
        err = (pred.float() - self.target(x0, eps, gamma).float()) ** 2
        if self.pred == "x0":
            err = err / self.b ** 2  # in data units; unclipped, unlike the official x-loss (docs/method.md §9)
        return err

    # -- training -----------------------------------------------------------------------------
    def drop_labels(self, labels, generator=None):
        if labels is None or self.num_classes == 0 or self.cond_dropout <= 0:
            return labels
        drop = torch.rand(labels.shape, generator=generator, device=labels.device) < self.cond_dropout
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    @staticmethod
    def null_context(context: torch.Tensor) -> torch.Tensor:
        """The unconditional stand-in for a clean conditioning tensor (context guidance)."""
        return torch.zeros_like(context)

    def drop_context(self, context, generator=None):
        if context is None or self.context_dropout <= 0:
            return context
        if not torch.is_tensor(context):
            raise ValueError("context_dropout needs the modality's context to be one tensor")
        drop = torch.rand(context.shape[0], generator=generator, device=context.device) < self.context_dropout
        return torch.where(broadcast(drop, context), self.null_context(context), context)

    def loss(self, model: Callable, x: torch.Tensor, labels: torch.Tensor | None = None,
             context=None, loss_mask: torch.Tensor | None = None, generator=None):
        """Unweighted MSE on the target. `x` is data in [-1, 1]; `loss_mask` (broadcastable to
        x) restricts the loss, e.g. to the predicted frames of a video.

        Latent self-conditioning in the official "masking" mode: pass 1 runs on the whole batch
        with no previous latents (dropout on, no gradient = stop-gradient); its latents are kept
        for a fraction `self_cond_rate` of the examples and zeroed for the rest; the loss is
        taken on pass 2 only. Rate 0 is exactly one pass. Label dropout (classifier-free
        guidance) is drawn afresh for each pass, as the official code does (each call of its
        `cond_denoise` draws its own mask); context dropout (`context_dropout`, not in the
        official code) is drawn once, so both passes see the same given data.

        With `self_cond_x0` (off by default; Chen et al.'s analog-bits self-conditioning, which
        rin-pytorch also uses beside the latents) the model also gets `prev_x0`: zeros in pass 1,
        and in pass 2 pass 1's clipped x_0 estimate, kept for the same examples as the latents.
        The samplers feed the previous step's estimate the same way (zeros at the first step)."""
        b = x.shape[0]
        x0 = x * self.b
        t = torch.rand(b, generator=generator, device=x.device)
        gamma = self.train_schedule(t)
        eps = randn(x0.shape, generator, x.device)
        x_t = self.add_noise(x0, gamma, eps)
        context = self.drop_context(context, generator)
        prev, kw = None, {}
        if self.self_cond_x0:
            kw = {"prev_x0": torch.zeros_like(x_t)}
        if self.self_cond_rate > 0:
            with torch.no_grad():
                pred1, latents = model(x_t, gamma, self.drop_labels(labels, generator), None, context, **kw)
            keep = torch.rand(b, generator=generator, device=x.device) < self.self_cond_rate
            prev = latents * broadcast(keep.to(latents.dtype), latents)
            if self.self_cond_x0:
                est = self.to_x0_eps(pred1.float(), x_t, gamma, clip=True)[0]
                kw = {"prev_x0": (est * broadcast(keep.to(est.dtype), est)).to(x_t.dtype)}
        pred, _ = model(x_t, gamma, self.drop_labels(labels, generator), prev, context, **kw)
        err = self.squared_error(pred, x0, eps, gamma, x_t)
        if loss_mask is None:
            return err.mean()
        mask = loss_mask.to(err.dtype).expand_as(err)
        return (err * mask).sum() / mask.sum().clamp_min(1.0)
