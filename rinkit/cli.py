"""`rinkit` command line: train / sample / info / plugins. Thin: parse, build config, call."""
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


def cmd_sample(args) -> int:
    import numpy as np
    import torch

    from rinkit.config import modality_options
    from rinkit.registry import get_modality
    from rinkit.train.trainer import conditioning_examples, generate, load_for_sampling
    model, cfg, device = load_for_sampling(args.ckpt, args.device)
    over = {k: v for k, v in {"name": args.sampler, "steps": args.steps, "eta": args.eta,
                              "guidance": args.guidance}.items() if v is not None}
    try:
        cfg = cfg.model_copy(update={"sampler": cfg.sampler.model_validate({**cfg.sampler.model_dump(), **over})})
    except Exception as e:
        raise RinkitError(f"bad sampler option: {str(e).splitlines()[-1].strip()}") from None
    k = cfg.model.num_classes
    if args.guidance and not k:
        raise RinkitError("--guidance needs a class-conditional model")
    if args.classes is not None and not k:
        raise RinkitError("--class given but the model is unconditional")
    classes = _parse_classes(args.classes, k) if k else None
    if args.num:  # N samples, labels drawn uniformly (from --class if given)
        n = args.num
        pool = torch.tensor(classes if classes else list(range(k))) if k else None
        labels = (pool[torch.randint(len(pool), (n,), generator=torch.Generator().manual_seed(args.seed))]
                  if k else None)
    else:  # a grid: --per-class samples of each class (or per-class^2 unconditional samples)
        labels = torch.tensor(classes if classes else list(range(k))).repeat_interleave(args.per_class) if k else None
        n = len(labels) if k else args.per_class ** 2
    context = conditioning_examples(cfg, n, labels)
    x = generate(model, cfg, n, labels.to(device) if labels is not None else None, args.seed, device,
                 batch_size=args.batch_size, context=context)
    if args.npz:
        npz = Path(args.npz)
        npz.parent.mkdir(parents=True, exist_ok=True)
        u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        arrays = {"arr_0": u8.permute(0, 2, 3, 1).numpy() if x.dim() == 4 else u8.numpy()}  # NHWC for images
        if labels is not None:
            arrays["arr_1"] = labels.numpy()
        np.savez(npz, **arrays)
        print(f"wrote {n} samples to {npz}")
        if not args.out:
            return 0
    ckpt_path = Path(args.ckpt)
    run_dir = ckpt_path.parent.parent if ckpt_path.is_file() else ckpt_path
    out = Path(args.out) if args.out else run_dir / f"samples-{args.seed}"
    for p in get_modality(cfg.modality).write_samples(x, labels, out, modality_options(cfg), context=context):
        print(f"samples: {p}")
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
    s.add_argument("--num", type=int, help="draw N samples with random labels (with --npz: save them)")
    s.add_argument("--npz", help="write the --num samples to this .npz (arr_0 uint8 NHWC, arr_1 labels)")
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_sample)

    i = sub.add_parser("info", help="parameter count and FLOPs per forward pass")
    _config_args(i)
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_info)

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
