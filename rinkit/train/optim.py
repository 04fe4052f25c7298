"""Optimizers, the learning-rate schedule and EMA (rin-spec.md section 4).

* LAMB is timm's (with its own hidden clipping turned off: clipping is done once, explicitly, in
  the trainer, for every optimizer, which the official code silently failed to do for LAMB).
* Weight decay skips biases and LayerNorm parameters (the official `bias|beta|gamma` exclusion);
  learned positional and latent tables ARE decayed, as in the official code.
* LR: linear warm-up, then `cosine@r` = a cosine over (steps - warmup) / r steps, truncated at the
  end of training (ends at 0.5 (1 + cos(r pi)) of the peak), or constant.
* EMA starts as a copy of the model (the official code started it from a fresh random init).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_norm_or_bias = p.ndim == 1 or name.endswith(".bias")
        (no_decay if is_norm_or_bias else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=1e-8)
    if name == "lamb":
        from timm.optim import Lamb
        return Lamb(groups, lr=lr, betas=tuple(betas), eps=1e-8, max_grad_norm=None)
    raise ValueError(f"unknown optimizer {name!r}")


def lr_factor(step: int, total: int, warmup: int, decay: str) -> float:
    """Multiplier of the peak LR used for the update that takes the model from `step` to step+1."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    r = float(decay.split("@", 1)[1])
    span = max(total - warmup, 1) / r
    progress = min((step - warmup) / span, r)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of parameters; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = dict(model.named_parameters())
        ema_p = [p for n, p in self.model.named_parameters()]
        torch._foreach_lerp_(ema_p, [src[n].detach() for n, _ in self.model.named_parameters()],
                             1.0 - self.decay)
        for (_, b), (_, sb) in zip(self.model.named_buffers(), model.named_buffers()):
            b.copy_(sb)
