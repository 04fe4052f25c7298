"""Make a shipped (pretrained) model from a finished run: EMA weights only, fp16, with the config,
how it was trained and its measured metrics in the safetensors metadata.

    python -m benchmarks.ship_weights RUN_DIR NAME --plugin image --command "rinkit train" \
        [--samples 1000] [--test-samples 300] [--seeds 5]

Measures, through `rinkit.load` (so with the weights as shipped, fp16 stored, fp32 computed):
the registered metrics on `--samples` samples (the README's protocol: class-balanced labels, seed
1, the preset's sampler) for the fp32 EMA weights of the run and for the fp16 file (they must
agree: fp16 storage must not move the metric); and on `--test-samples` samples for `--seeds`
seeds (1..S), whose mean and standard deviation the test of the shipped model
(tests/test_pretrained.py) compares against. Writes plugins/<plugin>/weights/NAME.safetensors and
prints the JSON it stored."""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def measure(m, n: int, seed: int) -> dict[str, float]:
    from rinkit.evaluate.metrics import evaluate_metrics
    return evaluate_metrics(m.model, m.cfg, n, m.device, seed=seed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("name")
    ap.add_argument("--plugin", required=True, help="built-in plugin folder under plugins/ (image, audio, ...)")
    ap.add_argument("--command", required=True, help="the command that trained the run (recorded)")
    ap.add_argument("--commit", help="commit it was trained at (default: HEAD of this checkout)")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--test-samples", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--wall", help="wall time of the training command (recorded)")
    args = ap.parse_args(argv)

    import torch

    import rinkit
    from rinkit.api import export_weights
    torch.set_num_threads(1)
    commit = args.commit or subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                           text=True).stdout.strip()
    out = ROOT / "plugins" / args.plugin / "weights" / f"{args.name}.safetensors"
    t0 = time.time()
    full = measure(rinkit.load(args.run, "cpu"), args.samples, 1)
    note = {"command": args.command, "commit": commit, "trained_on": "2-core AMD EPYC (AVX2), fp32, torch "
            + torch.__version__, **({"wall": args.wall} if args.wall else {})}
    export_weights(args.run, out, half=True, note=note)
    m = rinkit.load(out, "cpu")
    half = measure(m, args.samples, 1)
    per_seed = [measure(m, args.test_samples, s) for s in range(1, args.seeds + 1)]
    metrics = {f"{k}": v for k, v in half.items()}
    metrics.update({f"{k}_fp32_weights": v for k, v in full.items()})
    for k in (per_seed[0] if per_seed else []):
        vals = np.array([r[k] for r in per_seed])
        metrics[f"{k}-{args.test_samples}"] = float(vals[0])  # seed 1
        metrics[f"{k}-{args.test_samples}_mean"] = float(vals.mean())
        metrics[f"{k}-{args.test_samples}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    metrics["protocol"] = (f"EMA; the preset's sampler; class-balanced labels; {args.samples} samples at seed 1 "
                           "(fp16 file and the run's fp32 weights)"
                           + (f"; {args.test_samples} samples at seeds 1..{args.seeds}" if args.seeds else ""))
    export_weights(args.run, out, half=True, note=note, metrics=metrics)
    print(json.dumps({"file": str(out), "bytes": out.stat().st_size, **note, "metrics": metrics,
                      "seconds": round(time.time() - t0, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
