"""Everything a modality plugin needs from rinkit, in one module: plugins import this (and their
own files) only, so the rest of rinkit can change without breaking them.

    from rinkit.plugin import DatasetSpec, MetricSpec, Modality, hookimpl, package_presets

Hooks and types (documented in rinkit.hookspec): `hookimpl`, `Modality`, `DatasetSpec`,
`MetricSpec`, `package_presets`. Errors: `RinkitError` (one line, shown as `rinkit: error: ...`).
Layers: `layer_norm` (the engine's LayerNorm, eps as the official code), `PatchEmbed` /
`PatchUnembed` (the n-D patch stem and readout of the grid modalities), `Positions` (fixed
and/or learned position codes), `sincos_grid` and `OFFICIAL_MAX_COORD` (fixed sin-cos positions). Data: `labelled_files` (folder datasets),
`IMAGE_EXTENSIONS`, `to_uint8`, `get_dataset` (a registered dataset, e.g. held-out data for a
metric); the scikit-learn digits and their classifier (no download; rinkit.evaluate.digits):
`digits_arrays`, `digits_classifier`, `digits_features`, `to_digits`. Metrics: `frechet_distance`,
`frechet_distance_features`, `gaussian_stats`; and, imported on first use, the Inception FID tools
`load_inception`, `load_ref`, `make_ref`, `evaluate_images` and `load_config` / `resolve` for
scripts; the heatmap helpers of `rinkit routing` for a `token_view`: `overlay`, `upsample`,
`heat_rgb`, `gray`, `patch_heat`. Testing helpers for a plugin's own tests: rinkit.testing.

Shared pieces live here rather than in one plugin that the others import: a plugin imports only
this module and its own files, so it keeps working when another plugin is switched off.
"""
from __future__ import annotations

import importlib

from rinkit.datafiles import IMAGE_EXTENSIONS, labelled_files, to_uint8
from rinkit.engine.patch import PatchEmbed, PatchUnembed
from rinkit.engine.positions import OFFICIAL_MAX_COORD, Positions, sincos_grid
from rinkit.engine.rin import layer_norm
from rinkit.errors import RinkitError
from rinkit.evaluate.digits import digits_arrays, digits_classifier, digits_features, to_digits
from rinkit.evaluate.frechet import frechet_distance, frechet_distance_features, gaussian_stats
from rinkit.hookspec import DatasetSpec, MetricSpec, Modality, hookimpl
from rinkit.registry import get_dataset, package_presets

# heavy or circular at import time: loaded when a plugin first uses them
_LAZY = {"load_inception": "rinkit.evaluate.inception", "load_ref": "rinkit.evaluate.fid",
         "make_ref": "rinkit.evaluate.evaluator", "evaluate_images": ("rinkit.evaluate.evaluator", "evaluate"),
         "load_config": "rinkit.config", "resolve": "rinkit.build",
         "overlay": "rinkit.routing", "upsample": "rinkit.routing", "heat_rgb": "rinkit.routing",
         "gray": "rinkit.routing", "patch_heat": "rinkit.routing"}

__all__ = ["DatasetSpec", "IMAGE_EXTENSIONS", "MetricSpec", "Modality", "OFFICIAL_MAX_COORD", "PatchEmbed",
           "PatchUnembed", "Positions", "RinkitError", "digits_arrays", "digits_classifier", "digits_features",
           "frechet_distance", "frechet_distance_features", "gaussian_stats", "get_dataset", "hookimpl",
           "labelled_files", "layer_norm", "package_presets", "sincos_grid", "to_digits", "to_uint8", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'rinkit.plugin' has no attribute {name!r}")
    module, attr = _LAZY[name] if isinstance(_LAZY[name], tuple) else (_LAZY[name], name)
    return getattr(importlib.import_module(module), attr)
