"""Config -> objects. The only place that joins a modality plugin to the engine.

`resolve(cfg)` looks the modality up, validates its options with the plugin's own model and
returns a `Resolved`: the config with its modality, options and dataset spec, made once per
command and handed to everything downstream (trainer, sampling, contract, info, benchmarks).
Every function that takes a config also takes a `Resolved` (and resolves a plain config
itself), so a plugin's hooks and validators run once however many places read them.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Union

import torch
from pydantic import BaseModel, ValidationError

from rinkit.config import Config, describe_validation
from rinkit.diffusion import Diffusion
from rinkit.engine import RIN, Denoiser, EstimateEmbedding
from rinkit.engine.rin import token_conv_dims
from rinkit.engine.attention import xformers_unavailable
from rinkit.errors import RinkitError
from rinkit.registry import DatasetSpec, Modality, get_dataset, get_modality, owner


@dataclass(frozen=True, eq=False)
class Resolved:
    """A config joined to its modality plugin: `impl` the plugin's Modality, `options` its
    validated options, `dataset` the configured DatasetSpec. Attributes it does not have are
    the config's (`r.modality` is the name, `r.model.num_classes`, `r.to_yaml()`), so code that
    reads a config reads this too."""
    cfg: Config
    impl: Modality
    options: BaseModel

    @cached_property
    def dataset(self) -> DatasetSpec:
        """The configured dataset's spec (looked up on first use: sampling an unconditional
        model never needs it)."""
        return get_dataset(self.cfg.modality, self.cfg.data.dataset)

    @cached_property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.impl.sample_shape(self.options))

    @property
    def context_shape(self) -> tuple[int, ...] | None:
        cs = self.impl.context_shape
        return None if cs is None else tuple(cs(self.options))

    def replace(self, **sections: Any) -> Resolved:
        """The same run with other config sections (e.g. `sampler=...`); modality and options
        cannot change this way (they would need resolving again)."""
        if {"modality", "modality_options"} & set(sections):
            raise ValueError("resolve() a new config to change the modality or its options")
        return dataclasses.replace(self, cfg=self.cfg.model_copy(update=sections))

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "cfg":  # copy / pickle probe dunders before cfg exists
            raise AttributeError(name)
        return getattr(self.cfg, name)


ConfigLike = Union[Config, Resolved]


def resolve(cfg: ConfigLike, needs: dict | None = None) -> Resolved:
    """The config's modality (`needs`: the plugin a checkpoint names, for a helpful error when it
    is missing) and its options validated by the plugin's model; a `Resolved` is returned as is."""
    if isinstance(cfg, Resolved):
        return cfg
    modality = get_modality(cfg.modality, needs=needs)
    return Resolved(cfg, modality, _validate_options(cfg, modality))


def _validate_options(cfg: Config, modality: Modality) -> BaseModel:
    for key, v in _leaves(cfg.modality_options, "modality_options"):  # plugins' models may allow inf
        if isinstance(v, float) and not math.isfinite(v):
            raise RinkitError(f"bad config value {key}: must be a finite number (got {v!r})")
    try:
        return modality.options.model_validate(cfg.modality_options)
    except ValidationError as e:
        raise RinkitError(describe_validation(e, "modality_options",
                                              f" for modality {cfg.modality!r}")) from None
    except (ArithmeticError, TypeError) as e:  # a plugin validator tripping over a value (e.g. 0)
        raise RinkitError(f"bad modality_options for {cfg.modality!r}: {type(e).__name__}: {e}") from None


def _leaves(node: Any, prefix: str):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}.{i}")
    else:
        yield prefix, node


def build_model(cfg: ConfigLike) -> Denoiser:
    r = resolve(cfg)
    m = r.cfg.model
    make_tokenizer = lambda: r.impl.make_tokenizer(r.options, m.interface_dim)  # noqa: E731
    conv_dims = 0
    if m.conv_kernel_size:  # the grid's rank, from a throwaway tokenizer that draws no init numbers
        with torch.random.fork_rng(devices=[]):
            try:
                conv_dims = token_conv_dims(make_tokenizer())
            except RinkitError as e:
                raise RinkitError(plugin_line(r.cfg.modality, e)) from None
    core = RIN(interface_dim=m.interface_dim, latent_dim=m.latent_dim, num_latents=m.num_latents,
               blocks=m.blocks, layers_per_block=m.layers_per_block, latent_heads=m.latent_heads,
               rw_heads=m.rw_heads, latent_mlp_ratio=m.latent_mlp_ratio,
               interface_mlp_ratio=m.interface_mlp_ratio, dropout=m.dropout, drop_path=m.drop_path,
               num_classes=m.num_classes, self_cond=r.cfg.diffusion.self_cond_rate > 0,
               attention=m.attention, time_scale=m.time_scale, rw_dim=m.rw_dim, init=m.init,
               write_context=m.write_context, conv_kernel_size=m.conv_kernel_size, conv_dims=conv_dims)
    estimate = EstimateEmbedding(make_tokenizer(), m.interface_dim) if r.cfg.diffusion.self_cond_x0 else None
    tokenizer = make_tokenizer()  # before the detokenizer: the order the init's random numbers are drawn in
    try:  # RinkitError here is the plugin's, or the engine's check of the detokenizer's signature
        model = Denoiser(tokenizer, core, r.impl.make_detokenizer(r.options, m.interface_dim), estimate)
    except RinkitError as e:
        raise RinkitError(plugin_line(r.cfg.modality, e)) from None
    # a readout that builds its output from the data (a copy of the given frames, say) gives an
    # estimate of one kind; the diffusion must then train and sample that target
    target = getattr(model.detokenizer, "output_target", None)
    if target is not None and target != r.cfg.diffusion.pred:
        raise RinkitError(f"the {r.cfg.modality} readout set by these modality_options predicts {target} "
                          f"(diffusion.pred={r.cfg.diffusion.pred}); set diffusion.pred={target}")
    return model


def plugin_line(modality: str, message: Any) -> str:
    """An engine contract error (rinkit.engine.rin: "tokenizer X returned ...") as the one line
    rinkit.contract gives, naming the plugin that made the module."""
    return f"{owner('modality', modality)}, rinkit_modalities {modality!r} {message}"


def build_diffusion(cfg: ConfigLike) -> Diffusion:
    d = cfg.diffusion
    return Diffusion(train_schedule=d.train_schedule, sample_schedule=d.sample_schedule, pred=d.pred,
                     input_scale=d.input_scale, self_cond_rate=d.self_cond_rate, cond_dropout=d.cond_dropout,
                     num_classes=cfg.model.num_classes, self_cond_x0=d.self_cond_x0,
                     context_dropout=d.context_dropout, x0_skip=d.x0_skip)


def sample_shape(cfg: ConfigLike) -> tuple[int, ...]:
    return resolve(cfg).sample_shape


def check_backends(cfg: Config, device: torch.device) -> str:
    """The optional backends a training config asks for must work on `device`: a one-line error
    now rather than a raw ImportError at the first forward pass, or a silent swap. Returns the
    precision to train in ("auto" = bf16 where the GPU has it natively, else fp32)."""
    device = torch.device(device)
    if cfg.model.attention == "xformers" and (why := xformers_unavailable(device)):
        raise RinkitError(f"model.attention=xformers {why}; use model.attention=sdpa (the same maths)")
    precision = cfg.train.precision
    if precision == "bf16" and (why := bf16_unavailable(device)):
        raise RinkitError(f"train.precision=bf16: {why}; use train.precision=fp32")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and not bf16_unavailable(device) else "fp32"
    if cfg.train.compile and (why := compile_unavailable(device)):
        raise RinkitError(f"--compile (train.compile) cannot work here: {why}; train without it")
    return precision


def bf16_unavailable(device: torch.device) -> str | None:
    """Why bf16 autocast has no native support on `device` (None when it has). CPUs run bf16
    autocast (emulated where the CPU lacks bf16 instructions: slow, but what was asked for)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            major, minor = torch.cuda.get_device_capability(device)
            return (f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has no "
                    "native bf16; it needs compute capability 8.0 or newer")
    elif device.type not in ("cpu",):
        return f"bf16 autocast is not supported on {device.type} by rinkit"
    return None


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile (TorchDynamo + Inductor) cannot work on `device` (None when it can):
    Inductor generates Triton kernels on GPUs and C++ on CPUs."""
    import torch._dynamo
    if not torch._dynamo.is_dynamo_supported():
        return f"TorchDynamo does not support this Python ({sys.version.split()[0]}) or platform"
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        if not has_triton():
            return "Inductor needs Triton on CUDA and it is not installed (pip install triton)"
    elif device.type == "cpu":
        cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
        if shutil.which(cxx) is None:
            return f"Inductor needs a C++ compiler on CPU and {cxx!r} is not on PATH (apt install g++, or set CXX)"
    return None
