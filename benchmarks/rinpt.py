"""The harness side of the rin-pytorch comparison: a runner that drives benchmarks/rinpt_worker.py
in the other virtual environment over stdin/stdout, one measured op per request, so its steps
alternate with ours in the same run (see harness.run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rinkit.build import ConfigLike, resolve
from rinkit.errors import RinkitError

DEFAULT_PYTHON = "/tmp/rinpt/bin/python"


def arch_spec(cfg: ConfigLike) -> dict:
    """The architecture settings a user would match, from an image preset, in rin-pytorch's terms
    (the worker maps them onto its RIN(...) arguments)."""
    if cfg.modality != "image":
        raise RinkitError("rin-pytorch is an image model; give an image preset")
    o, m = resolve(cfg).options, cfg.model
    if o.size[0] != o.size[1]:
        raise RinkitError("rin-pytorch takes square images only")
    if isinstance(m.layers_per_block, list):
        raise RinkitError("rin-pytorch takes one depth for every block")
    return {"image_size": o.size[0], "patch_size": o.patch_size, "channels": o.channels,
            "interface_dim": m.interface_dim, "latent_dim": m.latent_dim, "num_latents": m.num_latents,
            "blocks": m.blocks, "layers_per_block": m.layers_per_block}


class _Remote:
    """The worker process in the other venv: one JSON request per line, one JSON answer."""

    def __init__(self, spec: dict, python: str | None):
        python = python or os.environ.get("RINPT_PYTHON") or DEFAULT_PYTHON
        if not Path(python).exists():
            raise RinkitError(f"no python at {python} for rin-pytorch; create the venv with: python3 -m venv "
                              "/tmp/rinpt && /tmp/rinpt/bin/pip install torch rin-pytorch==0.8.0 "
                              "(or give --rinpt-python)")
        worker = Path(__file__).with_name("rinpt_worker.py")
        env = {**os.environ, "TQDM_DISABLE": "1"}  # its samplers draw a tqdm bar per call on stderr
        self.proc = subprocess.Popen([python, str(worker), json.dumps(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=sys.stderr, text=True, env=env)
        self.params = self._read()["params"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RinkitError(f"the rin-pytorch worker exited (code {self.proc.poll()}); see its error above")
        return json.loads(line)

    def _ask(self, op: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


class RemoteRunner(_Remote):
    """Per-step timing (item 7(a)): train / denoise / sample ops on a fixed random batch."""
    kind = "rin-pytorch"

    def __init__(self, cfg: ConfigLike, batch: int, device: str, precision: str, sample_steps: int,
                 python: str | None = None):
        spec = {**arch_spec(cfg), "batch": batch, "device": device, "precision": precision,
                "sample_steps": sample_steps}
        self.name = f"rin-pytorch {cfg.name}"
        super().__init__(spec, python)
        self._info = None

    def run(self, op: str) -> tuple[float, int]:
        r = self._ask(op)
        return r["s"], r["peak"]

    def info(self) -> dict:
        if self._info is None:
            self._info = self._ask("info")
        return self._info

    def flops(self) -> dict:
        i = self.info()
        return {"forward": i["flops_forward"], "train": i["flops_train_step"]}

    def state_bytes(self) -> int:
        return self.info()["state_bytes"]


class RemoteFit(_Remote):
    """Training on real data and sampling (item 7(b), time-to-FID): see rinpt_worker.Fit. `data`
    is an .npy of training images in [-1, 1], (N, C, H, W)."""

    def __init__(self, cfg: ConfigLike, data: str | Path, batch: int, device: str, sample_steps: int,
                 seed: int, lr: float = 1e-4, use_ddim: bool = True, python: str | None = None):
        spec = {**arch_spec(cfg), "mode": "fit", "data": str(data), "batch": batch, "device": device,
                "sample_steps": sample_steps, "seed": seed, "lr": lr, "use_ddim": use_ddim}
        super().__init__(spec, python)

    def train_for(self, seconds: float) -> dict:
        return self._ask("train_for", seconds=seconds)

    def sample(self, n: int, path: str | Path, seed: int = 1, batch: int = 500, use_ddim: bool | None = None,
               online: bool = False):
        """n samples in [-1, 1] (N, C, H, W) on the CPU, and the sampling seconds; `use_ddim`
        overrides the sampler given at start for this call, `online` samples the trained weights
        instead of the EMA."""
        import numpy as np
        import torch
        r = self._ask("sample", n=n, path=str(path), seed=seed, batch=batch, use_ddim=use_ddim, online=online)
        return torch.from_numpy(np.load(path)), r["s"]

    def info(self) -> dict:
        return self._ask("info")
