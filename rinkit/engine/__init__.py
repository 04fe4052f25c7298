"""The shape-agnostic RIN engine: attention kernels, RIN blocks, latents and self-conditioning."""
from rinkit.engine.attention import BACKENDS, attention, xformers_available
from rinkit.engine.rin import RIN, Denoiser, EstimateEmbedding

__all__ = ["BACKENDS", "RIN", "Denoiser", "EstimateEmbedding", "attention", "xformers_available"]
