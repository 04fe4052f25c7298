"""The whole configuration tree as pydantic models, YAML presets and `--set` overrides.

A run is fully described by one `Config`. Presets live in configs/*.yaml (or ship with a plugin)
and only list what differs from the defaults below; `--set section.key=value` overrides are parsed as YAML scalars
and validated by the same models, so a wrong key or value is one line naming it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from rinkit.diffusion.samplers import SAMPLERS
from rinkit.diffusion.schedules import parse_schedule
from rinkit.errors import RinkitError


class Section(BaseModel):
    # allow_inf_nan=False: `train.lr=.inf` or `nan` is refused here, not found as a NaN checkpoint later
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(Section):
    """RIN architecture (docs/method.md §2). num_latents counts the time and class tokens."""
    interface_dim: int = Field(256, gt=0)
    latent_dim: int = Field(512, gt=0)
    num_latents: int = Field(128, gt=2)
    blocks: int = Field(3, gt=0)
    layers_per_block: PositiveInt | list[PositiveInt] = 2
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
    # "official" = the Keras code's initialisers; "glorot" = rinkit's earlier init (docs/method.md)
    init: Literal["official", "glorot"] = "official"
    # The write layers also attend to the interface's clean conditioning tokens (e.g. given video
    # frames), not only to the latents; off = the paper's RIN
    write_context: bool = False
    # The official optional depthwise conv on the interface after each write (odd kernel, SAME
    # padding; 0 = off, as every released config): neighbouring tokens mix directly. On a point
    # set (tokens: points) the kernel is a token and its k - 1 nearest points in the noisy input
    conv_kernel_size: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.conv_kernel_size % 2 == 0 and self.conv_kernel_size:
            raise ValueError(f"conv_kernel_size {self.conv_kernel_size} is even; use an odd size (or 0 = off)")
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
    # pred=x0 only: EDM's skip, estimate = c_skip x_t / sqrt(gamma) + (1 - c_skip) output, with this
    # sigma_data (data units; 0 = off, the network's output is the estimate); docs/method.md §4
    x0_skip: float = Field(0.0, ge=0)

    @field_validator("train_schedule", "sample_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        parse_schedule(v)
        return v

    @model_validator(mode="after")
    def _x0(self):
        if self.self_cond_x0 and self.self_cond_rate <= 0:
            raise ValueError("self_cond_x0 needs self_cond_rate > 0 (the estimate comes from the first pass)")
        if self.x0_skip > 0 and self.pred != "x0":
            raise ValueError(f"x0_skip needs pred=x0 (v-prediction already has this skip, with sigma_data 1); got pred={self.pred}")
        return self


class SamplerConfig(Section):
    name: str = "ddpm"  # a key of rinkit.diffusion.SAMPLERS
    steps: int = Field(100, ge=1)
    eta: float = Field(0.0, ge=0)
    guidance: float = 0.0
    # guide only where sigma = sqrt((1 - gamma) / gamma) lies in (lo, hi] (Kynkaanniemi et al.
    # 2024); None = at every step
    guidance_interval: tuple[float, Annotated[float, Field(allow_inf_nan=True)]] | None = None  # hi may be inf
    ddpm_variance: Literal["large", "small"] = "large"

    @field_validator("guidance_interval")
    @classmethod
    def _interval(cls, v):
        if v is not None and not (0 <= v[0] < v[1]):  # also refuses a NaN
            raise ValueError("guidance_interval must be [sigma_lo, sigma_hi] with 0 <= sigma_lo < sigma_hi, "
                             f"got {list(v)}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v not in SAMPLERS:
            raise ValueError(f"unknown sampler {v!r}; choose one of {', '.join(SAMPLERS)}")
        return v


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

def core_preset_dir() -> Path | None:
    """rinkit's own presets: the repository's top-level `configs/`, installed as package data of
    `rinkit.configs` (pyproject.toml), so a wheel has them in rinkit/configs/; an editable
    install or a source checkout reads the checkout's folder."""
    here = Path(__file__).resolve().parent
    if (here / "configs").is_dir():
        return here / "configs"
    if (here.parent / "configs").is_dir() and (here.parent / "pyproject.toml").is_file():
        return here.parent / "configs"
    return None


def core_presets() -> dict[str, Path]:
    d = core_preset_dir()
    return {p.stem: p for p in sorted(d.glob("*.yaml"))} if d else {}


def presets() -> dict[str, Path]:
    """Every preset by name: rinkit's and those plugins ship (rinkit_presets); the registry
    refuses a plugin preset whose name rinkit or another plugin already uses."""
    from rinkit.registry import plugin_presets
    return {**plugin_presets(), **core_presets()}


def list_presets() -> list[str]:
    return sorted(presets())


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RinkitError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise RinkitError(f"cannot read config {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise RinkitError(f"{path}: not a YAML config (not UTF-8 text)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RinkitError(f"{path}: a config file must hold a mapping, not {type(data).__name__}")
    return data


def preset_dict(name: str) -> dict[str, Any]:
    found = presets()
    if name in found:
        return _read_yaml(found[name])
    from rinkit.registry import failures
    note = f" ({'; '.join(failures())})" if failures() else ""
    raise RinkitError(f"unknown preset {name!r}; available: {', '.join(sorted(found)) or 'none'}{note}")


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


_UNION_TAG = re.compile(r"(int|float|str|bool|none|list|tuple|dict|constrained-\w+)(\[.*\])?|.*[\[\]-].*")


def describe_validation(err: ValidationError, prefix: str = "", what: str = "") -> str:
    """A pydantic error as one line: the field, the reason and the value given (never the URL)."""
    # of a union's per-member errors the deepest is the one that says what is wrong (image_size.1)
    e = max(err.errors(), key=lambda x: len(x["loc"]))
    parts = [str(p) for p in e["loc"] if not _UNION_TAG.fullmatch(str(p))]
    loc = ".".join([*(prefix.split(".") if prefix else []), *parts])
    if e["type"] == "extra_forbidden":
        return f"unknown config key {loc!r}{what}"
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"bad config value {loc}: {msg}{shown}" if loc else f"bad config: {msg}"


def validate(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise RinkitError(describe_validation(e)) from None


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
    """The config's `modality_options` validated by the plugin's own model (`rinkit.build.resolve`
    does it; this is its `.options`)."""
    from rinkit.build import resolve
    return resolve(cfg).options
