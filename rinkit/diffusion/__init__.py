"""Diffusion: noise schedules, targets and the self-conditioned loss, samplers."""
from rinkit.diffusion.process import TARGETS, Diffusion
from rinkit.diffusion.samplers import SAMPLERS, denoise, sample, sampling_grid
from rinkit.diffusion.schedules import Schedule, parse_schedule

__all__ = ["TARGETS", "SAMPLERS", "Diffusion", "Schedule", "denoise", "parse_schedule", "sample", "sampling_grid"]
