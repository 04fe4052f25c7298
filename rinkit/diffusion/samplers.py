"""Samplers: one function per sampler, one signature, a name -> function table (k-diffusion's shape).

    sampler(den, x, gammas, noise, *, eta, variance) -> x_0

`den(x_t, gamma) -> (x_0, eps)` is one network evaluation (two halves of one batch under
classifier-free guidance); it carries RIN's latent self-conditioning itself: every evaluation is
given the latents of the evaluation before it (the first gets none = zeros), also between the
two evaluations of a second-order step. `gammas` is the grid gamma(t_k), t_k = 1 - k/T, k = 0..T,
under the *sampling* schedule (which may differ from the training one); the samplers evaluate
at t_0 .. t_{T-1} and return the last evaluation's x_0 estimate, as the official code does
(so the point t_T = 0 is never evaluated). `noise(shape)` draws fresh Gaussian noise (per-image
generators). `SAMPLERS` is the table config validation and the CLI read; `sample` runs one.

    ddpm    ancestral (Ho et al. 2020), "large" (beta) or "small" (posterior) variance; T NFE
    ddim    Song et al. 2021, eta = 0 deterministic; T NFE
    dpm++2m DPM-Solver++(2M) (Lu et al. 2022), multistep 2nd order in log-SNR, data prediction; T NFE
    heun    EDM's 2nd-order Heun (Karras et al. 2022, Alg. 1) on sigma = sqrt((1 - gamma) / gamma);
            2 evaluations a step, 1 on the last and on steps from sigma > 80 (EDM's sigma_max); <= 2T - 1 NFE

With classifier-free guidance the conditional and unconditional halves run as one batch (the
unconditional half has the null class and, for models trained with context_dropout, the null
context); the conditional half's latents are carried and both halves read the same previous
latents (official behaviour). With the diffusion's `self_cond_x0` the previous evaluation's
(clipped, guided) x_0 estimate is fed too, zeros at the first, as in training's pass 1.
Guidance follows the official form pred = (1 + w) * cond - w * uncond, so w = 0 is unguided
(DiT's cfg scale s is w + 1). `guidance_interval` (sigma_lo, sigma_hi) applies it only to the
evaluations whose noise level sigma = sqrt((1 - gamma) / gamma) lies in (sigma_lo, sigma_hi], the
others run unguided (one half, half the cost): Kynkaanniemi et al. 2024 ("Applying guidance in a
limited interval", EDM2's guidance), because guidance at high noise sets the sample's global
layout towards the class's mode (size, pose) and costs diversity, while the mid levels carry the
class's shape.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from rinkit.diffusion.process import Diffusion, randn

Denoise = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Noise = Callable[[tuple[int, ...]], torch.Tensor]
SIGMA_MAX = 80.0  # EDM's largest noise level: Heun corrects only below it


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
        # a baseline without latents (benchmarks' U-Nets, PVCNN) returns None for them
        pred, latents = (1 + guidance) * cond - guidance * uncond, None if latents is None else latents.chunk(2)[0]
    else:
        pred, latents = model(x_t, gamma, labels, prev_latents, context, **kw)
    x0, eps = diffusion.to_x0_eps(pred.float(), x_t, gamma, clip=clip)
    return x0, eps, latents


def _integrate(den: Denoise, x, gammas, step) -> torch.Tensor:
    """The loop every sampler shares: evaluate at t_0 .. t_{T-1}, return the last x_0 estimate,
    and between evaluations move x from gamma_t to gamma_s with `step(x, x0, eps, gt, gs)`."""
    for k in range(len(gammas) - 1):
        x0, eps = den(x, gammas[k])
        if k == len(gammas) - 2:
            return x0
        x = step(x, x0, eps, gammas[k], gammas[k + 1])


def sample_ddpm(den: Denoise, x, gammas, noise: Noise, *, eta: float = 0.0, variance: str = "large"):
    """Ancestral sampling, step t -> s from the posterior q(x_s | x_t, x_0) with x_0 estimated."""
    def step(x, x0, eps, gt, gs):
        alpha = gt / gs
        mean = (x - (1 - alpha) / (1 - gt).sqrt() * eps) / alpha.sqrt()
        var = 1 - alpha if variance == "large" else (1 - gs) / (1 - gt) * (1 - alpha)
        return mean + var.clamp_min(0).sqrt() * noise(x.shape)
    return _integrate(den, x, gammas, step)


def sample_ddim(den: Denoise, x, gammas, noise: Noise, *, eta: float = 0.0, variance: str = "large"):
    """DDIM; eta = 0 is deterministic (the probability-flow ODE's first-order solver), 1 is DDPM-like."""
    def step(x, x0, eps, gt, gs):
        sigma = eta * ((1 - gs) / (1 - gt) * (1 - gt / gs)).clamp_min(0).sqrt()
        x = gs.sqrt() * x0 + (1 - gs - sigma ** 2).clamp_min(0).sqrt() * eps
        return x + sigma * noise(x.shape) if eta > 0 else x
    return _integrate(den, x, gammas, step)


def sample_dpmpp_2m(den: Denoise, x, gammas, noise: Noise, *, eta: float = 0.0, variance: str = "large"):
    """DPM-Solver++(2M): the exact data-prediction solution of the probability-flow ODE in
    lambda = log(alpha / sigma), with x_0 linearly extrapolated from the last two estimates
    (Lu et al. 2022, Alg. 2). Its first step is DDIM's; one evaluation a step."""
    lam = lambda g: 0.5 * (g.log() - (1 - g).log())  # noqa: E731 - log-SNR / 2
    last = {}  # the previous step's x_0 estimate and log-SNR gap

    def step(x, x0, eps, gt, gs):
        h = lam(gs) - lam(gt)
        d = x0
        if last:
            r = last["h"] / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * last["x0"]
        last.update(x0=x0, h=h)
        return ((1 - gs) / (1 - gt)).sqrt() * x - gs.sqrt() * torch.expm1(-h) * d
    return _integrate(den, x, gammas, step)


def sample_heun(den: Denoise, x, gammas, noise: Noise, *, eta: float = 0.0, variance: str = "large"):
    """EDM's deterministic Heun sampler on x / sqrt(gamma) and sigma = sqrt((1 - gamma) / gamma),
    written with the eps estimates (dx/dsigma = eps): Euler predictor to s, trapezoidal corrector
    with eps evaluated there. The last step returns the x_0 estimate (EDM's Euler step to
    sigma = 0), and steps that start above SIGMA_MAX stay Euler: out of pure noise the corrector
    would multiply the difference of two eps estimates by sigma (~3e4 at gamma's floor)."""
    sig = lambda g: ((1 - g) / g).sqrt()  # noqa: E731

    def step(x, x0, eps, gt, gs):
        st, ss = sig(gt), sig(gs)
        x_hat = x0 + ss * eps  # Euler: x/sqrt(gamma) + (sigma_s - sigma_t) eps
        if st <= SIGMA_MAX:
            _, eps_s = den(gs.sqrt() * x_hat, gs)
            x_hat = x_hat + (ss - st) * (eps_s - eps) / 2
        return gs.sqrt() * x_hat
    return _integrate(den, x, gammas, step)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm, "ddim": sample_ddim, "dpm++2m": sample_dpmpp_2m, "heun": sample_heun}


def in_interval(gamma: torch.Tensor, interval: tuple[float, float]) -> bool:
    """Whether the noise level sigma = sqrt((1 - gamma) / gamma) of a sampling step (one gamma for
    the batch) lies in (lo, hi]."""
    g = float(gamma.reshape(-1)[0])
    sigma = ((1 - g) / g) ** 0.5 if g > 0 else float("inf")
    return interval[0] < sigma <= interval[1]


def sampling_grid(diffusion: Diffusion, steps: int, device=None) -> torch.Tensor:
    """gamma(t_k) for t_k = 1 - k/steps, k = 0..steps, under the sampling schedule."""
    t = torch.tensor([1.0 - k / steps for k in range(steps + 1)], device=device)
    return diffusion.sample_schedule(t)


@torch.no_grad()
def sample(model, diffusion: Diffusion, shape, labels=None, steps: int = 100,
           sampler: str = "ddpm", eta: float = 0.0, guidance: float = 0.0,
           carry_latents: bool | None = None, ddpm_variance: str = "large", context=None,
           generator=None, device=None, clip: bool = True, callback=None,
           guidance_interval: tuple[float, float] | None = None) -> torch.Tensor:
    """Draw samples with `SAMPLERS[sampler]`; returns data in [-1, 1] (x_0 / b). `generator` may
    be one torch.Generator or a list with one per example (per-image seeds). `callback(i, x0)`
    sees every network evaluation's x_0 estimate. `guidance_interval` (sigma_lo, sigma_hi): guide
    only the evaluations with sigma_lo < sigma <= sigma_hi (None: all)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if ddpm_variance not in ("large", "small"):
        raise ValueError(f"ddpm_variance must be 'large' or 'small', got {ddpm_variance!r}")
    carry = diffusion.self_cond_rate > 0 if carry_latents is None else carry_latents
    x = randn(shape, generator, device)
    state = {"latents": None, "x0": torch.zeros_like(x) if diffusion.self_cond_x0 else None, "i": 0}

    def den(x_t, gamma):
        g = gamma.expand(shape[0])
        w = guidance if guidance_interval is None or in_interval(gamma, guidance_interval) else 0.0
        x0, eps, latents = denoise(model, diffusion, x_t, g, labels, state["latents"], w, context,
                                   clip, state["x0"])
        state["latents"] = latents if carry else None
        if diffusion.self_cond_x0 and carry:
            state["x0"] = x0
        if callback is not None:
            callback(state["i"], x0)
        state["i"] += 1
        return x0, eps

    gammas = sampling_grid(diffusion, steps, x.device)
    x0 = SAMPLERS[sampler](den, x, gammas, lambda sh: randn(sh, generator, x.device),
                           eta=eta, variance=ddpm_variance)
    return x0 / diffusion.b
