"""Config -> objects: the denoiser (plugin tokenizer + RIN core + plugin detokenizer) and the
diffusion process. The only place that joins a modality plugin to the engine."""
from __future__ import annotations

import os
import shutil
import sys

import torch

from rinkit.config import Config, modality_options
from rinkit.diffusion import Diffusion
from rinkit.engine import RIN, Denoiser, EstimateEmbedding
from rinkit.engine.attention import xformers_unavailable
from rinkit.errors import RinkitError
from rinkit.registry import get_modality


def build_model(cfg: Config) -> Denoiser:
    modality, opts = get_modality(cfg.modality), modality_options(cfg)
    m = cfg.model
    core = RIN(interface_dim=m.interface_dim, latent_dim=m.latent_dim, num_latents=m.num_latents,
               blocks=m.blocks, layers_per_block=m.layers_per_block, latent_heads=m.latent_heads,
               rw_heads=m.rw_heads, latent_mlp_ratio=m.latent_mlp_ratio,
               interface_mlp_ratio=m.interface_mlp_ratio, dropout=m.dropout, drop_path=m.drop_path,
               num_classes=m.num_classes, self_cond=cfg.diffusion.self_cond_rate > 0,
               attention=m.attention, time_scale=m.time_scale, rw_dim=m.rw_dim, init=m.init,
               write_context=m.write_context)
    estimate = (EstimateEmbedding(modality.make_tokenizer(opts, m.interface_dim), m.interface_dim)
                if cfg.diffusion.self_cond_x0 else None)
    return Denoiser(modality.make_tokenizer(opts, m.interface_dim), core,
                    modality.make_detokenizer(opts, m.interface_dim), estimate)


def build_diffusion(cfg: Config) -> Diffusion:
    d = cfg.diffusion
    return Diffusion(d.train_schedule, d.sample_schedule, d.pred, d.input_scale, d.self_cond_rate,
                     d.cond_dropout, cfg.model.num_classes, d.self_cond_x0, d.context_dropout)


def sample_shape(cfg: Config) -> tuple[int, ...]:
    return tuple(get_modality(cfg.modality).sample_shape(modality_options(cfg)))


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
