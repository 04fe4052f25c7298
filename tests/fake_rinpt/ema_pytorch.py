"""A stand-in for ema_pytorch.EMA (see rin_pytorch.py here): an exponential moving average copy."""
import copy

import torch


class EMA(torch.nn.Module):
    def __init__(self, model, beta=0.9999, update_every=10, **kwargs):
        super().__init__()
        self.online, self.beta, self.update_every, self.step = [model], beta, update_every, 0
        self.ema_model = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self):
        self.step += 1
        if self.step % self.update_every == 0:
            for e, p in zip(self.ema_model.parameters(), self.online[0].parameters()):
                e.lerp_(p, 1 - self.beta)
