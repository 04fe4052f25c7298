"""Worker for the rin-pytorch comparison. Runs under the OTHER virtual environment's python
(rin-pytorch + torch only; it never imports rinkit) and answers one JSON request per stdin line
with one JSON line on stdout, so that the harness can alternate its own steps with these.
Two modes: `Worker` times one op on a fixed random batch (item 7(a), per step); `Fit` trains on
real data and writes samples (item 7(b), time-to-FID; the harness scores them).

rin-pytorch (lucidrains, PyPI 0.8.0) is built at the architecture settings a user would match
(patch size, interface width `dim`, latent width `dim_latent`, number of latents, blocks `depth`,
layers per block `latent_self_attn_depth`), everything else at the library's defaults: adaLN time
conditioning, linear attention among the patches, 4 heads x 32, GaussianDiffusion with the
sigmoid schedule, v-objective, self-conditioning with probability 0.9, and its Trainer's Adam.
"""
from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

# python puts this script's folder (benchmarks/) first on sys.path; drop it so that no module here
# shadows a standard one, and import benchmarks.measure from the repository root instead
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.measure import count_flops, state_bytes, timed  # noqa: E402


def build(cfg: dict, use_ddim: bool = False):
    from rin_pytorch import RIN, GaussianDiffusion
    model = RIN(dim=cfg["interface_dim"], image_size=cfg["image_size"], patch_size=cfg["patch_size"],
                channels=cfg["channels"], depth=cfg["blocks"], latent_self_attn_depth=cfg["layers_per_block"],
                dim_latent=cfg["latent_dim"], num_latents=cfg["num_latents"])
    return GaussianDiffusion(model, timesteps=cfg["sample_steps"], use_ddim=use_ddim)


class Worker:
    def __init__(self, cfg: dict):
        self.cfg, self.device = cfg, torch.device(cfg["device"])
        torch.manual_seed(0)
        random.seed(0)  # rin-pytorch draws its per-batch self-conditioning coin from `random`
        self.diffusion = build(cfg).to(self.device)
        self.model = self.diffusion.model
        self.opt = torch.optim.Adam(self.diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))  # its Trainer's
        b, c, s = cfg["batch"], cfg["channels"], cfg["image_size"]
        g = torch.Generator().manual_seed(0)
        self.img = torch.rand(b, c, s, s, generator=g).to(self.device)  # rin-pytorch takes [0, 1] images
        self.x_t = (self.img * 2 - 1).to(self.device)
        self.t = torch.full((b,), 0.5, device=self.device)
        self.prev_x, self.prev_latents = None, None
        self.amp = cfg["precision"] == "bf16"

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def train(self):
        self.diffusion.train()
        self.opt.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.diffusion(self.img)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def denoise(self):  # one step of its sampler: x self-cond + latent self-cond from the previous step
        self.model.eval()
        with self._autocast():
            out, lat = self.model(self.x_t, self.t, self.prev_x, self.prev_latents, return_latents=True)
        self.prev_x, self.prev_latents = out.float().clamp(-1, 1), lat

    @torch.no_grad()
    def sample(self):
        self.diffusion.eval()
        with self._autocast():
            self.diffusion.sample(batch_size=self.cfg["batch"])

    def info(self) -> dict:
        """FLOPs at batch 1 on the worker's own model and device, times the batch (every counted op
        is linear in the batch)."""
        b = self.cfg["batch"]
        x = self.x_t[:1]
        t = self.t[:1]
        lat = torch.zeros(1, self.cfg["num_latents"], self.cfg["latent_dim"], device=self.device)
        self.model.eval()
        with torch.no_grad():
            fwd = count_flops(lambda: self.model(x, t, x, lat))
        # a training step with its self-conditioning pass (taken with p = 0.9, so the median step
        # has it): the no-grad pass, then the self-conditioned pass with its backward
        with torch.no_grad():  # in eval mode: FLOPs are the same, and the module tracker of
            fwd0 = count_flops(lambda: self.model(x, t, torch.zeros_like(x)))  # train mode fails here
        self.model.train()
        train = fwd0 + count_flops(lambda: self.model(x, t, x, lat).sum().backward())
        self.opt.zero_grad(set_to_none=True)
        fwd, train = fwd * b, train * b
        return {"params": sum(p.numel() for p in self.diffusion.parameters()),
                "state_bytes": state_bytes(self.diffusion, self.opt), "flops_forward": fwd,
                "flops_train_step": train}


class Fit:
    """rin-pytorch trained the way its `Trainer` trains, minus accelerate and the file folder:
    Adam (lr 1e-4, betas 0.9/0.99), gradient-norm clip 1, ema_pytorch's EMA (0.995, every 10
    steps, its default warm-up), batches drawn from a reshuffled permutation each epoch, the last
    one short (its DataLoader with shuffle=True). The images come from the harness as an .npy in
    [-1, 1] (N, C, H, W); rin-pytorch takes [0, 1]. Sampling: its GaussianDiffusion.sample with
    the EMA model, DDIM unless told otherwise (its default), `sample_steps` steps."""

    def __init__(self, cfg: dict):
        import numpy as np
        from ema_pytorch import EMA
        self.cfg, self.device = cfg, torch.device(cfg["device"])
        torch.manual_seed(cfg["seed"])
        random.seed(cfg["seed"])
        self.diffusion = build(cfg, use_ddim=cfg.get("use_ddim", True)).to(self.device)
        self.model = self.diffusion.model
        self.opt = torch.optim.Adam(self.diffusion.parameters(), lr=cfg.get("lr", 1e-4), betas=(0.9, 0.99))
        self.ema = EMA(self.diffusion, beta=0.995, update_every=10)
        self.data = (torch.from_numpy(np.load(cfg["data"])).float() + 1) / 2
        self.gen = torch.Generator().manual_seed(cfg["seed"])
        self.order, self.steps, self.examples = [], 0, 0

    def _batch(self) -> torch.Tensor:
        if not self.order:
            perm = torch.randperm(len(self.data), generator=self.gen)
            self.order = list(perm.split(self.cfg["batch"]))
        return self.data[self.order.pop(0)].to(self.device)

    def train_for(self, seconds: float) -> dict:
        """Train whole steps until `seconds` of training have passed (the last step may end past
        it: the measured seconds are returned, not the asked ones)."""
        self.diffusion.train()
        losses, t0 = [], time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            x = self._batch()
            loss = self.diffusion(x)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.diffusion.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.ema.update()
            losses.append(float(loss.detach()))
            self.steps += 1
            self.examples += len(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return {"s": time.perf_counter() - t0, "steps": self.steps, "examples": self.examples,
                "loss": sum(losses) / max(1, len(losses))}

    @torch.no_grad()
    def sample(self, n: int, path: str, seed: int = 1, batch: int = 500, use_ddim: bool | None = None,
               online: bool = False) -> dict:
        """n samples from the EMA model (`online`: the trained weights themselves) into `path`."""
        import numpy as np
        ema = (self.diffusion if online else self.ema.ema_model).eval()
        ema.use_ddim = self.cfg.get("use_ddim", True) if use_ddim is None else use_ddim
        torch.manual_seed(seed)
        t0, out = time.perf_counter(), []
        for i in range(0, n, batch):
            out.append(ema.sample(batch_size=min(batch, n - i)).float().cpu() * 2 - 1)
        np.save(path, torch.cat(out).numpy())
        return {"s": time.perf_counter() - t0}

    def info(self) -> dict:
        """FLOPs per example, counted at batch 1 on this model: the forward that gets the gradient
        (reading the previous estimate and latents), its no-grad self-conditioning forward, and
        the training total 3 x forward + that pass times its rate 0.9 (its coin is per batch)."""
        x = torch.zeros(1, self.cfg["channels"], self.cfg["image_size"], self.cfg["image_size"], device=self.device)
        t = torch.full((1,), 0.5, device=self.device)
        lat = torch.zeros(1, self.cfg["num_latents"], self.cfg["latent_dim"], device=self.device)
        self.model.eval()
        with torch.no_grad():
            fwd = count_flops(lambda: self.model(x, t, x, lat))
            sc = count_flops(lambda: self.model(x, t))
        return {"params": sum(p.numel() for p in self.model.parameters()), "forward": fwd,
                "self_cond_forward": sc, "train": 3 * fwd + self.diffusion.train_prob_self_cond * sc}


def main() -> int:
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg.get("threads") or torch.get_num_threads())
    w = Fit(cfg) if cfg.get("mode") == "fit" else Worker(cfg)
    print(json.dumps({"ready": True, "params": sum(p.numel() for p in w.diffusion.parameters())}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        if op == "quit":
            break
        if op == "info" or isinstance(w, Fit):  # Fit's ops time themselves and take arguments
            print(json.dumps(getattr(w, op)(**req)), flush=True)
            continue
        dt, peak = timed(getattr(w, op), w.device)
        print(json.dumps({"s": dt, "peak": peak}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
