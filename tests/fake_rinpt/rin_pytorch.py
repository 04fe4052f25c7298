"""A stand-in for rin-pytorch's public surface (RIN, GaussianDiffusion), so that the tests can drive
benchmarks/rinpt_worker.py end to end without the package: a tiny convolutional denoiser with
the same call signatures, the same [0, 1] image convention and a per-batch self-conditioning coin.
The real package is compared in benchmarks/RESULTS.md, never here."""
from random import random

import torch
from torch import nn
from torch.nn import functional as F


class RIN(nn.Module):
    def __init__(self, dim, image_size, patch_size=16, channels=3, depth=6, latent_self_attn_depth=2,
                 dim_latent=None, num_latents=256, **kwargs):
        super().__init__()
        self.image_size, self.channels = image_size, channels
        self.net = nn.Conv2d(2 * channels + 1, channels, 3, padding=1)
        self.latents = nn.Parameter(torch.zeros(num_latents, dim_latent or dim))

    def forward(self, x, time, x_self_cond=None, latent_self_cond=None, return_latents=False):
        x_self_cond = torch.zeros_like(x) if x_self_cond is None else x_self_cond
        t = time.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        out = self.net(torch.cat((x_self_cond, x, t), 1))
        lat = self.latents.expand(x.shape[0], -1, -1)
        if latent_self_cond is not None:
            lat = lat + 0 * latent_self_cond
        return (out, lat) if return_latents else out


class GaussianDiffusion(nn.Module):
    def __init__(self, model, *, timesteps=1000, use_ddim=True, train_prob_self_cond=0.9, **kwargs):
        super().__init__()
        self.model, self.channels, self.image_size = model, model.channels, model.image_size
        self.timesteps, self.use_ddim, self.train_prob_self_cond = timesteps, use_ddim, train_prob_self_cond

    def forward(self, img):
        x0 = img * 2 - 1
        t = torch.rand(x0.shape[0], device=x0.device)
        a = torch.cos(t * torch.pi / 2).view(-1, 1, 1, 1)
        x = a * x0 + (1 - a * a).sqrt() * torch.randn_like(x0)
        cond, lat = None, None
        if random() < self.train_prob_self_cond:
            with torch.no_grad():
                cond, lat = self.model(x, t, return_latents=True)
        return F.mse_loss(self.model(x, t, cond, lat), x0)

    @torch.no_grad()
    def sample(self, batch_size=16):
        x = torch.randn(batch_size, self.channels, self.image_size, self.image_size, device=self.latents_device())
        cond, lat = None, None
        for i in range(self.timesteps):
            t = torch.full((batch_size,), 1 - i / self.timesteps, device=x.device)
            cond, lat = self.model(x, t, cond, lat, return_latents=True)
            cond = cond.clamp(-1, 1)
        return (cond + 1) / 2

    def latents_device(self):
        return next(self.model.parameters()).device
