"""`rinkit` command line: train / sample / eval / info / plugins. Thin: parse, build config, call."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rinkit.errors import RinkitError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="preset name from configs/ (default: the modality's default preset)")
    p.add_argument("--config", help="path to a YAML config file")
    p.add_argument("--modality", help="modality plugin name (default: image)")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=500 model.latent_dim=256")


def _resolve_config(args):
    from rinkit.config import load_config
    from rinkit.registry import get_modality
    preset = args.preset
    if args.modality and not preset and not args.config:
        preset = get_modality(args.modality).default_preset
        if not preset:
            raise RinkitError(f"modality {args.modality!r} has no default preset; give --preset or --config")
    overrides = [o for group in args.overrides for o in group]
    cfg = load_config(preset, args.config, overrides)
    if args.modality and cfg.modality != args.modality:
        raise RinkitError(f"preset/config is for modality {cfg.modality!r}, not {args.modality!r}")
    get_modality(cfg.modality)
    from rinkit.config import modality_options
    modality_options(cfg)  # validate the plugin's options before anything runs
    return cfg


def cmd_train(args) -> int:
    # --data / --compile are shorthands for --set data.path=... / train.compile=true
    args.overrides = [*args.overrides, *([[f"data.path={args.data}"]] if args.data else []),
                      *([["train.compile=true"]] if args.compile else [])]
    cfg = _resolve_config(args)
    if args.dry_run:
        print(cfg.to_yaml(), end="")
        return 0
    from rinkit.train.trainer import train
    try:
        res = train(cfg, run_dir=args.run_dir, resume=args.resume, fresh=args.fresh,
                    progress=not args.quiet)
    except KeyboardInterrupt:
        print("\ninterrupted: the last checkpoint is safe; run the same command again to resume",
              file=sys.stderr)
        return 130
    if res.checkpoint:
        print(f"checkpoint: {res.checkpoint}")
    for p in res.samples:
        print(f"samples:    {p}")
    for k, v in res.metrics.items():
        print(f"{k}: {v:.4f}")
    return 0


def _parse_classes(spec: str | None, num_classes: int) -> list[int] | None:
    if spec is None:
        return None
    try:
        out = [int(c) for c in spec.split(",") if c.strip()]
    except ValueError:
        raise RinkitError(f"bad --class {spec!r}: expected integers like 3 or 0,1,2") from None
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad:
        raise RinkitError(f"class {bad[0]} out of range for a model with {num_classes} classes")
    return out


def _read_labels(path: str) -> list[int]:
    import numpy as np
    p = Path(path)
    try:
        arr = np.load(p) if p.suffix == ".npy" else np.loadtxt(p, dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as e:
        raise RinkitError(f"cannot read labels from {p}: {str(e).splitlines()[0]}") from None
    return [int(v) for v in np.asarray(arr).reshape(-1)]


def cmd_sample(args) -> int:
    import os

    import torch

    from rinkit.config import modality_options
    from rinkit.registry import get_modality
    from rinkit.sampling import (conditioning_examples, dist_context, draw_labels, generate, guided,
                                 load_for_sampling, sample_to_files)
    to_files = bool(args.npz or args.png_dir)
    rank, world = dist_context() if to_files else (0, 1)
    model, cfg, device = load_for_sampling(args.ckpt, args.device)
    if world > 1 and device.type == "cuda":  # one GPU per torchrun process
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        model = model.to(device)
    over = {k: v for k, v in {"name": args.sampler, "steps": args.steps, "eta": args.eta,
                              "guidance": args.guidance, "ddpm_variance": args.ddpm_variance}.items()
            if v is not None}
    try:
        cfg = cfg.model_copy(update={"sampler": cfg.sampler.model_validate({**cfg.sampler.model_dump(), **over})})
    except Exception as e:
        raise RinkitError(f"bad sampler option: {str(e).splitlines()[-1].strip()}") from None
    k = cfg.model.num_classes
    if args.guidance and not guided(cfg):
        raise RinkitError("--guidance needs a class-conditional model or one trained with "
                          "diffusion.context_dropout")
    if (args.classes is not None or args.labels is not None) and not k:
        raise RinkitError("--class / --labels given but the model is unconditional")
    classes = _parse_classes(args.classes, k) if k else None
    given = None
    if args.labels is not None:
        given = _parse_classes(",".join(map(str, _read_labels(args.labels))), k)
        if args.num and args.num != len(given):
            raise RinkitError(f"--num-samples {args.num} but {len(given)} labels in {args.labels}")
    n = args.num or (len(given) if given else None)
    if to_files:  # the evaluation path: N images with per-image seeds, sharded under torchrun
        if not n:
            raise RinkitError("--npz / --png-dir need --num-samples N (or --labels FILE)")
        res = sample_to_files(model, cfg, n, args.seed, device, npz=args.npz, png_dir=args.png_dir,
                              labels=torch.tensor(given) if given else None, classes=classes,
                              batch_size=args.batch_size, progress=not args.quiet,
                              carry_latents=args.carry_latents)
        if rank == 0:
            s = cfg.sampler
            print(f"{n} samples ({s.name}, {s.steps} steps, guidance {s.guidance}, seed {args.seed}, "
                  f"{world} process{'es' if world > 1 else ''}) in {res['seconds']:.1f}s")
            for key in ("npz", "png_dir"):
                if res[key]:
                    print(f"wrote {res[key]}")
        if not args.out:
            return 0
    if n:  # N samples, labels given or drawn uniformly (from --class if given)
        labels = torch.tensor(given) if given else (draw_labels(n, k, args.seed, classes) if k else None)
    else:  # a grid: --per-class samples of each class (or per-class^2 unconditional samples)
        labels = torch.tensor(classes if classes else list(range(k))).repeat_interleave(args.per_class) if k else None
        n = len(labels) if k else args.per_class ** 2
    if rank != 0:
        return 0
    context = conditioning_examples(cfg, n, labels)
    x = generate(model, cfg, n, labels, args.seed, device, batch_size=args.batch_size, context=context,
                 carry_latents=args.carry_latents)
    ckpt_path = Path(args.ckpt)
    run_dir = ckpt_path.parent.parent if ckpt_path.is_file() else ckpt_path
    out = Path(args.out) if args.out else run_dir / f"samples-{args.seed}"
    for p in get_modality(cfg.modality).write_samples(x, labels, out, modality_options(cfg), context=context):
        print(f"samples: {p}")
    return 0


def cmd_eval(args) -> int:
    from rinkit.evaluate.inception import load_inception
    if not args.images:
        raise RinkitError("give the images: rinkit eval SAMPLES --ref REF (or rinkit eval REAL --make-ref OUT)")
    if not args.make_ref and not args.ref:
        raise RinkitError("give --ref (reference statistics .npz, or real images as .npz / folder) or --make-ref OUT")
    from rinkit.train.trainer import pick_device
    net = load_inception(args.inception, pick_device(args.device))  # one line and exit 2 when absent
    if args.make_ref:
        from rinkit.evaluate.evaluator import make_ref
        path, stats = make_ref(args.images, args.make_ref, net, args.batch_size, progress=not args.quiet)
        print(f"wrote {path}: statistics of {stats.n} images, {len(stats.images)} kept for precision/recall")
        return 0
    from rinkit.evaluate.evaluator import evaluate
    res = evaluate(args.images, args.ref, net, args.batch_size, pr=not args.no_pr, progress=not args.quiet)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"samples {res['samples']} vs reference {res['reference'] or '?'} (Inception: {res['inception']})")
    print(f"FID:       {res['fid']:.4f}")
    print(f"sFID:      {res['sfid']:.4f}" if res["sfid"] is not None else "sFID:      unavailable (no mu_s/sigma_s in the reference)")
    print(f"IS:        {res['is']:.4f} ± {res['is_std']:.4f}" if res["is"] is not None
          else f"IS:        unavailable ({res['is_unavailable']})")
    if res.get("precision") is not None:
        print(f"precision: {res['precision']:.4f}")
        print(f"recall:    {res['recall']:.4f}")
    elif not args.no_pr:
        print(f"precision/recall: unavailable ({res['pr_unavailable']})")
    return 0


def cmd_info(args) -> int:
    cfg = _resolve_config(args)
    from rinkit.info import model_info
    info = model_info(cfg)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{info['name']} ({info['modality']}), sample shape {tuple(info['sample_shape'])}")
    print(f"  parameters:       {info['params']:,} ({info['params'] / 1e6:.2f}M)")
    print(f"  GFLOPs / forward: {info['gflops']:.3f} (batch 1; matmuls, convs, attention)")
    print(f"  interface tokens: {info['interface_tokens']}, latents: {info['latents']}")
    for part, n in info["breakdown"].items():
        if part != "total":
            print(f"    {part:<20} {n:>14,}")
    return 0


def cmd_bench(args) -> int:
    # The harness ships with the source tree (benchmarks/ next to rinkit/), not in the wheel.
    if not hasattr(args, "batch"):
        raise RinkitError("`rinkit bench` needs the source checkout (benchmarks/ is not installed); "
                          "run it from a clone of the repository")
    from benchmarks.harness import run_args
    return run_args(args, "rinkit " + " ".join(sys.argv[1:]))


def cmd_plugins(args) -> int:
    from rinkit import registry
    from rinkit.config import list_presets
    print("plugins:")
    for name, origin in registry.plugin_names():
        print(f"  {name:<12} {origin}")
    print("modalities:")
    for name, m in sorted(registry.modalities().items()):
        print(f"  {name:<12} {m.description} (default preset: {m.default_preset})")
    print("datasets:")
    for (mod, name), d in sorted(registry.datasets().items()):
        print(f"  {mod}/{name:<12} {d.description}")
    print("metrics:")
    for (mod, name), m in sorted(registry.metrics().items()):
        print(f"  {mod}/{name:<12} {m.description}")
    print("presets:", ", ".join(list_presets()))
    return 0


def _add_bench_arguments(b) -> None:
    # benchmarks/ may not be importable yet when the parser is built: same lazy path as cmd_bench
    try:
        from benchmarks.cli import add_arguments
    except ImportError:
        root = Path(__file__).resolve().parents[1]
        if not (root / "benchmarks" / "cli.py").is_file():
            b.add_argument("rest", nargs=argparse.REMAINDER)
            return
        sys.path.insert(0, str(root))
        from benchmarks.cli import add_arguments
    add_arguments(b)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rinkit", description="Recurrent Interface Networks for any modality")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model (default: class-conditional RIN on the built-in digits)")
    _config_args(t)
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.add_argument("--run-dir", help="run folder (default: runs/<name>)")
    t.add_argument("--resume", metavar="CKPT", help="resume from this checkpoint file or run folder "
                   "(a run folder with checkpoints is resumed automatically)")
    t.add_argument("--fresh", action="store_true", help="start a new run in a new numbered folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--data", metavar="PATH", help="dataset location (same as --set data.path=PATH)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (same as --set train.compile=true)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="write samples from a checkpoint")
    s.add_argument("--ckpt", required=True, help="checkpoint file, or a run folder (newest checkpoint)")
    s.add_argument("--out", help="output path stem (default: <run>/samples-<seed>)")
    s.add_argument("--class", dest="classes", help="class index or comma list (default: every class)")
    s.add_argument("--per-class", type=int, default=10, help="samples per class in the grid (default 10)")
    s.add_argument("--guidance", type=float, help="classifier-free guidance w (0 = none)")
    s.add_argument("--steps", type=int, help="sampling steps")
    s.add_argument("--sampler", choices=["ddpm", "ddim"])
    s.add_argument("--eta", type=float, help="DDIM eta")
    s.add_argument("--seed", type=int, default=0)
    # --num-samples first: torchrun's parser rejects the bare --num as an abbreviation of --numa-binding
    s.add_argument("--num-samples", "--num", dest="num", type=int,
                   help="draw N samples (images 0..N-1 of --seed); labels uniform or --labels")
    s.add_argument("--npz", help="write the --num samples to this .npz (arr_0 uint8 NHWC, arr_1 labels: "
                   "the ADM evaluator's layout); under torchrun each process writes a shard, then merged")
    s.add_argument("--png-dir", help="write the --num samples as numbered PNGs into this folder")
    s.add_argument("--labels", help="file of class labels, one per sample (.npy or text)")
    s.add_argument("--ddpm-variance", choices=["large", "small"])
    s.add_argument("--carry-latents", action=argparse.BooleanOptionalAction, default=None,
                   help="carry latent self-conditioning between steps (default: if the model uses it)")
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--device", default="auto")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="FID / sFID / IS / precision-recall vs a reference (ADM evaluator protocol)")
    e.add_argument("images", nargs="?", help="samples (.npz with arr_0 uint8 NHWC, or a folder of images); "
                   "with --make-ref, the real images")
    e.add_argument("--ref", help="reference: statistics .npz (mu/sigma[/arr_0], e.g. an ADM reference batch "
                   "or --make-ref output) or real images (.npz / folder)")
    e.add_argument("--make-ref", metavar="OUT", help="compute the real images' statistics once and save them to OUT.npz")
    e.add_argument("--inception", metavar="PATH", help="Inception weights file (default: $RINKIT_INCEPTION)")
    e.add_argument("--no-pr", action="store_true", help="skip precision / recall")
    e.add_argument("--batch-size", type=int, default=100)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", help="also write the results to this JSON file")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_eval)

    i = sub.add_parser("info", help="parameter count and FLOPs per forward pass")
    _config_args(i)
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="benchmark RIN against ADM U-Nets / rin-pytorch (see benchmarks/RESULTS.md)")
    _add_bench_arguments(b)
    b.set_defaults(func=cmd_bench)

    p = sub.add_parser("plugins", help="list registered plugins, modalities, datasets, metrics, presets")
    p.set_defaults(func=cmd_plugins)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv or ["train"])
    if args.command is None:
        args = parser.parse_args(["train", *argv])
    try:
        return args.func(args)
    except RinkitError as e:
        print(f"rinkit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
