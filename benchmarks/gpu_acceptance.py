"""GPU acceptance: the first machine with a GPU verifies every GPU-only path of rinkit at once.

    python -m benchmarks.gpu_acceptance                 # all checks on cuda:0, a few minutes
    python -m benchmarks.gpu_acceptance --json out.json # also write the results
    python -m benchmarks.gpu_acceptance --device cpu --tiny --skip compile   # dry run of the logic

One line per check, `PASS|FAIL|SKIP name: numbers or reason`:
  backends     what `rinkit.build.check_backends` decides here for xformers, bf16 and --compile
  xformers     xformers vs SDPA: the attention kernel (fp32, bf16) and a whole RIN forward (fp32)
  bf16-train   one training step under bf16 autocast (two-pass self-conditioning loss, backward)
               vs fp32 on the same draws: finite, loss and gradient direction agree
  bf16-sample  DDIM sampling under bf16 autocast vs fp32 from the same noise
  ddp          DistributedDataParallel over NCCL (one process on one GPU), wrapped as the trainer
               wraps it: three optimizer steps equal the plain model's
  compile      torch.compile of the denoiser: a training step equals eager
Exit status 1 if any check FAILs. On a machine without CUDA the GPU-only checks SKIP with the
reason; `--device cpu` runs the rest on the CPU (DDP over gloo), which the test suite does.
The model is the cifar10 preset (31M parameters, fp32 master weights) at batch 16; `--tiny` uses
a 0.1M-parameter digits model. Tolerances are stated in each line.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import socket
import sys
import time
import traceback

import torch

CHECKS = ("backends", "xformers", "bf16-train", "bf16-sample", "ddp", "compile")
TINY = ["model.interface_dim=32", "model.latent_dim=32", "model.num_latents=8", "model.blocks=2",
        "model.layers_per_block=1", "model.latent_heads=2", "model.rw_heads=2"]


class Skip(Exception):
    pass


def _config(tiny: bool, *extra: str):
    from rinkit.config import load_config
    # dropout off: the comparisons need the same network function in both precisions
    common = ["model.dropout=0", "model.drop_path=0", *extra]
    return load_config("digits" if tiny else "cifar10", None, [*TINY, *common] if tiny else common)


def _model(cfg, device, seed=0):
    from rinkit.build import build_model
    torch.manual_seed(seed)
    return build_model(cfg).to(device)


def _precise_setup(unavailable, device, tiny: bool, train: bool):
    """Skip when the backend is missing; else a config and a seeded model in fp32 without TF32, so
    the comparisons measure the backend, not TF32's rounding."""
    if why := unavailable(device):
        raise Skip(why)
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = _config(tiny)
    return cfg, _model(cfg, device).train(train)


def _batch(cfg, device, n, seed=1):
    from rinkit.build import sample_shape
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *sample_shape(cfg), generator=g) * 2 - 1
    y = torch.randint(cfg.model.num_classes, (n,), generator=g) if cfg.model.num_classes else None
    return x.to(device), (y.to(device) if y is not None else None)


def _loss_and_grads(model, cfg, x, y, device, bf16: bool, seed=2):
    from rinkit.build import build_diffusion
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same t, noise, label dropout and keep-mask in both runs
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = build_diffusion(cfg).loss(model, x, y)
    loss.backward()
    grad = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    return loss.item(), grad


def _cos(a, b):
    return (a @ b / (a.norm() * b.norm())).item()


def check_backends(device, tiny):
    from rinkit.build import check_backends as check
    from rinkit.errors import RinkitError
    parts, failed = [], False
    for name, extra in (("xformers", "model.attention=xformers"), ("bf16", "train.precision=bf16"),
                        ("compile", "train.compile=true"), ("auto precision", "train.precision=auto")):
        try:
            got = check(_config(tiny, extra), device)
            parts.append(f"{name}: ok" + (f" -> {got}" if name == "auto precision" else ""))
        except RinkitError as e:
            parts.append(f"{name}: refused ({e})")
            # on a GPU, bf16 (compute capability >= 8) and compile (Triton ships with CUDA torch) must work
            failed |= device.type == "cuda" and name in ("bf16", "compile")
    return (not failed), "; ".join(parts)


def check_xformers(device, tiny):
    from rinkit.engine.attention import attention, xformers_unavailable
    if why := xformers_unavailable(device):
        raise Skip(f"xformers {why}")
    torch.backends.cuda.matmul.allow_tf32 = False
    out, ok = [], True
    for dtype, tol in ((torch.float32, 2e-3), (torch.bfloat16, 3e-2)):
        q, k, v = (torch.randn(4, 8, n, 64, device=device, dtype=dtype) for n in (256, 130, 130))
        ref = attention(q, k, v, "sdpa").float()
        err = (attention(q, k, v, "xformers").float() - ref).abs().max().item() / ref.abs().max().item()
        ok &= err < tol
        out.append(f"kernel {str(dtype)[6:]} rel err {err:.1e} (tol {tol:g})")
    cfg = _config(tiny)
    a = _model(cfg, device).eval()
    b = _model(_config(tiny, "model.attention=xformers"), device).eval()
    b.load_state_dict(a.state_dict())
    x, y = _batch(cfg, device, 8)
    g = torch.rand(8, device=device)
    with torch.no_grad():
        ra, rb = a(x, g, y)[0], b(x, g, y)[0]
    err = (ra - rb).abs().max().item() / ra.abs().max().item()
    ok &= err < 1e-3
    out.append(f"RIN forward fp32 rel err {err:.1e} (tol 1e-3)")
    return ok, "; ".join(out)


def check_bf16_train(device, tiny):
    from rinkit.build import bf16_unavailable
    cfg, model = _precise_setup(bf16_unavailable, device, tiny, train=True)
    torch.nn.init.ones_(model.core.self_cond.norm_out.weight)  # the self-cond path carries signal too
    x, y = _batch(cfg, device, 16)
    l32, g32 = _loss_and_grads(model, cfg, x, y, device, bf16=False)
    l16, g16 = _loss_and_grads(model, cfg, x, y, device, bf16=True)
    rel, cos = abs(l16 - l32) / abs(l32), _cos(g16, g32)
    ok = math.isfinite(l16) and bool(torch.isfinite(g16).all()) and rel < 0.02 and cos > 0.99
    return ok, (f"loss fp32 {l32:.4f} bf16 {l16:.4f} (rel diff {rel:.1e}, tol 2e-2); "
                f"gradient cosine {cos:.4f} (tol > 0.99); all finite: {bool(torch.isfinite(g16).all())}")


def check_bf16_sample(device, tiny):
    from rinkit.build import bf16_unavailable, build_diffusion, sample_shape
    from rinkit.diffusion import sample
    cfg, model = _precise_setup(bf16_unavailable, device, tiny, train=False)
    n, shape = 16, sample_shape(cfg)
    labels = torch.arange(n, device=device) % cfg.model.num_classes
    runs = {}
    for bf16 in (False, True):
        gens = [torch.Generator(device=device).manual_seed(i) for i in range(n)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            runs[bf16] = sample(model, build_diffusion(cfg), (n, *shape), labels, steps=20, sampler="ddim",
                                generator=gens, device=device).float()
    a, b = runs[False], runs[True]
    diff = (a - b).abs().mean().item()
    ok = bool(torch.isfinite(b).all()) and b.shape == a.shape and diff < 0.05
    return ok, f"20 DDIM steps, {n} samples: mean |bf16 - fp32| = {diff:.2e} (tol 5e-2, data in [-1, 1]), finite"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_ddp(device, tiny):
    import torch.distributed as dist
    from rinkit.build import build_diffusion
    from rinkit.train import distributed
    from rinkit.train.optim import EMA, apply_update, build_optimizer
    if device.type == "cuda":
        backend = "nccl"
        if not dist.is_nccl_available():
            raise Skip("this torch build has no NCCL")
    else:
        backend = "gloo"
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = _config(tiny)
    plain = _model(cfg, device).train()
    replica = copy.deepcopy(plain)
    kw = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1, **kw)
    try:
        # wrap() exactly as the trainer calls it (a DistInfo that says "distributed"; the group has one rank)
        net = distributed.wrap(replica, distributed.DistInfo(0, 2, 0, device), fsdp=False)
        models = {"plain": (plain, plain), "ddp": (replica, net)}
        state = {}
        for name, (model, call) in models.items():
            opt = build_optimizer(model, "lamb", 1e-3, 0.01)
            ema = EMA(model, 0.99)
            losses = []
            for step in range(3):
                x, y = _batch(cfg, device, 8, seed=10 + step)
                opt.zero_grad(set_to_none=True)
                torch.manual_seed(step)
                loss = build_diffusion(cfg).loss(call, x, y)
                loss.backward()
                apply_update(model, opt, ema, 1.0)
                losses.append(loss.item())
            state[name] = (losses, torch.cat([p.detach().flatten() for p in model.parameters()]))
        t = torch.ones(1, device=device)
        dist.all_reduce(t)
    finally:
        dist.destroy_process_group()
    (la, pa), (lb, pb) = state["plain"], state["ddp"]
    err = (pa - pb).abs().max().item()
    ok = err < 1e-5 and all(abs(u - v) < 1e-5 for u, v in zip(la, lb)) and t.item() == 1.0
    return ok, f"{backend}, world 1: 3 LAMB steps, max |param diff| vs plain {err:.1e} (tol 1e-5), losses {lb[-1]:.4f}"


def check_compile(device, tiny):
    from rinkit.build import compile_unavailable
    cfg, model = _precise_setup(compile_unavailable, device, tiny, train=True)
    x, y = _batch(cfg, device, 8)
    l_eager, g_eager = _loss_and_grads(model, cfg, x, y, device, bf16=False)
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    l_comp, g_comp = _loss_and_grads(compiled, cfg, x, y, device, bf16=False)
    first = time.perf_counter() - t0
    for p in model.parameters():
        p.grad = None
    rel, cos = abs(l_comp - l_eager) / abs(l_eager), _cos(g_comp, g_eager)
    ok = rel < 1e-3 and cos > 0.999
    return ok, f"loss rel diff {rel:.1e} (tol 1e-3), gradient cosine {cos:.5f} (tol > 0.999), first step {first:.0f} s"


RUN = {"backends": check_backends, "xformers": check_xformers, "bf16-train": check_bf16_train,
       "bf16-sample": check_bf16_sample, "ddp": check_ddp, "compile": check_compile}


def run(device: str | None, tiny: bool, skip=(), out=print) -> list[dict]:
    """Run the checks; returns [{"check", "status", "detail", "seconds"}]."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else None
    results = []
    for name in CHECKS:
        t0 = time.perf_counter()
        if name in skip:
            status, detail = "SKIP", "skipped by --skip"
        elif device is None:
            status, detail = "SKIP", "no CUDA device (torch.cuda.is_available() is False); --device cpu runs a dry run"
        else:
            try:
                ok, detail = RUN[name](torch.device(device), tiny)
                status = "PASS" if ok else "FAIL"
            except Skip as e:
                status, detail = "SKIP", str(e)
            except Exception as e:  # a crash is a failed check, with where it happened
                where = traceback.extract_tb(e.__traceback__)[-1]
                status = "FAIL"
                detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} " \
                         f"({os.path.basename(where.filename)}:{where.lineno})"
        r = {"check": name, "status": status, "detail": detail, "seconds": round(time.perf_counter() - t0, 1)}
        results.append(r)
        out(f"{status} {name}: {detail} [{r['seconds']} s]")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_acceptance", description=__doc__.splitlines()[0])
    ap.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when available, else every check SKIPs)")
    ap.add_argument("--tiny", action="store_true", help="a 0.1M-parameter model instead of the cifar10 preset")
    ap.add_argument("--skip", nargs="+", default=[], choices=CHECKS, metavar="CHECK", help=f"any of {CHECKS}")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"rinkit: error: --device {args.device} but CUDA is not available", file=sys.stderr)
        return 2
    env = (f"torch {torch.__version__}, " + (f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
                                             if torch.cuda.is_available() else "no CUDA"))
    print(f"gpu_acceptance: {env}")
    results = run(args.device, args.tiny, args.skip)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=1)
    return 1 if any(r["status"] == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
