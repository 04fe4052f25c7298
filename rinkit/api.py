"""The Python API: load a model (a run, a checkpoint or a shipped name), sample, save, denoise,
look at its routing; train a config. The `rinkit` command is a thin layer over these functions,
so a notebook and the command line draw bit-identical samples for the same seed.

    import rinkit
    m = rinkit.load("digits")                        # a shipped model (offline), a run dir or a .safetensors
    x = m.sample(labels=[3, 3, 7], seed=0)           # tensor in [-1, 1], (3, 1, 8, 8)
    m.save(x, "out/digits")                          # through the modality's writer: out/digits.png
    run = rinkit.train("digits", overrides={"train.steps": 500})   # -> Path of the run folder

Per-image seeds are the CLI's: image i of seed s starts from the noise of `image_seed(s, i)` whatever
the batch, so `m.sample(n=100, seed=5)[i]` is image i of `rinkit sample --num-samples 100 --seed 5`."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from rinkit.errors import RinkitError

WEIGHTS_PACKAGE = "rinkit_plugins"  # shipped weights: rinkit_plugins/<plugin>/weights/<name>.safetensors


def shipped_models() -> dict[str, Path]:
    """Name -> file of every model shipped with the installed built-in plugins."""
    import importlib.util
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    found: dict[str, Path] = {}
    for root in (spec.submodule_search_locations or []) if spec else []:
        for p in sorted(Path(root).glob("*/weights/*.safetensors")):
            found.setdefault(p.stem, p)
    return found


def resolve_source(path_or_name: str | Path) -> Path:
    """A run folder or checkpoint file as given, else the shipped model of that name. A name that
    is neither is one line listing the shipped models (the CLI's message for a missing file)."""
    p = Path(path_or_name)
    if p.exists():
        return p
    shipped = shipped_models()
    if str(path_or_name) in shipped:
        return shipped[str(path_or_name)]
    names = ", ".join(sorted(shipped)) or "none installed"
    raise RinkitError(f"checkpoint not found: {p} (not a file or run folder, nor a shipped model; "
                      f"shipped: {names})")


class Model:
    """A loaded denoiser with its resolved config and modality (what `rinkit.load` returns).

    Attributes: `model` (the Denoiser, eval mode), `cfg` (the Config), `device`, `modality`
    (the plugin's Modality), `options` (its validated modality_options), `source` (the file)."""

    def __init__(self, model, cfg, device, source: Path):
        from rinkit.build import build_diffusion, resolve
        cfg = resolve(cfg)  # the modality and its options, joined once (load_for_sampling's already are)
        self.model, self.cfg, self.device, self.source = model, cfg, torch.device(device), Path(source)
        self.modality, self.options = cfg.impl, cfg.options
        self.diffusion = build_diffusion(cfg)
        self._last: tuple | None = None  # (samples, labels, context) of the last .sample()

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        return (f"rinkit.Model({self.cfg.name!r}, modality={self.cfg.modality!r}, "
                f"{params / 1e6:.2f}M parameters, classes={self.num_classes}, device={self.device}, "
                f"source={str(self.source)!r})")

    @property
    def info(self) -> dict:
        """What the checkpoint says about itself beyond the config: step, and for shipped models
        how they were trained (command, commit, metrics)."""
        from safetensors import safe_open

        from rinkit.train.checkpoint import list_checkpoints
        path = list_checkpoints(self.source)[-1] if self.source.is_dir() else self.source
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return {"step": int(meta.get("step", 0)), **json.loads(meta.get("extra", "{}"))}

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    # -- conditioning -------------------------------------------------------------------------
    def check_classes(self, classes: Sequence[int] | None, what: str = "class") -> list[int] | None:
        """Class indices as ints; one line for a value outside 0..num_classes-1 (or any class
        given to an unconditional model)."""
        if classes is None:
            return None
        if not self.num_classes:
            raise RinkitError(f"{what} labels given but the model is unconditional")
        try:
            out = [int(c) for c in classes]
        except (TypeError, ValueError):
            raise RinkitError(f"bad {what}: expected integers, got {classes!r}") from None
        bad = [c for c in out if not 0 <= c < self.num_classes]
        if bad:
            raise RinkitError(f"class {bad[0]} out of range for a model with {self.num_classes} classes")
        return out

    def sampler_config(self, **over):
        """The checkpoint's sampler settings with the non-None overrides (name, steps, eta,
        guidance, guidance_interval, ddpm_variance) applied and validated (one line for a bad value)."""
        from pydantic import ValidationError

        from rinkit.config import describe_validation
        from rinkit.sampling import guided
        over = {k: v for k, v in over.items() if v is not None}
        try:
            s = self.cfg.sampler.model_validate({**self.cfg.sampler.model_dump(), **over})
        except ValidationError as e:
            raise RinkitError(describe_validation(e, "sampler")) from None
        if over.get("guidance") and not guided(self.cfg):
            raise RinkitError("--guidance needs a class-conditional model or one trained with "
                              "diffusion.context_dropout")
        return s

    def resolve_labels(self, n: int | None = None, labels=None, classes: Sequence[int] | None = None,
                       per_class: int = 10, seed: int = 0) -> tuple[int, torch.Tensor | None]:
        """(n, labels) exactly as `rinkit sample` picks them: given labels; else n labels drawn
        uniformly (from `classes`) as a function of the seed; else a grid of `per_class` samples of
        each class (or per_class**2 unconditional samples)."""
        from rinkit.sampling import draw_labels
        k = self.num_classes
        classes = self.check_classes(classes)
        if labels is not None:
            labels = torch.as_tensor(self.check_classes(torch.as_tensor(labels).reshape(-1).tolist()),
                                     dtype=torch.long)
            if n is not None and n != len(labels):
                raise RinkitError(f"{n} samples asked for but {len(labels)} labels given")
            return len(labels), labels
        if n is not None:
            if n < 1:
                raise RinkitError(f"n must be >= 1, got {n}")
            return n, (draw_labels(n, k, seed, classes) if k else None)
        if k:
            lab = torch.tensor(classes if classes else list(range(k))).repeat_interleave(per_class)
            return len(lab), lab
        return per_class ** 2, None

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, n: int | None = None, labels=None, *, classes: Sequence[int] | None = None,
               per_class: int = 10, steps: int | None = None, sampler: str | None = None,
               guidance: float | None = None, eta: float | None = None, ddpm_variance: str | None = None,
               guidance_interval: tuple[float, float] | None = None, seed: int = 0,
               context: torch.Tensor | None = None, batch_size: int = 256,
               carry_latents: bool | None = None) -> torch.Tensor:
        """Samples (n, *sample_shape) in the modality's data range [-1, 1], on the CPU.

        `labels`: one class per sample; else `n` labels drawn from the seed (uniform over
        `classes`, default all); with neither, `per_class` samples of every class. Sampler
        settings default to the checkpoint's. `context`: the clean conditioning of modalities
        that condition on data (video's given frames); default: held-out examples, as the CLI."""
        from rinkit.sampling import conditioning_examples, generate
        s = self.sampler_config(name=sampler, steps=steps, eta=eta, guidance=guidance, ddpm_variance=ddpm_variance,
                                guidance_interval=guidance_interval)
        n, labels = self.resolve_labels(n, labels, classes, per_class, seed)
        if context is None:
            context = conditioning_examples(self.cfg, n, labels)
        cfg = self.cfg.replace(sampler=s)
        x = generate(self.model, cfg, n, labels, seed, self.device, batch_size=batch_size, context=context,
                     carry_latents=carry_latents)
        self._last = (x, labels, context)
        return x

    def sample_to_files(self, n: int, seed: int = 0, *, npz=None, png_dir=None, labels=None,
                        classes: Sequence[int] | None = None, batch_size: int = 256, progress: bool = False,
                        carry_latents: bool | None = None, **sampler) -> dict:
        """Images 0..n-1 of `seed` to an ADM-style .npz and/or a PNG folder (sharded under torchrun);
        the same samples as `sample(n, seed=seed)`. Returns {"n", "npz", "png_dir", "seconds"}."""
        from rinkit.sampling import sample_to_files
        s = self.sampler_config(**{("name" if k == "sampler" else k): v for k, v in sampler.items()})
        labels = None if labels is None else torch.as_tensor(self.check_classes(list(labels)), dtype=torch.long)
        cfg = self.cfg.replace(sampler=s)
        return sample_to_files(self.model, cfg, n, seed, self.device, npz=npz, png_dir=png_dir, labels=labels,
                               classes=self.check_classes(classes), batch_size=batch_size, progress=progress,
                               carry_latents=carry_latents)

    def save(self, samples: torch.Tensor, path: str | Path, labels=None, context=None) -> list[Path]:
        """Write samples through the modality's writer (`path` is a stem: image -> path.png, audio
        -> WAVs + spectrogram PNG, ...). Labels and context default to those of the last
        `.sample()` call when `samples` is what it returned. Returns the files written."""
        if self._last is not None and samples is self._last[0]:
            labels = self._last[1] if labels is None else labels
            context = self._last[2] if context is None else context
        if labels is not None:
            labels = torch.as_tensor(labels).long().cpu()
        return self.modality.write_samples(samples, labels, Path(path), self.options, context=context)

    @torch.no_grad()
    def denoise(self, x_t: torch.Tensor, gamma, labels=None, *, prev_latents=None, context=None,
                guidance: float = 0.0, clip: bool = True, prev_x0=None):
        """One network evaluation for your own sampler: x_t = sqrt(gamma) b x_0 + sqrt(1 - gamma) eps
        (b = diffusion.input_scale), gamma the signal variance (float or (B,)). Returns
        (x0, eps, latents): x0 in [-b, b] (clipped), eps consistent with it, and the latents to
        pass back as `prev_latents` at the next step (latent self-conditioning)."""
        from rinkit.diffusion.samplers import denoise
        x_t = x_t.to(self.device)
        gamma = torch.as_tensor(gamma, dtype=torch.float32, device=self.device).expand(x_t.shape[0])
        if labels is not None:
            labels = torch.as_tensor(self.check_classes(torch.as_tensor(labels).reshape(-1).tolist()),
                                     dtype=torch.long, device=self.device)
        return denoise(self.model, self.diffusion, x_t, gamma, labels, prev_latents, guidance,
                       context, clip, prev_x0)

    def routing(self, label: int | None = None, *, steps: int | None = None, seed: int = 0,
                out: str | Path | None = None, latents: int = 4, **sampler):
        """Record where the latents read during one sampling trajectory (see rinkit.routing):
        per evaluation and block, read attention (latents <- interface) and write attention
        (interface <- latents). With `out`, also write the heatmaps, GIF and per-latent views.
        Returns a rinkit.routing.Routing."""
        from rinkit.routing import record_trajectory, write_views
        rec = record_trajectory(self, label=label, steps=steps, seed=seed, **sampler)
        if out is not None:
            rec.files = write_views(self, rec, out, latents=latents)
        return rec


def export_weights(src: str | Path, out: str | Path, *, half: bool = True, metrics: dict | None = None,
                   note: dict | None = None) -> Path:
    """A checkpoint or run folder -> an EMA-only rinkit checkpoint (what ships as a pretrained
    model): the EMA weights (fp16 when `half`: a model loads them into fp32), the config and the
    plugin in the metadata, no optimizer or RNG state; `metrics` and `note` (how it was trained)
    go into the metadata's `extra`. Loads with `rinkit.load(out)` / `rinkit sample --ckpt out`."""
    from rinkit.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(src, weights_only=True)
    weights = ckpt.ema or ckpt.model
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    extra = {"source_step": ckpt.step, "dtype": "float16" if half else "float32", **(note or {}),
             "metrics": metrics or {}}
    return save_checkpoint(out, Checkpoint(ckpt.config, ckpt.step, {}, weights, None, {}, extra, ckpt.plugin))


def load(path_or_name: str | Path, device: str = "auto", ema: bool = True) -> Model:
    """A run folder (its newest checkpoint), a checkpoint file, or a shipped model's name
    (`rinkit.shipped_models()`) -> Model. `ema=False` loads the raw (non-EMA) weights. A missing,
    foreign, truncated or corrupt file raises RinkitError with the CLI's one-line message."""
    from rinkit.sampling import load_for_sampling
    src = resolve_source(path_or_name)
    model, cfg, dev = load_for_sampling(src, device, ema=ema)
    return Model(model, cfg, dev, src)


# -- training -------------------------------------------------------------------------------------

def _override_strings(overrides) -> list[str]:
    """{"train.steps": 500} or ["train.steps=500"] -> ["train.steps=500"] (values as JSON, which
    is YAML, so strings, lists and null survive)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return [str(o) for o in overrides]


def resolve_config(preset: str | None = None, path: str | Path | None = None, modality: str | None = None,
                   overrides=None):
    """The config `rinkit train/info/check` run: a preset or YAML file (default: the modality's
    default preset, or digits) with `key=value` overrides, validated with the plugin's options."""
    from rinkit.build import resolve
    from rinkit.config import load_config
    from rinkit.registry import get_modality
    if modality and not preset and not path:
        preset = get_modality(modality).default_preset
        if not preset:
            raise RinkitError(f"modality {modality!r} has no default preset; give --preset or --config")
    cfg = load_config(preset, str(path) if path else None, _override_strings(overrides))
    if modality and cfg.modality != modality:
        raise RinkitError(f"preset/config is for modality {cfg.modality!r}, not {modality!r}")
    return resolve(cfg)  # the plugin's options are validated before anything runs, once per command


def fit(config_or_preset=None, overrides=None, run_dir: str | Path | None = None, *, modality: str | None = None,
        resume: str | Path | None = None, fresh: bool = False, progress: bool = True,
        max_steps: int | None = None):
    """`train`, returning the trainer's full TrainResult (checkpoint, sample files, metrics)."""
    from rinkit.build import Resolved, resolve
    from rinkit.config import Config, validate
    from rinkit.train.trainer import train as run
    if isinstance(config_or_preset, (Config, Resolved)) and not overrides:
        cfg = resolve(config_or_preset)  # a Resolved (the CLI's path) is returned as is
    elif isinstance(config_or_preset, (Config, Resolved, Mapping)):
        from rinkit.config import apply_override
        data = config_or_preset.to_dict() if isinstance(config_or_preset, (Config, Resolved)) else json.loads(
            json.dumps(dict(config_or_preset)))
        for item in _override_strings(overrides):
            apply_override(data, item)
        cfg = resolve(validate(data))  # the plugin's options, as resolve_config checks them
    else:
        c = str(config_or_preset) if config_or_preset is not None else None
        is_file = c is not None and (c.endswith((".yaml", ".yml")) or Path(c).is_file())
        cfg = resolve_config(None if is_file else c, c if is_file else None, modality, overrides)
    return run(cfg, run_dir=run_dir, resume=resume, fresh=fresh, progress=progress, max_steps=max_steps)


def train(config_or_preset=None, overrides=None, run_dir: str | Path | None = None, **kw) -> Path:
    """Train (or resume) exactly as `rinkit train` does; returns the run folder.

    `config_or_preset`: a preset name ("digits"), a YAML path, a Config or a dict (None: the
    default preset, or `modality=`'s). `overrides`: {"train.steps": 500} or ["train.steps=500"].
    Keywords: modality, resume, fresh, progress, max_steps."""
    return Path(fit(config_or_preset, overrides, run_dir, **kw).run_dir)
