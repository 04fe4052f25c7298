"""Multi-process training on PyTorch's own engine: `torchrun` sets RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR, this module turns them into a process group (NCCL on GPUs, gloo on
CPUs), wraps the model in DistributedDataParallel or FSDP2 (`fully_shard`) and offers the few
collectives the trainer needs. A plain `python -m rinkit train` is world size 1 and never
touches torch.distributed.

Randomness is keyed, not streamed: every micro-batch draws its diffusion noise, timesteps,
label dropout and model dropout from a generator seeded by (global seed, step, shard), where a
shard is one micro-batch of the global batch (shards = world size x accumulation steps). So a
run is a function of the config and the shard count, not of which process ran what, and a
resumed run needs no RNG state to reproduce the next step exactly.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rinkit.errors import RinkitError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (no-op for a single process). On GPUs each
    process takes the GPU of its LOCAL_RANK."""
    world = env_world_size()
    if world <= 1:
        return DistInfo(device=device)
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RinkitError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) visible; "
                              "use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kw = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kw)
    return DistInfo(rank, world, local, device)


def pick_device(name: str) -> torch.device:
    """`auto` = the GPU where there is one, else the CPU; a CUDA device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RinkitError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def dist_context() -> tuple[int, int]:
    """(rank, world size); under torchrun, joins the process group (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(info: DistInfo, obj):
    """Rank 0's value on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(info: DistInfo, value: torch.Tensor) -> torch.Tensor:
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def shard_seed(seed: int, step: int, shard: int) -> int:
    """The seed of micro-batch `shard` of global step `step` (a 63-bit mix, so neighbouring
    steps and shards get unrelated streams)."""
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + shard * 0x94D049BB133111EB) % 2 ** 64
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) % 2 ** 64
    return (x ^ (x >> 32)) % 2 ** 63


def wrap(model: torch.nn.Module, info: DistInfo, fsdp: bool) -> torch.nn.Module:
    """The module the training step calls. DDP keeps a full replica per process and all-reduces
    gradients; FSDP2 shards parameters, gradients and optimizer state (each RIN block is its own
    unit, so only one block is gathered at a time)."""
    if fsdp:
        try:
            from torch.distributed.fsdp import fully_shard
        except ImportError:
            raise RinkitError("train.fsdp needs torch>=2.6 (torch.distributed.fsdp.fully_shard)") from None
        if not info.enabled:
            raise RinkitError("train.fsdp=true needs several processes: launch with torchrun --nproc_per_node N")
        for block in model.core.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [info.device.index] if info.device.type == "cuda" else None
    # Buffers (sinusoid frequencies) never change, so there is nothing to broadcast each step
    # (newer torch renamed the switch).
    import inspect
    no_sync_buffers = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                       else {"broadcast_buffers": False})
    return DDP(model, device_ids=ids, **no_sync_buffers)


def shard_like(module: torch.nn.Module, info: DistInfo) -> None:
    """Shard the EMA copy exactly like the model, so the EMA update is a local op per shard."""
    from torch.distributed.fsdp import fully_shard
    for block in module.core.blocks:
        fully_shard(block)
    fully_shard(module)


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(model, ema_model, opt, fsdp: bool):
    """(model, EMA, optimizer) state dicts with full tensors. Under FSDP this is a collective
    (every rank must call it) and only rank 0 gets the tensors; the optimizer state is then
    keyed by parameter name (torch.distributed.checkpoint's layout) instead of by index."""
    if not fsdp:
        return model.state_dict(), ema_model.state_dict(), opt.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
    o = _options()
    return (get_model_state_dict(model, options=o), get_model_state_dict(ema_model, options=o),
            get_optimizer_state_dict(model, opt, options=o))


def load_optimizer_state(model, opt, state: dict, fsdp: bool) -> None:
    """Load a checkpoint's optimizer state whichever layout it was saved in (index-keyed by a
    single-process / DDP run, name-keyed by an FSDP run), so runs can move between the two."""
    by_name = any(isinstance(k, str) for k in state.get("state", {})) or any(
        isinstance(p, str) for g in state.get("param_groups", []) for p in g.get("params", []))
    if not fsdp and not by_name:
        opt.load_state_dict(state)
        return
    if not by_name:  # index -> parameter name, in the order the optimizer enumerates them
        names = {id(p): n for n, p in model.named_parameters()}
        order = [names[id(p)] for g in opt.param_groups for p in g["params"]]
        state = {"state": {order[i]: v for i, v in state["state"].items()},
                 "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]]}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))


def full_copy(ema_model, cfg, fsdp: bool, main: bool):
    """A plain (unsharded) EMA model for sampling on rank 0. Without FSDP that is the EMA model
    itself; with FSDP its full weights are gathered (a collective: call it on every rank)."""
    if not fsdp:
        return ema_model
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    sd = get_model_state_dict(ema_model, options=_options())
    if not main:
        return None
    from rinkit.build import build_model
    device = next(ema_model.parameters()).device
    m = build_model(cfg)
    m.load_state_dict(sd)
    return m.to(device).eval()
