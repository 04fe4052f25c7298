"""Preemption and crash recovery, in real subprocesses: SIGTERM -> checkpoint + exit 0;
kill -9 at a random step -> the resumed run ends bit-identical to an uninterrupted one."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY
from rinkit.train.checkpoint import list_checkpoints, load_checkpoint
from rinkit.train.trainer import train

# Runs the CLI, but SIGKILLs itself when Diffusion.loss is called for the N-th time (that is,
# in the middle of step N-1): a crash at a step the test picks, with no chance to clean up.
KILLER = """
import os, signal, sys
from rinkit.diffusion.process import Diffusion
n, real, calls = int(os.environ["RINKIT_TEST_KILL_AT"]), Diffusion.loss, [0]
def loss(self, *a, **k):
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *a, **k)
Diffusion.loss = loss
from rinkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli(run_dir, *overrides):
    return ["-m", "rinkit", "train", "--quiet", "--run-dir", str(run_dir), "--set", *TINY,
            "train.tensorboard=false", *overrides]


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_exits_0(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, *cli(run, "train.steps=100000")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stats = run / "stats.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if stats.exists() and len(stats.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    last = json.loads(stats.read_text().splitlines()[-1])["step"]
    ckpts = list_checkpoints(run)
    assert ckpts and load_checkpoint(ckpts[-1]).step == last >= 2
    assert "stopped at step" in out and not (run / "samples.png").exists()


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_resume_is_bit_identical(tiny_cfg, tmp_path):
    steps, every = 10, 2
    over = (f"train.steps={steps}", f"train.ckpt_every={every}", "train.keep_last=2")
    kill_at = random.randint(2, steps)  # loss call N runs inside step N-1
    run = tmp_path / "killed"
    env = {**os.environ, "RINKIT_TEST_KILL_AT": str(kill_at)}
    first = subprocess.run([sys.executable, "-c", KILLER, *cli(run, *over)[2:]], env=env,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == -signal.SIGKILL, (kill_at, first.stderr[-2000:])
    saved = [load_checkpoint(p).step for p in list_checkpoints(run)]
    assert saved == [s for s in range(every, kill_at, every)][-2:], (kill_at, saved)
    again = subprocess.run([sys.executable, *cli(run, *over)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    straight = train(tiny_cfg(*over, "train.tensorboard=false"), run_dir=tmp_path / "straight", progress=False)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(run)
    assert a.step == b.step == steps
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), (kill_at, k)
        assert torch.equal(a.ema[k], b.ema[k]), (kill_at, k)
    for k in a.optimizer["state"]:
        for name, v in a.optimizer["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b.optimizer["state"][k][name])), (kill_at, k, name)
