"""Checkpoints: one self-describing safetensors file per save, nothing pickled.

A file holds the model and EMA weights, the optimizer state (tensors in the file, the rest as
JSON), the RNG states, the step, the resolved config (JSON in the safetensors metadata) and the
plugin that owns its modality (distribution and version), so a run resumes exactly, `rinkit
sample` needs nothing else, and a missing plugin is named ("needs rinkit-foo 1.2 (not installed)").
Writes go to a temporary file in the same folder, are fsynced and then renamed: an interrupted
save never damages the last good one. A failed write (disk full, read-only) removes its temporary
file and says which path failed; the temporary files of writers that were killed are removed by
the next run (`remove_stale_temps`).
Loading refuses pickles (torch.save / .pt / .pkl) before touching them: nothing is executed.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from rinkit.errors import RinkitError, os_error_message

FORMAT = "rinkit-checkpoint"
FORMAT_VERSION = "1"
NAME = re.compile(r"^step-(\d+)\.safetensors$")
# `.step-0001000.safetensors.tmp-<host>-<pid>` (older files: `.tmp-<pid>`): a save in progress
TEMP = re.compile(r"^\.step-\d+\.safetensors\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)$")


@dataclass
class Checkpoint:
    config: dict[str, Any]
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    plugin: dict[str, Any] = field(default_factory=dict)  # {"plugin", "dist", "version"} of the modality's owner


def modality_owner(config: dict[str, Any]) -> dict[str, Any]:
    """The registered owner of the config's modality, as recorded in a checkpoint ({} if unknown)."""
    from rinkit.registry import catalog
    o = catalog().owners.get(("modality", config.get("modality")))
    return o.as_dict() if o is not None else {}


def _to_json(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """Nested state (optimizer state_dict) -> JSON; tensors move into `tensors`, leaving
    {"__tensor__": key} behind. Tuples are kept apart from lists (betas must stay tuples)."""
    if torch.is_tensor(obj):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        return {"__dict__": [[_to_json(k, tensors, f"{path}/k{i}"), _to_json(v, tensors, f"{path}/{k}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        items = [_to_json(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    return obj


def _from_json(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_from_json(v, tensors) for v in obj["__tuple__"])
        return {_from_json(k, tensors): _from_json(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_from_json(v, tensors) for v in obj]
    return obj


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for prefix, sd in (("model", ckpt.model), ("ema", ckpt.ema)):
        for k, v in sd.items():
            v = v.detach().cpu().contiguous()
            if v.data_ptr() in seen:  # safetensors refuses shared storage (e.g. EMA == model)
                v = v.clone()
            seen.add(v.data_ptr())
            tensors[f"{prefix}/{k}"] = v
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": str(ckpt.step),
            "config": json.dumps(ckpt.config), "extra": json.dumps(ckpt.extra),
            "plugin": json.dumps(ckpt.plugin or modality_owner(ckpt.config))}
    if ckpt.optimizer is not None:
        meta["optimizer"] = json.dumps(_to_json(ckpt.optimizer, tensors, "optim"))
    rng_json = {}
    for k, v in ckpt.rng.items():
        if torch.is_tensor(v):
            tensors[f"rng/{k}"] = v.detach().cpu().contiguous()
        else:
            rng_json[k] = v
    meta["rng"] = json.dumps(rng_json)
    data = st_save(tensors, metadata=meta)
    # host + pid in the name: a later run removes it only if its writer is gone (remove_stale_temps)
    tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # disk full, read-only, a second Ctrl-C: no partial file stays
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            last = [p for p in list_checkpoints(path.parent) if p != path]
            kept = f"; the last good checkpoint {last[-1]} is kept" if last else ""
            raise RinkitError(f"cannot write checkpoint {path}: {os_error_message(e)}{kept}") from e
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (power loss)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def _check_file(path: Path) -> None:
    if not path.exists():
        raise RinkitError(f"checkpoint not found: {path}")
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise RinkitError(f"no rinkit checkpoints (step-*.safetensors) in {path}")
        return
    with open(path, "rb") as f:
        head = f.read(16)
    n = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    looks_safetensors = 0 < n <= 100_000_000 and head[8:9] == b"{"
    # The 8-byte header length may itself start with 0x80, so the pickle check comes second.
    if not looks_safetensors and (head[:1] == b"\x80" or head[:2] == b"PK"):
        raise RinkitError(f"{path} is a pickle / torch.save file; rinkit loads only its own "
                          "safetensors checkpoints and never unpickles")
    if len(head) < 9:
        raise RinkitError(f"{path} is not a rinkit checkpoint (file too short)")
    if not looks_safetensors:
        raise RinkitError(f"{path} is not a rinkit checkpoint (no safetensors header)")
    if 8 + n > path.stat().st_size:
        raise RinkitError(f"{path} is truncated (header says {n} bytes, file has {path.stat().st_size})")


def load_checkpoint(path: str | Path, *, weights_only: bool = False, map_location: str = "cpu") -> Checkpoint:
    path = Path(path)
    _check_file(path)
    if path.is_dir():
        path = list_checkpoints(path)[-1]
    try:
        with safe_open(str(path), framework="pt", device=map_location) as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise RinkitError(f"{path} is a safetensors file but not a rinkit checkpoint "
                                  "(no 'format: rinkit-checkpoint' metadata)")
            if meta.get("format_version") != FORMAT_VERSION:
                raise RinkitError(f"{path} has checkpoint format version {meta.get('format_version')!r}; "
                                  f"this rinkit reads version {FORMAT_VERSION}")
            keys = list(f.keys())
            wanted = [k for k in keys if not weights_only or k.startswith(("model/", "ema/"))]
            tensors = {k: f.get_tensor(k) for k in wanted}
    except RinkitError:
        raise
    except Exception as e:  # safetensors reports truncation / corruption as various errors
        raise RinkitError(f"{path} is corrupt or truncated ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    try:
        config, step = json.loads(meta["config"]), int(meta["step"])
        sd = lambda p: {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}  # noqa: E731
        optimizer = None
        if "optimizer" in meta and not weights_only:
            optimizer = _from_json(json.loads(meta["optimizer"]), tensors)
        rng = {**json.loads(meta.get("rng", "{}")), **sd("rng/")}
        extra = json.loads(meta.get("extra", "{}"))
        plugin = json.loads(meta.get("plugin", "{}"))  # absent in checkpoints written before it was recorded
    except (KeyError, ValueError) as e:
        raise RinkitError(f"{path}: damaged rinkit checkpoint metadata ({e})") from None
    return Checkpoint(config, step, sd("model/"), sd("ema/"), optimizer, rng, extra, plugin)


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in a folder (or its checkpoints/ subfolder), oldest first."""
    folder = Path(folder)
    if (folder / "checkpoints").is_dir():
        folder = folder / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: a process of another user holds the pid
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes whose writer process is gone (killed or
    crashed mid-save; each can be as large as a checkpoint). Files written on another host, or
    by a live process, are left alone. Returns the removed paths."""
    folder = Path(folder)
    if (folder / "checkpoints").is_dir():
        folder = folder / "checkpoints"
    if not folder.is_dir():
        return []
    removed, host = [], socket.gethostname()
    for p in folder.iterdir():
        m = TEMP.match(p.name)
        if m and m.group("host") in (None, host) and not _alive(int(m.group("pid"))):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def prune_checkpoints(folder: Path, keep: int) -> None:
    for p in list_checkpoints(folder)[:-keep]:
        p.unlink(missing_ok=True)
