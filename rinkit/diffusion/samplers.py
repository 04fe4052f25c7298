"""Samplers: plain functions over a denoiser callable (k-diffusion style).

`model(x_t, gamma, labels, prev_latents, context) -> (prediction, latents)`. Time runs on the
uniform grid t_k = 1 - k/T under the *sampling* schedule (which may differ from the training
one); the last step returns the final x_0 estimate, as the official code does.

Latent self-conditioning: each step feeds the latents returned by the previous step (the first
step gets none = zeros). With classifier-free guidance the conditional and unconditional halves
run as one batch (the unconditional half has the null class and, for models trained with
context_dropout, the null context); the conditional half's latents are carried and both halves read the same
previous latents (official behaviour). With the diffusion's `self_cond_x0` the previous step's
(clipped, guided) x_0 estimate is fed too, zeros at the first step, as in training's pass 1.
Guidance follows the official form
pred = (1 + w) * cond - w * uncond, so w = 0 is unguided (DiT's cfg scale s is w + 1).
"""
from __future__ import annotations

import torch

from rinkit.diffusion.process import Diffusion, broadcast, randn

SAMPLERS = ("ddpm", "ddim")


@torch.no_grad()
def denoise(model, diffusion: Diffusion, x_t, gamma, labels=None, prev_latents=None,
            guidance: float = 0.0, context=None, clip: bool = True, prev_x0=None):
    """One network evaluation (two halves of one batch under guidance) -> (x0, eps, latents).
    `prev_x0` (x0 self-conditioning) is passed to the model only when given."""
    kw = {} if prev_x0 is None else {"prev_x0": prev_x0}
    if guidance != 0.0:
        # the unconditional half drops what the model was trained to do without: the class
        # (null label) and/or the clean context (null context, with context_dropout)
        on_labels = labels is not None and diffusion.num_classes > 0
        on_context = context is not None and diffusion.context_dropout > 0
        if not (on_labels or on_context):
            raise ValueError("classifier-free guidance needs a class-conditional model (class labels) "
                             "or one trained with context_dropout (and its context)")
        both = lambda v: None if v is None else torch.cat([v, v])  # noqa: E731
        lab = both(labels) if not on_labels else torch.cat([labels, torch.full_like(labels, diffusion.num_classes)])
        ctx = both(context) if not on_context else torch.cat([context, diffusion.null_context(context)])
        kw = {k: both(v) for k, v in kw.items()}
        pred, latents = model(both(x_t), both(gamma), lab, both(prev_latents), ctx, **kw)
        cond, uncond = pred.chunk(2)
        pred, latents = (1 + guidance) * cond - guidance * uncond, latents.chunk(2)[0]
    else:
        pred, latents = model(x_t, gamma, labels, prev_latents, context, **kw)
    x0, eps = diffusion.to_x0_eps(pred.float(), x_t, gamma, clip=clip)
    return x0, eps, latents


@torch.no_grad()
def sample(model, diffusion: Diffusion, shape, labels=None, steps: int = 100,
           sampler: str = "ddpm", eta: float = 0.0, guidance: float = 0.0,
           carry_latents: bool | None = None, ddpm_variance: str = "large", context=None,
           generator=None, device=None, clip: bool = True, callback=None) -> torch.Tensor:
    """Draw samples; returns data in [-1, 1] (x_0 / b). `generator` may be one torch.Generator
    or a list with one per example (per-image seeds)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if ddpm_variance not in ("large", "small"):
        raise ValueError(f"ddpm_variance must be 'large' or 'small', got {ddpm_variance!r}")
    carry = diffusion.self_cond_rate > 0 if carry_latents is None else carry_latents
    x = randn(shape, generator, device)
    prev = None
    prev_x0 = torch.zeros_like(x) if diffusion.self_cond_x0 else None
    for k in range(steps):
        t = torch.full((shape[0],), 1.0 - k / steps, device=x.device)
        s = torch.full((shape[0],), 1.0 - (k + 1) / steps, device=x.device)
        g_t, g_s = diffusion.sample_schedule(t), diffusion.sample_schedule(s)
        x0, eps, latents = denoise(model, diffusion, x, g_t, labels, prev, guidance, context, clip, prev_x0)
        prev = latents if carry else None
        if diffusion.self_cond_x0 and carry:
            prev_x0 = x0
        if callback is not None:
            callback(k, x0)
        if k == steps - 1:
            x = x0
            break
        gt, gs = broadcast(g_t, x), broadcast(g_s, x)
        if sampler == "ddpm":  # ancestral step t -> s
            alpha = gt / gs
            mean = (x - (1 - alpha) / (1 - gt).sqrt() * eps) / alpha.sqrt()
            var = 1 - alpha if ddpm_variance == "large" else (1 - gs) / (1 - gt) * (1 - alpha)
            x = mean + var.clamp_min(0).sqrt() * randn(x.shape, generator, x.device)
        else:  # DDIM, eta = 0 deterministic
            sigma = eta * ((1 - gs) / (1 - gt) * (1 - gt / gs)).clamp_min(0).sqrt()
            x = gs.sqrt() * x0 + (1 - gs - sigma ** 2).clamp_min(0).sqrt() * eps
            if eta > 0:
                x = x + sigma * randn(x.shape, generator, x.device)
    return x / diffusion.b
