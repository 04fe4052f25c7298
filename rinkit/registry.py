"""Modality plugins through pluggy: the hook specifications and the plugin manager.

A modality plugin is any importable object with `@hookimpl` functions, registered under the
`rinkit` entry-point group (built-ins in plugins/ use the same group a third-party package would).
Three hooks, each returning a list so that one plugin may serve several modalities and any plugin
may add datasets or metrics to another plugin's modality:

    rinkit_modalities() -> [Modality]      tokenizer, detokenizer, sample shape, sample writer
    rinkit_datasets()   -> [DatasetSpec]   named datasets for a modality
    rinkit_metrics()    -> [MetricSpec]    named quality metrics for a modality

The engine, trainer and CLI reach modalities only through the functions at the bottom.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel

from rinkit.errors import RinkitError

PROJECT = "rinkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass
class Modality:
    """What a modality supplies. `options` is a pydantic model of its settings (patch size, image
    size...); configs carry them as `modality_options` and the plugin validates them.

    make_tokenizer(options, interface_dim) -> nn.Module: forward(x, context) -> (B, N', D) tokens,
        or (tokens, state) when the detokenizer needs per-example state from the input (e.g.
        the grouping of a point cloud); state is then passed as the detokenizer's third argument
    make_detokenizer(options, interface_dim) -> nn.Module: forward(tokens, context[, state]) -> data shape
    sample_shape(options) -> per-example shape of the data (what the sampler draws noise for)
    write_samples(samples, labels, path, options, context=None) -> list of written files;
        samples in [-1, 1]
    condition(x, options) -> (target, context, loss_mask), for modalities that condition on part
        of a clean example (e.g. given video frames): `target` is what the model generates (its
        shape is sample_shape), `context` is passed clean to the tokenizer/detokenizer, and
        `loss_mask` (or None) restricts the loss. None means the whole example is generated.
    context_shape(options) -> per-example shape of `context` (required with `condition`).
    """
    name: str
    description: str
    options: type[BaseModel]
    make_tokenizer: Callable[[Any, int], Any]
    make_detokenizer: Callable[[Any, int], Any]
    sample_shape: Callable[[Any], tuple[int, ...]]
    write_samples: Callable[..., list[Path]]
    default_preset: str | None = None
    condition: Callable[[Any, Any], tuple[Any, Any, Any]] | None = None
    context_shape: Callable[[Any], tuple[int, ...]] | None = None


@dataclass
class DatasetSpec:
    """build(options, data_config, split) -> a map-style dataset of (x, label) with x a float
    tensor in [-1, 1] shaped like sample_shape(options) and label an int (0 if unlabelled).
    split is "train" or "test". `reads_path=False` marks a dataset that is generated or built in:
    a data.path given with it is an error instead of being silently ignored."""
    modality: str
    name: str
    description: str
    build: Callable[..., Any]
    num_classes: int = 0
    reads_path: bool = True


@dataclass
class MetricSpec:
    """build(options, data_config) -> callable(samples, labels) -> dict of floats. For modalities
    with `condition`, a callable that takes a `context` keyword also receives the given data."""
    modality: str
    name: str
    description: str
    build: Callable[..., Any]
    tags: tuple[str, ...] = field(default_factory=tuple)


class HookSpecs:
    @hookspec
    def rinkit_modalities(self) -> list[Modality]:
        """Return the modalities this plugin provides."""

    @hookspec
    def rinkit_datasets(self) -> list[DatasetSpec]:
        """Return datasets this plugin provides (for any modality)."""

    @hookspec
    def rinkit_metrics(self) -> list[MetricSpec]:
        """Return quality metrics this plugin provides (for any modality)."""


@functools.lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(HookSpecs)
    try:
        pm.load_setuptools_entrypoints(PROJECT)
    except Exception as e:  # a broken third-party plugin must say which one it is
        raise RinkitError(f"failed to load a rinkit plugin: {type(e).__name__}: {e}") from e
    return pm


def register(plugin: object, name: str | None = None) -> None:
    """Register a plugin object at run time (entry points are the usual way)."""
    plugin_manager().register(plugin, name)


def unregister(plugin: object) -> None:
    plugin_manager().unregister(plugin)


def _collect(hook_name: str) -> list:
    hook = getattr(plugin_manager().hook, hook_name)
    return [item for result in hook() for item in (result or [])]


def modalities() -> dict[str, Modality]:
    out: dict[str, Modality] = {}
    for m in _collect("rinkit_modalities"):
        if m.name in out:
            raise RinkitError(f"two plugins register the modality {m.name!r}")
        out[m.name] = m
    return out


def get_modality(name: str) -> Modality:
    found = modalities()
    if name not in found:
        raise RinkitError(f"unknown modality {name!r}; registered: {', '.join(sorted(found)) or 'none'}")
    return found[name]


def datasets(modality: str | None = None) -> dict[tuple[str, str], DatasetSpec]:
    return {(d.modality, d.name): d for d in _collect("rinkit_datasets")
            if modality is None or d.modality == modality}


def get_dataset(modality: str, name: str) -> DatasetSpec:
    found = datasets(modality)
    if (modality, name) not in found:
        names = ", ".join(sorted(n for _, n in found)) or "none"
        raise RinkitError(f"unknown dataset {name!r} for modality {modality!r}; registered: {names}")
    return found[(modality, name)]


def metrics(modality: str | None = None) -> dict[tuple[str, str], MetricSpec]:
    return {(m.modality, m.name): m for m in _collect("rinkit_metrics")
            if modality is None or m.modality == modality}


def plugin_names() -> list[tuple[str, str]]:
    """(plugin name, where it came from) for `rinkit plugins`."""
    pm = plugin_manager()
    dists = {id(p): f"{d.project_name} {d.version}" for p, d in pm.list_plugin_distinfo()}
    return [(name, dists.get(id(p), "registered at run time"))
            for name, p in pm.list_name_plugin() if p is not HookSpecs]
