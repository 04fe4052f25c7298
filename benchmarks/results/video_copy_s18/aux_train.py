"""Experiment: the default video recipe + an auxiliary loss on the copy alone (w * |copy - x0|^2),
so the copy kernel learns the displacement whatever the residual does. Usage: aux_train.py W -- cli args"""
import os, sys
import rinkit_plugins.video.tokenizer as tk
from rinkit.diffusion.process import Diffusion
from rinkit.cli import main
W = float(sys.argv[1]); args = sys.argv[3:]
STORE = {}
orig_fwd = tk.VideoDetokenizer.forward
def fwd(self, tokens, context=None, state=None):
    x = tk.PatchUnembed.forward(self, tokens).transpose(1, 2)
    c = self.copy(tokens, context.to(x.dtype))
    if self.training:
        STORE["copy"] = c[:, :self.frames]
    return (x + c)[:, :self.frames]
tk.VideoDetokenizer.forward = fwd
orig_se = Diffusion.squared_error
def se(self, pred, x0, eps, gamma):
    err = orig_se(self, pred, x0, eps, gamma)
    c = STORE.pop("copy", None)
    if c is not None and W > 0:
        err = err + W * ((c.float() - x0.float()) ** 2) / self.b ** 2
    return err
Diffusion.squared_error = se
sys.exit(main(args))
