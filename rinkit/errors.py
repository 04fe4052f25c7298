"""User-facing errors and the one place that turns failures into one-line messages.

Code that knows what a failure means raises `RinkitError` with a sentence naming the file or value.
Everything else reaches the CLI's boundary (`rinkit.cli.main`), which maps the *expected* classes
(file-system errors, out of memory, errors relayed from DataLoader workers) with `describe()` to
`rinkit: error: ...` and reports anything else as an internal error; `--debug` / RINKIT_DEBUG=1
shows the traceback instead."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


class RinkitError(Exception):
    """A problem with the user's input (config, file, checkpoint, plugin name...)."""


def debug_enabled() -> bool:
    return os.environ.get("RINKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def first_line(text: str) -> str:
    """The first non-empty line of a message (library errors often append C++ traces)."""
    return next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")


def _worker_line(text: str) -> str | None:
    """A DataLoader worker's error arrives as 'Caught X in DataLoader worker process N.\\nOriginal
    Traceback ...' with the worker's traceback embedded in the message: keep its last line, the
    worker's own message, without the exception's module path."""
    if "DataLoader worker process" not in text or "Traceback" not in text:
        return None
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    head, sep, msg = last.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == "RinkitError":
        return msg
    return last.rpartition(".")[2] if not sep else f"{head.rsplit('.', 1)[-1]}: {msg}"


def os_error_message(e: OSError) -> str:
    """'<path>: <errno in words>' for an OSError (the path where it has one)."""
    reason = e.strerror or first_line(str(e)) or type(e).__name__
    where = "" if e.filename is None else str(e.filename)
    if e.filename2 is not None:
        where += f" -> {e.filename2}"
    return f"{where}: {reason}" if where else reason


def describe(exc: BaseException) -> str | None:
    """One line for an expected failure, None for what looks like a bug."""
    if isinstance(exc, RinkitError):
        return _worker_line(str(exc)) or first_line(str(exc)) or "error"
    relayed = _worker_line(str(exc))
    if relayed is not None:
        return f"a DataLoader worker failed: {relayed}"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory ({first_line(str(exc))[:200] or 'MemoryError'}); lower train.batch_size or --batch-size"
    if isinstance(exc, OSError):
        return os_error_message(exc)
    return None


@contextlib.contextmanager
def writing(path: str | Path, what: str):
    """Turn an OSError while writing `what` at `path` into a RinkitError naming both (a disk-full
    write error carries no file name of its own)."""
    try:
        yield
    except OSError as e:
        if e.filename is not None and not str(e.filename).startswith(str(path)):
            raise  # about another file (e.g. data read on the way): the boundary names that one
        reason = e.strerror or first_line(str(e)) or type(e).__name__
        raise RinkitError(f"cannot write {what} {e.filename or path}: {reason}") from e
