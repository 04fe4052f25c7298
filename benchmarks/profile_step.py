"""Profile one RIN training step (self-conditioning pass + forward + backward + LAMB step) with
torch.profiler and print where the time goes, op by op. Run this before optimising:
    python -m benchmarks.profile_step --preset cifar10 --batch 2 [--set KEY=VALUE ...] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cifar10")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1, help="profiled steps (after one warm-up step)")
    ap.add_argument("--set", dest="overrides", nargs="+", default=[])
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--out", help="folder for profile.txt")
    ap.add_argument("--trace", action="store_true", help="also write a Chrome trace (trace.json, large)")
    args = ap.parse_args(argv)
    from benchmarks.harness import LocalRunner
    from benchmarks.models import rin_entry
    device = "cuda" if torch.cuda.is_available() else "cpu"
    r = LocalRunner(rin_entry(args.preset, args.overrides), args.batch, device, "fp32", 1)
    r.train()  # warm-up
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts, record_shapes=True) as prof:
        for _ in range(args.steps):
            with record_function("train_step"):
                r.train()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    text = prof.key_averages().table(sort_by=key, row_limit=args.rows)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile.txt").write_text(f"python -m benchmarks.profile_step {' '.join(sys.argv[1:])}\n\n{text}\n")
        if args.trace:
            prof.export_chrome_trace(str(out / "trace.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
