"""Modality plugins through pluggy: the hook specifications and the plugin manager.

A modality plugin is any importable object with `@hookimpl` functions, registered under the
`rinkit` entry-point group (built-ins in plugins/ use the same group a third-party package would).
Four hooks, each returning a list so that one plugin may serve several modalities and any plugin
may add datasets, metrics or presets to another plugin's modality:

    rinkit_modalities() -> [Modality]      tokenizer, detokenizer, sample shape, sample writer
    rinkit_datasets()   -> [DatasetSpec]   named datasets for a modality
    rinkit_metrics()    -> [MetricSpec]    named quality metrics for a modality
    rinkit_presets()    -> [path]          YAML presets shipped inside the plugin's package

One broken plugin must not break rinkit (pytest's safeguards are the model). Entry points load
one at a time; a plugin that fails to import, registers a misspelled or unmarked hook
(`check_pending`), raises in a hook, returns the wrong types, or claims a name another plugin
owns is recorded as `plugin 'NAME' (DIST VERSION) failed: ...` and contributes nothing; the
commands that do not need it keep working. `RINKIT_DISABLE_PLUGINS=name,...` skips plugins (by
entry-point or distribution name), `RINKIT_DISABLE_PLUGIN_AUTOLOAD=1` loads only rinkit's own
built-in plugins and `RINKIT_PLUGINS=module,...` registers modules explicitly (with autoload off too).

The engine, trainer and CLI reach modalities only through the functions at the bottom; the
hooks run once per process (the results are cached until a plugin is (un)registered).
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.resources
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel

from rinkit.errors import RinkitError
# the hook markers, specifications and plugin types live in rinkit.hookspec (plugins: rinkit.plugin)
from rinkit.hookspec import PROJECT, DatasetSpec, HookSpecs, MetricSpec, Modality, hookimpl, hookspec  # noqa: F401

ENV_DISABLE = "RINKIT_DISABLE_PLUGINS"
ENV_NO_AUTOLOAD = "RINKIT_DISABLE_PLUGIN_AUTOLOAD"
ENV_PLUGINS = "RINKIT_PLUGINS"


HOOKS = {"rinkit_modalities": Modality, "rinkit_datasets": DatasetSpec, "rinkit_metrics": MetricSpec,
         "rinkit_presets": None}


def package_presets(package: str, folder: str = "configs") -> list[Path]:
    """The `*.yaml` files in `folder/` inside an installed package (ship them as package data)."""
    root = importlib.resources.files(package) / folder
    if not root.is_dir():
        return []
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith((".yaml", ".yml")))


# -- who owns what --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Owner:
    """A plugin and the distribution that installed it (None: registered at run time, or rinkit's
    own presets when `plugin` is empty)."""
    plugin: str
    dist: str | None = None
    version: str | None = None

    @property
    def builtin(self) -> bool:
        return self.dist == PROJECT  # rinkit's own distribution: its plugins win every clash

    @property
    def where(self) -> str:
        return f"{self.dist} {self.version}" if self.dist else "registered at run time"

    def __str__(self) -> str:
        if not self.plugin:
            return f"{PROJECT} {self.version}"
        return f"plugin {self.plugin!r} ({self.where})"

    def as_dict(self) -> dict[str, str | None]:
        return {"plugin": self.plugin, "dist": self.dist, "version": self.version}


def core_owner() -> Owner:
    from rinkit import __version__
    return Owner("", PROJECT, __version__)


@dataclass
class PluginStatus:
    owner: Owner
    status: str  # "ok", "failed: ...", "disabled (...)"


@dataclass
class Catalog:
    """Everything the plugins contribute, resolved once: items by name, who owns each, and what failed."""
    modalities: dict[str, Modality] = field(default_factory=dict)
    datasets: dict[tuple[str, str], DatasetSpec] = field(default_factory=dict)
    metrics: dict[tuple[str, str], MetricSpec] = field(default_factory=dict)
    presets: dict[str, Path] = field(default_factory=dict)
    owners: dict[tuple[str, Any], Owner] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # plugin name -> message


class _State:
    def __init__(self):
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(HookSpecs)
        self.owners: dict[str, Owner] = {}      # plugin name -> owner
        self.load_failures: dict[str, str] = {}  # plugin name -> message (nothing registered)
        self.skipped: dict[str, str] = {}        # plugin name -> why it was not loaded
        self.catalog: Catalog | None = None
        self.warned: set[str] = set()


_state: _State | None = None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _names(env: str) -> set[str]:
    return {n.strip() for n in os.environ.get(env, "").split(",") if n.strip()}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _hook_problem(pm: pluggy.PluginManager, plugin: object) -> str | None:
    """A misspelled hook (pluggy's check_pending, per plugin) or a `rinkit_*` function that lacks
    `@hookimpl` (pluggy would skip it silently)."""
    for caller in pm.get_hookcallers(plugin) or []:
        mine = [i for i in caller.get_hookimpls() if i.plugin is plugin and not i.optionalhook]
        if mine and not caller.name.startswith("_") and not caller.has_spec():
            close = difflib.get_close_matches(caller.name, HOOKS, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (hooks: {', '.join(HOOKS)})"
            return f"unknown hook {caller.name}{hint}"
    for attr in dir(plugin):
        if attr.startswith(f"{PROJECT}_") and callable(getattr(plugin, attr, None)) \
                and pm.parse_hookimpl_opts(plugin, attr) is None:
            if attr in HOOKS:
                return f"{attr} is not marked @hookimpl (from rinkit.plugin import hookimpl)"
            close = difflib.get_close_matches(attr, HOOKS, n=1)
            return f"{attr} is not a rinkit hook{f'; did you mean {close[0]}?' if close else ''}"
    return None


def _register(st: _State, plugin: object, name: str, owner: Owner) -> str | None:
    """Register one plugin; on any problem leave it unregistered and return the message."""
    try:
        st.pm.register(plugin, name=name)
    except Exception as e:  # PluginValidationError (bad hook arguments), ValueError (registered twice)
        return _first_line(e)
    problem = _hook_problem(st.pm, plugin)
    if problem:
        st.pm.unregister(plugin)
        return problem
    st.owners[name] = owner
    return None


def _load(st: _State) -> None:
    disabled = {_norm(n) for n in _names(ENV_DISABLE)}
    autoload = not os.environ.get(ENV_NO_AUTOLOAD)
    seen: dict[str, str] = {}  # entry-point name -> distribution
    for dist in list(importlib.metadata.distributions()):
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != PROJECT:
                continue
            owner = Owner(ep.name, dist_name, dist.version)
            if ep.name in seen:  # the same distribution twice on sys.path: the first one wins
                if _norm(seen[ep.name]) != _norm(dist_name):
                    st.load_failures[f"{ep.name} ({dist_name})"] = (
                        f"the plugin name {ep.name!r} is also used by {seen[ep.name]}")
                    st.owners[f"{ep.name} ({dist_name})"] = owner
                continue
            seen[ep.name] = dist_name
            if _norm(ep.name) in disabled or _norm(dist_name) in disabled:
                st.skipped[ep.name], st.owners[ep.name] = f"disabled ({ENV_DISABLE})", owner
                continue
            if not autoload and not owner.builtin:
                st.skipped[ep.name], st.owners[ep.name] = f"not loaded ({ENV_NO_AUTOLOAD})", owner
                continue
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as e:  # noqa: BLE001 - a plugin must never take rinkit down
                st.load_failures[ep.name], st.owners[ep.name] = f"import {ep.value}: {_first_line(e)}", owner
                continue
            problem = _register(st, plugin, ep.name, owner)
            if problem:
                st.load_failures[ep.name], st.owners[ep.name] = problem, owner
    providers = importlib.metadata.packages_distributions()  # top-level module -> distributions
    for module in sorted(_names(ENV_PLUGINS)):
        dist_name = (providers.get(module.split(".")[0]) or [None])[0]
        owner = Owner(module, dist_name, importlib.metadata.version(dist_name) if dist_name else None)
        if st.pm.has_plugin(module):
            continue
        try:
            plugin = importlib.import_module(module)
        except (Exception, SystemExit) as e:  # noqa: BLE001
            st.load_failures[module], st.owners[module] = f"import {module} ({ENV_PLUGINS}): {_first_line(e)}", owner
            continue
        problem = _register(st, plugin, module, owner)
        if problem:
            st.load_failures[module], st.owners[module] = problem, owner
    st.pm.check_pending()  # every plugin with an unknown hook was refused above: this must pass


def _get_state() -> _State:
    global _state
    if _state is None:
        st = _State()
        _load(st)
        _state = st
    return _state


def reset() -> None:
    """Forget every loaded plugin; the next call loads the entry points again (tests use this)."""
    global _state
    _state = None


def plugin_manager() -> pluggy.PluginManager:
    return _get_state().pm


def register(plugin: object, name: str | None = None) -> None:
    """Register a plugin object at run time (entry points are the usual way); raises RinkitError
    naming the problem if it has a misspelled or unmarked hook."""
    st = _get_state()
    name = name or st.pm.get_canonical_name(plugin)
    problem = _register(st, plugin, name, Owner(name))
    if problem:
        raise RinkitError(f"{Owner(name)} failed: {problem}")
    st.catalog = None


def unregister(plugin: object) -> None:
    st = _get_state()
    name = st.pm.get_name(plugin)
    st.pm.unregister(plugin)
    st.owners.pop(name, None)
    st.catalog = None


# -- resolving the contributions ------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _check_item(hook: str, item: Any) -> str | None:
    """Type-check one item a hook returned; a message naming the field, or None."""
    def bad(what, expected, got):
        shown = (got.__name__ if isinstance(got, type) else repr(got) if isinstance(got, (str, int, type(None)))
                 else type(got).__name__)
        return (f"{hook} returned {type(item).__name__} {getattr(item, 'name', '?')!r} with {what}={shown}, "
                f"expected {expected}")
    if isinstance(item, Modality):
        if not isinstance(item.name, str) or not _NAME.fullmatch(item.name):
            return bad("name", "a name like 'timeseries'", item.name)
        if not (isinstance(item.options, type) and issubclass(item.options, BaseModel)):
            return bad("options", "a pydantic BaseModel subclass", item.options)
        for f in ("make_tokenizer", "make_detokenizer", "sample_shape", "write_samples"):
            if not callable(getattr(item, f)):
                return bad(f, "a callable", getattr(item, f))
        if item.default_preset is not None and not isinstance(item.default_preset, str):
            return bad("default_preset", "a preset name or None", item.default_preset)
        if (item.condition is None) != (item.context_shape is None):
            return bad("condition", "condition and context_shape given together", item.condition)
        if item.condition is not None and not (callable(item.condition) and callable(item.context_shape)):
            return bad("condition", "callables condition and context_shape", item.condition)
        for f in ("token_view", "finish"):
            if getattr(item, f) is not None and not callable(getattr(item, f)):
                return bad(f, "a callable or None", getattr(item, f))
        return None
    spec = item
    if not isinstance(spec.modality, str) or not isinstance(spec.name, str) or not _NAME.fullmatch(spec.name):
        return bad("name", "strings modality and name", spec.name)
    if not callable(spec.build):
        return bad("build", "a callable", spec.build)
    if isinstance(spec, DatasetSpec) and not (isinstance(spec.num_classes, int) and spec.num_classes >= 0):
        return bad("num_classes", "an int >= 0", spec.num_classes)
    if isinstance(spec, MetricSpec) and not (isinstance(spec.tags, (tuple, list))
                                             and all(isinstance(t, str) for t in spec.tags)):
        return bad("tags", "a tuple of dataset names", spec.tags)
    return None


def _hook_items(hook: str, result: Any) -> tuple[list, str | None]:
    kind = HOOKS[hook]
    if result is None:
        return [], None
    if not isinstance(result, (list, tuple)):
        expected = f"a list of {kind.__name__}" if kind else "a list of YAML file paths"
        return [], f"{hook} returned {type(result).__name__}, expected {expected}"
    out = []
    for item in result:
        if kind is None:
            if not isinstance(item, (str, os.PathLike)) and not hasattr(item, "read_text"):
                return [], f"{hook} returned a list holding {type(item).__name__}, expected YAML file paths"
            path = Path(str(item))
            if path.suffix not in (".yaml", ".yml") or not path.is_file():
                return [], f"{hook} returned {str(item)!r}, which is not an existing .yaml file"
            out.append(path)
            continue
        if not isinstance(item, kind):
            return [], f"{hook} returned a list holding {type(item).__name__}, expected {kind.__name__}"
        problem = _check_item(hook, item)
        if problem:
            return [], problem
        out.append(item)
    return out, None


def _key(hook: str, item) -> tuple[str, Any]:
    if hook == "rinkit_modalities":
        return "modality", item.name
    if hook == "rinkit_presets":
        return "preset", item.stem
    return ("dataset" if hook == "rinkit_datasets" else "metric"), (item.modality, item.name)


def _label(kind: str, key) -> str:
    return f"{kind} {'/'.join(key) if isinstance(key, tuple) else key!r}"


def _build_catalog(st: _State) -> Catalog:
    cat = Catalog(failures=dict(st.load_failures))
    contributed: dict[str, list[tuple[str, Any]]] = {}  # plugin -> [(hook, item)]
    for hook in HOOKS:
        for impl in getattr(st.pm.hook, hook).get_hookimpls():
            name = impl.plugin_name
            if name in cat.failures:
                continue
            try:
                result = impl.function()
            except Exception as e:  # noqa: BLE001 - attributed, never fatal for other plugins
                cat.failures[name] = f"{hook}() raised {_first_line(e)}"
                continue
            items, problem = _hook_items(hook, result)
            if problem:
                cat.failures[name] = problem
                continue
            contributed.setdefault(name, []).extend((hook, it) for it in items)
    # Every name has one owner. rinkit's own presets and built-in plugins win a clash with a
    # third-party plugin (which then fails); two third-party plugins that clash both fail.
    from rinkit.config import core_presets
    claims: dict[tuple[str, Any], list[str]] = {}
    core = core_owner()
    for stem in core_presets():
        claims[("preset", stem)] = [""]
    for name, items in contributed.items():
        for hook, item in items:
            k = _key(hook, item)
            if name in claims.setdefault(k, []):
                cat.failures.setdefault(name, f"{hook} returned {_label(*k)} twice")
            claims[k].append(name)
    owner_of = lambda n: core if n == "" else st.owners.get(n, Owner(n))  # noqa: E731
    for k, names in claims.items():
        names = list(dict.fromkeys(names))
        if len(names) < 2:
            continue
        winners = [""] if "" in names else [n for n in names if owner_of(n).builtin]
        for n in names:
            if n in winners and len(winners) == 1:
                continue
            others = [o for o in (winners or names) if o != n]
            cat.failures.setdefault(n, f"{_label(*k)} is already registered by {owner_of(others[0])}")
    for name, items in contributed.items():
        if name in cat.failures:
            continue
        for hook, item in items:
            kind, key = _key(hook, item)
            cat.owners[(kind, key)] = owner_of(name)
            if kind == "modality":
                cat.modalities[key] = item
            elif kind == "dataset":
                cat.datasets[key] = item
            elif kind == "metric":
                cat.metrics[key] = item
            else:
                cat.presets[key] = item
    return cat


def catalog(warn: bool = True) -> Catalog:
    """The resolved contributions. Each failed plugin is reported once per process, as a warning
    on stderr (`rinkit plugins`, which lists the failures itself, passes warn=False first)."""
    st = _get_state()
    if st.catalog is None:
        st.catalog = _build_catalog(st)
    for name, msg in st.catalog.failures.items():
        if name not in st.warned:
            st.warned.add(name)
            if warn:
                print(f"rinkit: warning: {st.owners.get(name, Owner(name))} failed: {msg} (skipped; "
                      f"{ENV_DISABLE}={name.split(' ')[0]} silences this)", file=sys.stderr)
    return st.catalog


def failures() -> list[str]:
    """One line per failed plugin: `plugin 'NAME' (DIST VERSION) failed: ...`."""
    st, cat = _get_state(), catalog()
    return [f"{st.owners.get(n, Owner(n))} failed: {m}" for n, m in cat.failures.items()]


def plugin_status() -> list[PluginStatus]:
    """Every plugin found, loaded or not, for `rinkit plugins`."""
    st, cat = _get_state(), catalog()
    out = []
    for name, plugin in st.pm.list_name_plugin():
        if plugin is not HookSpecs and name not in cat.failures:
            out.append(PluginStatus(st.owners.get(name, Owner(name)), "ok"))
    out += [PluginStatus(st.owners.get(n, Owner(n)), f"failed: {m}") for n, m in cat.failures.items()]
    out += [PluginStatus(st.owners[n], why) for n, why in st.skipped.items()]
    return sorted(out, key=lambda s: s.owner.plugin)


def owner(kind: str, key) -> Owner:
    """Who registered ("modality", name), ("dataset", (modality, name)), ("metric", ...) or
    ("preset", name)."""
    cat = catalog()
    if kind == "preset" and key not in cat.presets:
        return core_owner()
    return cat.owners[(kind, key)]


def _failure_note() -> str:
    f = failures()
    return f" ({'; '.join(f)})" if f else ""


def modalities() -> dict[str, Modality]:
    return dict(catalog().modalities)


def get_modality(name: str, needs: dict | None = None) -> Modality:
    """The modality `name`. `needs` ({"dist", "version"}, from a checkpoint) names the package to
    install when the modality is missing."""
    found = catalog().modalities
    if name in found:
        return found[name]
    if needs and needs.get("dist"):
        dist, ver = needs["dist"], needs.get("version") or ""
        try:
            installed = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            raise RinkitError(f"modality {name!r} needs {dist} {ver} (not installed)") from None
        raise RinkitError(f"modality {name!r} needs {dist} {ver}; {dist} {installed} is installed but "
                          f"provides no modality {name!r}{_failure_note()}")
    raise RinkitError(f"unknown modality {name!r}; registered: {', '.join(sorted(found)) or 'none'}"
                      f"{_failure_note()}")


def datasets(modality: str | None = None) -> dict[tuple[str, str], DatasetSpec]:
    return {k: d for k, d in catalog().datasets.items() if modality is None or d.modality == modality}


def get_dataset(modality: str, name: str) -> DatasetSpec:
    found = datasets(modality)
    if (modality, name) not in found:
        names = ", ".join(sorted(n for _, n in found)) or "none"
        raise RinkitError(f"unknown dataset {name!r} for modality {modality!r}; registered: {names}"
                          f"{_failure_note()}")
    return found[(modality, name)]


def metrics(modality: str | None = None) -> dict[tuple[str, str], MetricSpec]:
    return {k: m for k, m in catalog().metrics.items() if modality is None or m.modality == modality}


def plugin_presets() -> dict[str, Path]:
    """Presets shipped by plugins (rinkit's own live in rinkit.config)."""
    return dict(catalog().presets)


def plugin_names() -> list[tuple[str, str]]:
    """(plugin name, where it came from) of the plugins that loaded."""
    return [(s.owner.plugin, s.owner.where) for s in plugin_status() if s.status == "ok"]
