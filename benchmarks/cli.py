"""Command line of the harness, `python -m benchmarks`. Imports no
torch at parse time, so `rinkit --help` stays fast."""
from __future__ import annotations

import sys

OPS = ("train", "denoise", "sample")


def add_arguments(ap) -> None:
    ap.add_argument("--models", nargs="+", help="rin:PRESET, unet:SIZE (ADM U-Net, matched to the first "
                    "RIN), rinpt:PRESET (rin-pytorch at the preset's settings, in --rinpt-python's venv). "
                    "Default: rin:cifar10 unet:32 on a CPU, rin:imagenet256 unet:256 on a GPU")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5, help="measured iterations per op (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--sample-steps", type=int, default=10, help="DDPM steps of the timed full sampling")
    ap.add_argument("--sample-reps", type=int, default=3)
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                    help="config overrides for the RIN models (and rin-pytorch's matched settings)")
    ap.add_argument("--tiny", action="store_true", help="tiny models: a smoke test of the harness")
    ap.add_argument("--out", default=None, help="output folder (default: benchmarks/results/<date>)")
    ap.add_argument("--rinpt-python", default=None, help="python of the venv with rin-pytorch "
                    "(default: $RINPT_PYTHON or /tmp/rinpt/bin/python)")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from rinkit.errors import RinkitError
    ap = argparse.ArgumentParser(prog="python -m benchmarks",
                                 description="RIN vs ADM U-Nets / rin-pytorch: time, memory, FLOPs, MFU")
    add_arguments(ap)
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    try:
        from benchmarks.harness import run_args
        return run_args(args, "python -m benchmarks " + " ".join(argv))
    except RinkitError as e:
        print(f"benchmarks: error: {e}", file=sys.stderr)
        return 2
