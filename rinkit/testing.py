"""Helpers for a modality plugin's own tests (plain functions: pytest, unittest or a script).

    from rinkit.testing import assert_plugin_loads, check_modality

    def test_plugin_loads():              # installed (pip install -e .): the entry point works
        assert_plugin_loads("timeseries")

    def test_contract():                  # shapes, round trip, writer, metrics on a few examples
        check_modality("timeseries")      # the modality's default preset
        check_modality("timeseries", overrides=["modality_options.channels=3"])

A plugin that is not installed yet can be registered for a block: `with registered(module): ...`.
Failures raise rinkit's one-line errors (`ContractError` for the contract), so a failing test
says which hook broke and what was expected.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from rinkit import registry
from rinkit.config import apply_override, load_config, validate
from rinkit.contract import Check, ContractError, check
from rinkit.errors import RinkitError

__all__ = ["assert_plugin_loads", "check_modality", "registered", "Check", "ContractError"]


def assert_plugin_loads(name: str) -> registry.PluginStatus:
    """The plugin `name` (its entry-point name) was found and loaded without failing."""
    for status in registry.plugin_status():
        if status.owner.plugin == name:
            if status.status != "ok":
                raise AssertionError(f"{status.owner} {status.status}")
            return status
    raise AssertionError(f"no rinkit plugin named {name!r} is installed; found: "
                         f"{', '.join(s.owner.plugin for s in registry.plugin_status()) or 'none'}")


@contextlib.contextmanager
def registered(plugin: object, name: str | None = None):
    """Register a plugin object (e.g. a module with @hookimpl functions) for the block."""
    registry.register(plugin, name)
    try:
        yield plugin
    finally:
        registry.unregister(plugin)


def check_modality(modality: str, *, preset: str | None = None, config: dict[str, Any] | str | Path | None = None,
                   overrides: list[str] | tuple[str, ...] = (), device: str = "cpu", writer: bool = True,
                   metrics: bool = True) -> list[Check]:
    """Run the modality contract (rinkit.contract.check) for `modality` with a preset (default:
    the modality's default_preset), a config file, or a config mapping; returns what was checked."""
    if isinstance(config, dict):
        data = {"name": "check", "modality": modality, **config}
        for item in overrides:
            apply_override(data, item)
        cfg = validate(data)
    elif config is not None:
        cfg = load_config(None, str(config), list(overrides))
    else:
        preset = preset or registry.get_modality(modality).default_preset
        if not preset:
            raise RinkitError(f"modality {modality!r} has no default preset; pass preset= or config=")
        cfg = load_config(preset, None, list(overrides))
    if cfg.modality != modality:
        raise RinkitError(f"the config is for modality {cfg.modality!r}, not {modality!r}")
    return check(cfg, device=device, writer=writer, metrics=metrics)
