"""Crash-safe file writing and safe reading: every file a run writes appears whole or not at all.

Why: a run may be killed at any moment; a reader (``--resume``, ``cmlgraph eval``) must never see half a
checkpoint. Files are written to a temporary name in the same folder (``.<name>.<random>.tmp``), fsynced, then
renamed over the target; a temporary file left by a killed process is never read and is removed on resume.
Checkpoints are read with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.

This module also holds the *test hook* :func:`kill_point` used by the crash-equivalence tests.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import signal
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import yaml

from cmlgraph.errors import CmlgraphError

#: Test hook: ``CMLGRAPH_TEST_KILL_AT=<event>:<n>`` makes the process SIGKILL itself at the n-th (1-based)
#: occurrence of ``event`` in this process. Events: ``step_begin`` (before a meta-batch is drawn), ``step_end``
#: (after the optimizer update, before validation/logging/checkpoint), ``log`` (after a metrics line is
#: appended), ``checkpoint_write`` (``checkpoint.pt``'s temp file partly written), ``eval`` (after each
#: evaluated task, validation or test), ``finish`` (``model.pt`` written, ``summary.json`` not yet).
#: ``<event>:<n>:INT`` sends SIGINT (Ctrl-C) instead, ``:TERM`` SIGTERM, ``:PGINT`` SIGINT to the whole process group
#: (as a terminal's Ctrl-C reaches a shell loop and its run), and a comma-separated list arms several
#: points (a second Ctrl-C: ``step_end:4:INT,eval:5:INT``). Used only by tests; unset, it costs one dict lookup
#: per event.
KILL_ENV = "CMLGRAPH_TEST_KILL_AT"
_kill_counts: dict[str, int] = {}
_kill_spec: list[str | None] = [None]

_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


def kill_point(event: str) -> None:
    """Test hook: SIGKILL this process at the configured occurrence of ``event`` (see :data:`KILL_ENV`)."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        _kill_spec[0] = None  # set again later, even to the same spec, the counts restart
        return
    if spec != _kill_spec[0]:  # a new spec (e.g. set in a forked child) restarts the counts
        _kill_spec[0] = spec
        _kill_counts.clear()
    _kill_counts[event] = _kill_counts.get(event, 0) + 1
    for point in spec.split(","):
        want, nth, how = ([*point.strip().split(":"), "KILL"])[:3]
        if want == event and str(_kill_counts[event]) == nth.strip():
            if how.strip() == "PGINT":  # a terminal's Ctrl-C: SIGINT to the whole foreground process group
                os.killpg(os.getpgrp(), signal.SIGINT)
            else:
                os.kill(os.getpid(), {"INT": signal.SIGINT, "TERM": signal.SIGTERM}.get(how.strip(), signal.SIGKILL))


class _KillTap:
    """File proxy firing :func:`kill_point` once, after the first write (a partly written temp file)."""

    def __init__(self, f: IO[bytes], event: str) -> None:
        self._f, self._event, self._fired = f, event, False

    def write(self, data: Any) -> int:
        n = self._f.write(data)
        if not self._fired:
            self._fired = True
            self._f.flush()
            kill_point(self._event)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], event: str | None = None) -> None:
    """Write a file through ``write(fileobj)`` atomically (temp file, fsync, rename, fsync of the folder).

    Args:
        path: The target file.
        write: Writes the content to the given binary file object.
        event: Name of the test-hook event fired when the temp file is partly written (see :func:`kill_point`).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(_KillTap(f, event) if event and os.environ.get(KILL_ENV) else f)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temp files (``.<name>.<random>.tmp``) that a killed writer left in ``folder``; returns them."""
    removed = []
    for p in Path(folder).iterdir():
        if p.is_file() and _TEMP.match(p.name):
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


def _json_safe(obj: Any) -> Any:
    """Non-finite floats become ``null`` (JSON has no NaN/inf)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write JSON (sorted keys, indented; NaN/inf written as ``null``)."""
    data = (json.dumps(_json_safe(obj), indent=2, sort_keys=True) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def write_yaml(path: str | Path, obj: Any, header: str = "") -> None:
    """Atomically write YAML, after ``header`` (``# ...`` comment lines, e.g. the run's provenance)."""
    data = (header + yaml.safe_dump(obj, sort_keys=False)).encode()
    atomic_write(path, lambda f: f.write(data))


def save_torch(path: str | Path, obj: Any, event: str | None = None) -> None:
    """Atomically ``torch.save`` an object made of tensors, numbers, strings, lists and dicts."""
    atomic_write(path, lambda f: torch.save(obj, f), event=event)


def load_torch(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``: refuses files holding arbitrary pickled objects.

    Raises:
        CmlgraphError: The file is missing, corrupted, or holds objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CmlgraphError(f"{path} does not exist or is not a file; pass a run folder made by `cmlgraph train`")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), "")
        raise CmlgraphError(
            f"refused to load {path}: it holds pickled Python objects, not only tensors and plain containers "
            f"(torch.load(weights_only=True) rejected it{': ' + detail if detail else ''}). cmlgraph never writes "
            f"such files; do not load files from an untrusted source") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CmlgraphError(f"could not read {path} ({exc.__class__.__name__}: {first or 'empty file'}); the file "
                            f"is truncated or corrupted, or was not written by cmlgraph") from None


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step, appended and flushed line by line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after ``step`` (and any torn line), so a resumed run logs each step once."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
                keep.append(line)
        data = "".join(k + "\n" for k in keep).encode()
        atomic_write(self.path, lambda f: f.write(data))

    def append(self, record: dict[str, Any]) -> None:
        """Append one record (NaN/inf as ``null``) and flush it to disk."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_json_safe(record), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        """All records (a torn last line, left by a killed writer, is ignored)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return out
