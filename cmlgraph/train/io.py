"""Crash-safe file writing: every file a run writes appears whole or not at all.

Why: a run may be killed at any moment; a reader (``--resume``, ``cmlgraph eval``) must never see half a
checkpoint. Files are written to a temporary name in the same folder, fsynced, then renamed over the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import yaml


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through ``write(fileobj)`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
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


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write JSON (sorted keys, indented)."""
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def write_yaml(path: str | Path, obj: Any) -> None:
    """Atomically write YAML."""
    data = yaml.safe_dump(obj, sort_keys=False).encode()
    atomic_write(path, lambda f: f.write(data))


def save_torch(path: str | Path, obj: Any) -> None:
    """Atomically ``torch.save`` an object made of tensors, numbers, strings, lists and dicts."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_torch(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``: refuses files holding arbitrary pickled objects."""
    return torch.load(path, map_location="cpu", weights_only=True)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step, appended and flushed line by line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after ``step`` (and any torn last line), so a resumed run logs each step once."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            if rec.get("step", 0) <= step:
                keep.append(line)
        data = "".join(k + "\n" for k in keep).encode()
        atomic_write(self.path, lambda f: f.write(data))

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and flush it to disk."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        """All records."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
