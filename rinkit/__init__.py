"""rinkit: Recurrent Interface Networks for any modality."""
__version__ = "0.1.0"
