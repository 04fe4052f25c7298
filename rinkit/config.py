"""The whole configuration tree as pydantic models, YAML presets and `--set` overrides.

A run is fully described by one `Config`. Presets live in configs/*.yaml and only list what
differs from the defaults below; `--set section.key=value` overrides are parsed as YAML scalars
and validated by the same models, so a wrong key or value is one line naming it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rinkit.diffusion.schedules import parse_schedule
from rinkit.errors import RinkitError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    """RIN architecture (rin-spec.md section 1). num_latents counts the time and class tokens."""
    interface_dim: int = Field(256, gt=0)
    latent_dim: int = Field(512, gt=0)
    num_latents: int = Field(128, gt=2)
    blocks: int = Field(3, gt=0)
    layers_per_block: int | list[int] = 2
    latent_heads: int = Field(16, gt=0)
    rw_heads: int = Field(8, gt=0)
    rw_dim: int | None = Field(None, gt=0)  # read/write attention width; None = min(D, d) (official)
    latent_mlp_ratio: float = Field(4.0, gt=0)
    interface_mlp_ratio: float = Field(2.0, ge=0)  # 0 = no MLP after the write
    dropout: float = Field(0.0, ge=0, le=1)    # compute layers only
    drop_path: float = Field(0.0, ge=0, le=1)
    num_classes: int = Field(0, ge=0)  # 0 = unconditional
    attention: Literal["sdpa", "xformers", "math"] = "sdpa"
    time_scale: float = Field(1000.0, gt=0)
    # The write layers also attend to the interface's clean conditioning tokens (e.g. given video
    # frames), not only to the latents; off = the paper's RIN
    write_context: bool = False

    @model_validator(mode="after")
    def _check(self):
        if self.latent_dim % self.latent_heads:
            raise ValueError(f"latent_dim {self.latent_dim} is not divisible by latent_heads {self.latent_heads}")
        if (self.rw_dim or min(self.latent_dim, self.interface_dim)) % self.rw_heads:
            raise ValueError(f"read/write attention width is not divisible by rw_heads {self.rw_heads}")
        if isinstance(self.layers_per_block, list) and len(self.layers_per_block) != self.blocks:
            raise ValueError(f"layers_per_block lists {len(self.layers_per_block)} depths for {self.blocks} blocks")
        return self


class DiffusionConfig(Section):
    train_schedule: str = "sigmoid(-3,3,0.9)"
    sample_schedule: str = "cosine"
    pred: Literal["eps", "x0", "v"] = "eps"
    input_scale: float = Field(1.0, gt=0)
    self_cond_rate: float = Field(0.9, ge=0, le=1)  # 0 = no latent self-conditioning at all
    cond_dropout: float = Field(0.0, ge=0, le=1)    # label dropout for classifier-free guidance
    context_dropout: float = Field(0.0, ge=0, le=1)  # clean-context (e.g. given frames) dropout for guidance
    # Also self-condition on the previous x_0 estimate (analog bits), beside the latents; off = the paper
    self_cond_x0: bool = False

    @field_validator("train_schedule", "sample_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        parse_schedule(v)
        return v

    @model_validator(mode="after")
    def _x0(self):
        if self.self_cond_x0 and self.self_cond_rate <= 0:
            raise ValueError("self_cond_x0 needs self_cond_rate > 0 (the estimate comes from the first pass)")
        return self


class SamplerConfig(Section):
    name: Literal["ddpm", "ddim"] = "ddpm"
    steps: int = Field(100, ge=1)
    eta: float = Field(0.0, ge=0)
    guidance: float = 0.0
    ddpm_variance: Literal["large", "small"] = "large"


class DataConfig(Section):
    dataset: str = "digits"
    path: str | None = None  # for datasets read from disk
    hflip: bool = False
    num_workers: int = Field(0, ge=0)
    # Image files / arrays -> the model's size: "adm" = ADM centre crop + resize (guided-diffusion),
    # "pad" = pad with the background (-1) to the size, then centre-crop (28x28 -> 32x32 MNIST-style).
    fit: Literal["adm", "pad"] = "adm"
    skip_corrupt: bool = False  # unreadable files: False = error naming the file, True = skip and count


class TrainConfig(Section):
    steps: int = Field(150_000, ge=1)
    batch_size: int = Field(256, ge=1)
    optimizer: Literal["lamb", "adamw"] = "lamb"
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(10_000, ge=0)
    decay: str = "cosine@0.8"  # "constant" or "cosine@r": cosine over (steps-warmup)/r, truncated
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(1.0, gt=0)  # None = no clipping
    ema_decay: float = Field(0.9999, ge=0, lt=1)
    seed: int = 0
    device: str = "auto"
    log_every: int = Field(100, ge=1)
    sample_every: int = Field(0, ge=0)  # 0 = only at the end
    ckpt_every: int = Field(5000, ge=1)
    keep_last: int = Field(3, ge=1)
    max_bad_steps: int = Field(20, ge=1)  # non-finite losses in a row before giving up
    eval_samples: int = Field(0, ge=0)  # samples for the end-of-training metrics (0 = none)
    # Scale-out (docs/training-at-scale.md). batch_size is the GLOBAL batch: split over
    # torchrun processes x grad_accum micro-batches, so lr and results do not depend on the split.
    grad_accum: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on GPUs, fp32 elsewhere
    tf32: bool = True  # TF32 matmuls / convolutions on GPUs
    compile: bool = False  # torch.compile the denoiser (`rinkit train --compile`)
    activation_checkpointing: bool = False  # recompute each RIN block in the backward pass
    fsdp: bool = False  # FSDP2 fully_shard instead of DDP (needs torchrun, >= 2 processes)
    tensorboard: bool = True  # scalars + sample grids in <run>/tensorboard
    # in-training proxy metric (logged as e.g. "digits_fid-500", never a 50k FID): every K steps
    metric_every: int = Field(0, ge=0)  # 0 = off
    metric_samples: int = Field(2000, ge=2)
    metric_steps: int | None = Field(None, ge=1)  # sampling steps for the proxy (None = sampler.steps)

    @field_validator("decay")
    @classmethod
    def _decay(cls, v: str) -> str:
        if v != "constant" and not re.fullmatch(r"cosine@(0?\.\d+|1(\.0*)?)", v):
            raise ValueError(f"decay must be 'constant' or 'cosine@r' with 0 < r <= 1, got {v!r}")
        if v.startswith("cosine@") and float(v[7:]) <= 0:
            raise ValueError(f"decay must be 'constant' or 'cosine@r' with 0 < r <= 1, got {v!r}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError(f"device must be auto, cpu, cuda[:N] or mps, got {v!r}")
        return v


class Config(Section):
    name: str = "run"
    modality: str = "image"
    modality_options: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# -- presets and overrides --------------------------------------------------------------------------

def preset_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [d for d in (here / "configs", here.parent / "configs") if d.is_dir()]


def list_presets() -> list[str]:
    return sorted({p.stem for d in preset_dirs() for p in d.glob("*.yaml")})


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RinkitError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise RinkitError(f"cannot read config {path}: {e.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RinkitError(f"{path}: a config file must hold a mapping, not {type(data).__name__}")
    return data


def preset_dict(name: str) -> dict[str, Any]:
    for d in preset_dirs():
        if (d / f"{name}.yaml").is_file():
            return _read_yaml(d / f"{name}.yaml")
    raise RinkitError(f"unknown preset {name!r}; available: {', '.join(list_presets()) or 'none'}")


def apply_override(data: dict[str, Any], item: str) -> None:
    """'a.b.c=value' -> data['a']['b']['c'] = yaml(value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RinkitError(f"bad override {item!r}: expected key=value, e.g. train.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise RinkitError(f"bad override {item!r}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value


def _describe(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        return f"unknown config key {loc!r}"
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"bad config value {loc}: {msg}{shown}" if loc else f"bad config: {msg}"


def validate(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise RinkitError(_describe(e)) from None


def load_config(preset: str | None = None, path: str | None = None,
                overrides: list[str] | None = None) -> Config:
    if preset and path:
        raise RinkitError("give --preset or --config, not both")
    data = _read_yaml(Path(path)) if path else preset_dict(preset or "digits")
    if not path and "name" not in data:
        data["name"] = preset or "digits"
    for item in overrides or []:
        apply_override(data, item)
    return validate(data)


def modality_options(cfg: Config):
    """Validate `modality_options` with the plugin's own model."""
    from rinkit.registry import get_modality
    modality = get_modality(cfg.modality)
    try:
        return modality.options.model_validate(cfg.modality_options)
    except ValidationError as e:
        e0 = e.errors()[0]
        loc = ".".join(["modality_options", *map(str, e0["loc"])])
        if e0["type"] == "extra_forbidden":
            raise RinkitError(f"unknown config key {loc!r} for modality {cfg.modality!r}") from None
        raise RinkitError(f"bad config value {loc}: {e0['msg'].removeprefix('Value error, ')}") from None
