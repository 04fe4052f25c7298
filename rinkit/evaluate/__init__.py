"""Evaluation: Fréchet distances, the FID Inception network, IS, precision/recall, `rinkit eval`.

Heavy parts (torch-fidelity's Inception) are imported only when used."""
from rinkit.evaluate.frechet import frechet_distance, frechet_distance_features, gaussian_stats

__all__ = ["frechet_distance", "frechet_distance_features", "gaussian_stats"]
