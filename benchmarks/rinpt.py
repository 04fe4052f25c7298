"""The harness side of the rin-pytorch comparison: a runner that drives benchmarks/rinpt_worker.py
in the other virtual environment over stdin/stdout, one measured op per request, so its steps
alternate with ours in the same run (see harness.run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rinkit.config import Config, modality_options
from rinkit.errors import RinkitError

DEFAULT_PYTHON = "/tmp/rinpt/bin/python"


class RemoteRunner:
    kind = "rin-pytorch"

    def __init__(self, cfg: Config, batch: int, device: str, precision: str, sample_steps: int,
                 python: str | None = None):
        python = python or os.environ.get("RINPT_PYTHON") or DEFAULT_PYTHON
        if not Path(python).exists():
            raise RinkitError(f"no python at {python} for rin-pytorch; create the venv with: python3 -m venv "
                              "/tmp/rinpt && /tmp/rinpt/bin/pip install torch rin-pytorch==0.8.0 "
                              "(or give --rinpt-python)")
        if cfg.modality != "image":
            raise RinkitError("rin-pytorch is an image model; give an image preset for rinpt:PRESET")
        o, m = modality_options(cfg), cfg.model
        if o.size[0] != o.size[1]:
            raise RinkitError("rin-pytorch takes square images only")
        spec = {"image_size": o.size[0], "patch_size": o.patch_size, "channels": o.channels,
                "interface_dim": m.interface_dim, "latent_dim": m.latent_dim, "num_latents": m.num_latents,
                "blocks": m.blocks, "layers_per_block": m.layers_per_block, "batch": batch,
                "device": device, "precision": precision, "sample_steps": sample_steps}
        if isinstance(spec["layers_per_block"], list):
            raise RinkitError("rin-pytorch takes one depth for every block")
        self.name = f"rin-pytorch {cfg.name}"
        worker = Path(__file__).with_name("rinpt_worker.py")
        self.proc = subprocess.Popen([python, str(worker), json.dumps(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
        hello = self._read()
        self.params = hello["params"]
        self._info = None

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RinkitError(f"the rin-pytorch worker exited (code {self.proc.poll()}); see its error above")
        return json.loads(line)

    def _ask(self, op: str) -> dict:
        self.proc.stdin.write(json.dumps({"op": op}) + "\n")
        self.proc.stdin.flush()
        return self._read()

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

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
