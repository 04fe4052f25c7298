"""Multi-process training (torchrun, gloo on the CPU) and the per-step speed/memory switches."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import TINY
from rinkit.build import build_diffusion, build_model
from rinkit.errors import RinkitError
from rinkit.train.checkpoint import load_checkpoint
from rinkit.train.distributed import shard_seed
from rinkit.train.trainer import train

RUN = [*TINY, "train.steps=4", "train.tensorboard=false"]


def torchrun(run_dir, *overrides, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "rinkit", "train", "--quiet", "--run-dir", str(run_dir), "--set", *RUN, *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tiny_cfg, tmp_path):
    """2 ranks x 8 examples == 1 process x 2 accumulated micro-batches of 8 (same global batch
    16, same shards, so the same noise). Tolerance: DDP averages (g0 + g1) / 2 while accumulation
    adds g0 / 2 + g1 / 2; for two ranks both are exact in float32 (we measured bit-identical
    weights), with more ranks the all-reduce order changes the last bits, hence assert_close."""
    torch.set_num_threads(1)
    try:
        one = train(tiny_cfg("train.steps=4", "train.grad_accum=2", "train.tensorboard=false"),
                    run_dir=tmp_path / "one", progress=False)
    finally:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    torchrun(tmp_path / "ddp")
    a, b = load_checkpoint(one.checkpoint), load_checkpoint(tmp_path / "ddp")
    assert b.step == 4 and b.extra == {"world_size": 2, "grad_accum": 1, "shards": 2}
    for k in a.model:
        torch.testing.assert_close(b.model[k], a.model[k], rtol=1e-5, atol=1e-6, msg=k)
        torch.testing.assert_close(b.ema[k], a.ema[k], rtol=1e-5, atol=1e-6, msg=k)
    # only rank 0 writes: one stats line per step, one final grid
    assert len((tmp_path / "ddp" / "stats.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "ddp" / "samples.png").exists()


@pytest.mark.slow
def test_fsdp_trains_and_writes_a_plain_checkpoint(tmp_path):
    """FSDP2 fully_shard on CPU/gloo: runs, and its checkpoint holds full (unsharded) weights
    that load into a plain model and resume under DDP (the optimizer state changes layout)."""
    torchrun(tmp_path / "run", "train.fsdp=true")
    ck = load_checkpoint(tmp_path / "run")
    assert ck.step == 4 and all(isinstance(k, str) for k in ck.optimizer["state"])
    from rinkit.config import validate
    build_model(validate(ck.config)).load_state_dict(ck.model)
    torchrun(tmp_path / "run", "train.steps=5")  # FSDP checkpoint -> DDP resume
    assert load_checkpoint(tmp_path / "run").step == 5


def test_shard_seeds_differ_and_are_stable():
    seeds = {shard_seed(0, s, k) for s in range(50) for k in range(8)}
    assert len(seeds) == 400 and shard_seed(3, 7, 1) == shard_seed(3, 7, 1) < 2 ** 63


def test_batch_must_split_into_shards(tiny_cfg, tmp_path):
    with pytest.raises(RinkitError, match="not divisible by world size 1 x train.grad_accum 3"):
        train(tiny_cfg("train.grad_accum=3", "train.steps=1"), run_dir=tmp_path, progress=False)


def test_activation_checkpointing_gives_the_same_gradients(tiny_cfg):
    cfg = tiny_cfg("model.dropout=0.1")
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg)
        model.core.checkpoint_blocks = ckpt
        torch.manual_seed(1)
        build_diffusion(cfg).loss(model, torch.rand(4, 1, 8, 8) * 2 - 1, torch.arange(4)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)  # dropout masks replay exactly (RNG state is preserved)


def test_bf16_autocast_and_tensorboard(tiny_cfg, tmp_path):
    pytest.importorskip("tensorboard")
    res = train(tiny_cfg("train.steps=2", "train.precision=bf16", "train.activation_checkpointing=true",
                         "train.grad_accum=2"), run_dir=tmp_path, progress=False)
    assert res.step == 2 and all(torch.isfinite(torch.tensor(res.losses)))
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/mem_gb", "train/grad_norm"} <= set(acc.Tags()["scalars"])
    assert any(t.startswith("samples/") for t in acc.Tags()["images"])
