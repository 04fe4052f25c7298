"""Conventional denoisers for the modalities the image U-Nets of benchmarks/models.py do not cover."""
