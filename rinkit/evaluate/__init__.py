"""Evaluation: Fréchet distances and metric plumbing shared by all modalities."""
from rinkit.evaluate.frechet import frechet_distance, frechet_distance_features, gaussian_stats

__all__ = ["frechet_distance", "frechet_distance_features", "gaussian_stats"]
