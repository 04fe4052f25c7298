"""The benchmark harness: RIN vs its baselines at matched resolution, same machine, same run.

For each model: training-step time (forward + backward + optimizer step; RIN's includes the
no-grad self-conditioning pass, as `Diffusion.loss` does it), one denoising-step time (RIN fed the
previous step's latents), full sampling time (`--sample-steps` DDPM steps), images/s, peak memory,
FLOPs (FlopCounterMode: matmuls, convolutions, attention; 2 FLOPs per multiply-add) and MFU,
achieved FLOP/s over the best n x n matrix-multiply FLOP/s measured on this device in this run.

Protocol: every model is built first; then for each measured op, warm-up iterations and then
measured ones, with the models alternating (A B, B A, ...) so slow drifts of a shared machine
hit all of them alike. Medians are reported, all samples are kept in the JSON.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from benchmarks.cli import OPS  # one list of ops for the parser and the harness
from benchmarks.measure import count_flops, machine, matmul_peak, state_bytes, timed
from benchmarks.models import Entry, rin_entry, unet_entry
from rinkit.errors import RinkitError

TINY_RIN = ["model.interface_dim=32", "model.latent_dim=64", "model.num_latents=16", "model.blocks=1",
            "model.layers_per_block=1", "model.latent_heads=4", "model.rw_heads=4"]


class LocalRunner:
    """A model of this process, its optimizer (LAMB, the paper's) and a fixed random batch."""

    def __init__(self, entry: Entry, batch: int, device, precision: str, sample_steps: int, seed: int = 0):
        from rinkit.train.optim import build_optimizer
        self.entry, self.name, self.kind = entry, entry.name, entry.kind
        self.batch, self.device, self.sample_steps = batch, torch.device(device), sample_steps
        self.bf16 = precision == "bf16"
        torch.manual_seed(seed)
        self.model = entry.build().to(self.device)
        self.opt = build_optimizer(self.model, "lamb", lr=1e-4, weight_decay=0.01)
        g = torch.Generator().manual_seed(seed)
        self.x = (torch.rand(batch, *entry.shape, generator=g) * 2 - 1).to(self.device)
        k = entry.num_classes
        self.labels = torch.randint(k, (batch,), generator=g).to(self.device) if k else None
        self.gamma = torch.full((batch,), 0.5, device=self.device)
        self.prev = None
        self.params = sum(p.numel() for p in self.model.parameters())

    def _amp(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def _loss(self, model):
        return self.entry.diffusion.loss(model, self.x, self.labels)

    def train(self):
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with self._amp():
            loss = self._loss(self.model)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def denoise(self):
        from rinkit.diffusion.samplers import denoise
        self.model.eval()
        with self._amp():
            _, _, latents = denoise(self.model, self.entry.diffusion, self.x, self.gamma, self.labels, self.prev)
        if self.kind == "rin":  # the next call reads these, as a sampler's next step does
            self.prev = latents

    @torch.no_grad()
    def sample(self):
        from rinkit.diffusion.samplers import sample
        self.model.eval()
        with self._amp():
            sample(self.model, self.entry.diffusion, tuple(self.x.shape), self.labels, self.sample_steps,
                   "ddpm", device=self.device, generator=torch.Generator(self.device).manual_seed(0))

    def run(self, op: str) -> tuple[float, int]:
        return timed(getattr(self, op), self.device)

    def flops(self) -> dict:
        """FLOPs of one forward at the benchmark batch and of one training step (forward(s) +
        backward), counted on the meta device: exact, and free of memory or time."""
        with torch.device("meta"):
            model = self.entry.build()
        x = torch.zeros(self.batch, *self.entry.shape, device="meta")
        labels = torch.zeros(self.batch, dtype=torch.long, device="meta") if self.entry.num_classes else None
        gamma = torch.full((self.batch,), 0.5, device="meta")
        prev = None
        if self.kind == "rin":
            prev = torch.zeros(self.batch, model.core.num_latents, model.core.latent_dim, device="meta")
        model.eval()
        with torch.no_grad():
            fwd = count_flops(lambda: model(x, gamma, labels, prev, None))
        model.train()
        train = count_flops(lambda: self.entry.diffusion.loss(model, x, labels).backward())
        return {"forward": fwd, "train": train}

    def state_bytes(self) -> int:
        return state_bytes(self.model, self.opt)

    def close(self):
        pass


def parse_models(specs: list[str], overrides: list[str], tiny: bool) -> list[tuple[str, object]]:
    """'rin:PRESET' | 'unet:SIZE' | 'rinpt:PRESET' -> entries (rin-pytorch ones as (spec, cfg))."""
    out, first_rin = [], None
    rin_over = (TINY_RIN if tiny else []) + list(overrides)
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if kind == "rin":
            e = rin_entry(arg or "cifar10", rin_over)
            first_rin = first_rin or e
            out.append(("local", e))
        elif kind in ("unet", "rinpt"):
            out.append((kind, arg))
        else:
            raise RinkitError(f"bad model {spec!r}: expected rin:PRESET, unet:SIZE or rinpt:PRESET")
    resolved = []
    for kind, e in out:
        if kind == "local":
            resolved.append((kind, e))
        elif kind == "unet":
            if first_rin is None:
                raise RinkitError("unet:SIZE needs a rin:PRESET in the same run (it takes its channels, "
                                  "classes and diffusion from it)")
            size = int(e) if e else first_rin.shape[-1]
            resolved.append(("local", unet_entry(size, first_rin.shape[0], first_rin.num_classes,
                                                 first_rin.diffusion, *((0.125, 1) if tiny else ()))))
        else:
            from rinkit.config import load_config
            resolved.append(("rinpt", load_config(e or "cifar10", None, rin_over)))
    return resolved


def run(models: list[str], batch: int = 8, reps: int = 5, warmup: int = 2, sample_steps: int = 10,
        sample_reps: int | None = None, device: str = "auto", precision: str = "auto",
        overrides: list[str] | None = None, tiny: bool = False, out: str | None = None,
        rinpt_python: str | None = None, ops: tuple[str, ...] = OPS, command: str = "",
        log=print) -> dict:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" else "fp32"
    bad = [o for o in ops if o not in OPS]
    if bad:
        raise RinkitError(f"unknown op {bad[0]!r}; choose from {', '.join(OPS)}")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    load_before = machine().get("loadavg")
    runners = []
    for kind, e in parse_models(models, overrides or [], tiny):
        if kind == "local":
            runners.append(LocalRunner(e, batch, dev, precision, sample_steps))
        else:
            from benchmarks.rinpt import RemoteRunner
            runners.append(RemoteRunner(e, batch, device, precision, sample_steps, python=rinpt_python))
        log(f"built {runners[-1].name}: {runners[-1].params / 1e6:.2f}M params")
    try:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        peaks = [matmul_peak(dev, dtype)]
        samples = {r.name: {op: [] for op in ops} for r in runners}
        mem = {r.name: {op: [] for op in ops} for r in runners}
        for op in ops:
            n = sample_reps if (op == "sample" and sample_reps) else reps
            for i in range(warmup + n):
                order = runners if i % 2 == 0 else runners[::-1]
                took = {}
                for r in order:
                    took[r.name], peak = r.run(op)
                    if i >= warmup:
                        samples[r.name][op].append(took[r.name])
                        mem[r.name][op].append(peak)
                log(f"{op} {i + 1}/{warmup + n}{' (warm-up)' if i < warmup else ''}: "
                    + ", ".join(f"{r.name} {took[r.name]:.3f}s" for r in runners))
        peaks.append(matmul_peak(dev, dtype))
        peak = max(p["flops_per_s"] for p in peaks)
        rows = []
        for r in runners:
            fl = r.flops()
            row = {"name": r.name, "kind": r.kind, "params": r.params, "batch": batch,
                   "flops_forward": fl["forward"], "flops_train_step": fl["train"],
                   "gflops_forward_per_image": fl["forward"] / batch / 1e9,
                   "state_bytes": r.state_bytes(), "samples_s": samples[r.name], "peak_extra_bytes": mem[r.name]}
            for op in ops:
                row[f"{op}_s"] = statistics.median(samples[r.name][op])
                row[f"{op}_peak_bytes"] = row["state_bytes"] + max(mem[r.name][op])
            if "train" in ops:
                row["train_images_per_s"] = batch / row["train_s"]
                row["mfu_train"] = fl["train"] / row["train_s"] / peak
            if "denoise" in ops:
                row["mfu_forward"] = fl["forward"] / row["denoise_s"] / peak
            if "sample" in ops:
                row["sample_images_per_s"] = batch / row["sample_s"]
            rows.append(row)
    finally:
        for r in runners:
            r.close()
    result = {"command": command, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
              "machine": {**machine(), "loadavg_before": load_before, "device": str(dev)},
              "settings": {"batch": batch, "reps": reps, "warmup": warmup, "sample_steps": sample_steps,
                           "precision": precision, "overrides": overrides or [], "tiny": tiny, "ops": list(ops)},
              "matmul_peak": peaks, "matmul_peak_flops_per_s": peak, "models": rows}
    if out:
        write_outputs(result, Path(out))
    return result


def table(result: dict) -> str:
    ops = result["settings"]["ops"]
    head = ["model", "params", "GFLOPs/img"]
    if "train" in ops:
        head += ["train step s", "train img/s", "train peak MB", "MFU train"]
    if "denoise" in ops:
        head += ["denoise step s", "MFU fwd"]
    if "sample" in ops:
        head += [f"sample s ({result['settings']['sample_steps']} st.)", "sample img/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["models"]:
        cells = [r["name"], f"{r['params'] / 1e6:.1f}M", f"{r['gflops_forward_per_image']:.2f}"]
        if "train" in ops:
            cells += [f"{r['train_s']:.3f}", f"{r['train_images_per_s']:.2f}",
                      f"{r['train_peak_bytes'] / 2**20:.0f}", f"{100 * r['mfu_train']:.1f} %"]
        if "denoise" in ops:
            cells += [f"{r['denoise_s']:.4f}", f"{100 * r['mfu_forward']:.1f} %"]
        if "sample" in ops:
            cells += [f"{r['sample_s']:.2f}", f"{r['sample_images_per_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    m = result["machine"]
    lines.append("")
    lines.append(f"matmul peak {result['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s "
                 f"({result['matmul_peak'][0]['dtype']}, n={result['matmul_peak'][0]['n']}); "
                 f"{m.get('gpu') or m['cpu']}, {m['torch_threads']} threads; load average "
                 f"{' '.join(f'{v:.2f}' for v in m.get('loadavg_before') or [])} before, "
                 f"{' '.join(f'{v:.2f}' for v in m.get('loadavg') or [])} after")
    return "\n".join(lines)


def chart(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ops = result["settings"]["ops"]
    panels = [(f"{op}_s", f"{op} time (s)") for op in ops]
    if "train" in ops:
        panels += [("train_peak_bytes", "train peak memory (MB)"), ("mfu_train", "MFU train (%)")]
    if "denoise" in ops:
        panels.append(("mfu_forward", "MFU forward (%)"))
    names = [r["name"] for r in result["models"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    axes = [axes] if len(panels) == 1 else axes
    scale = {"train_peak_bytes": 2 ** -20, "mfu_train": 100, "mfu_forward": 100}
    for ax, (key, title) in zip(axes, panels):
        vals = [r[key] * scale.get(key, 1) for r in result["models"]]
        ax.bar(range(len(names)), vals, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    m = result["machine"]
    fig.suptitle(f"batch {result['settings']['batch']}, {result['settings']['precision']}, "
                 f"{m.get('gpu') or m['cpu']} (load {(m.get('loadavg_before') or [0])[0]:.1f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    (out / "bench.md").write_text(f"`{result['command']}`\n\n{table(result)}\n")
    chart(result, out / "bench.png")


def default_models(device: str) -> list[str]:
    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return ["rin:imagenet256", "unet:256"] if gpu else ["rin:cifar10", "unet:32"]


def run_args(args, command: str) -> int:
    out = args.out or str(Path("benchmarks/results") / time.strftime("%Y%m%d-%H%M%S"))
    if args.batch < 1 or args.reps < 1 or args.warmup < 0 or args.sample_steps < 1:
        raise RinkitError("--batch, --reps and --sample-steps must be >= 1, --warmup >= 0")
    res = run(args.models or default_models(args.device), args.batch, args.reps, args.warmup,
              args.sample_steps, args.sample_reps, args.device, args.precision, args.overrides, args.tiny,
              out, args.rinpt_python, tuple(args.ops), command, log=lambda s: print(s, file=sys.stderr))
    print(table(res))
    print(f"\nwrote {out}/bench.json, bench.md, bench.png")
    return 0
