"""The shape-agnostic RIN engine: attention kernels, RIN blocks, latents and self-conditioning."""
from rinkit.engine.attention import BACKENDS, attention, xformers_available
from rinkit.engine.rin import RIN, Denoiser

__all__ = ["BACKENDS", "RIN", "Denoiser", "attention", "xformers_available"]
