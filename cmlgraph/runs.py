"""``cmlgraph runs``: what the run folders under a runs directory hold, read without torch.

Each folder with a ``config.yaml`` is a run. Its status: ``finished`` (``summary.json`` exists: it is written
last), ``running`` (a live process holds the folder's lock), or ``resumable`` (stopped or killed before the end;
``cmlgraph train --resume RUN_DIR`` continues it from its last checkpoint, or from step 0 without one).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

try:  # POSIX only; elsewhere a live run shows as resumable
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from cmlgraph.errors import ConfigError


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _last_step(metrics: Path) -> int | None:
    """The ``step`` of the last complete line of ``metrics.jsonl`` (reads only the file's tail)."""
    try:
        with open(metrics, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _locked(folder: Path) -> bool:
    """Whether a live cmlgraph process holds the folder (probes the trainer's ``flock`` without waiting)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing the descriptor drops our probe lock at once
    return False


def describe_run(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """One run folder as a flat record, or ``None`` when ``folder`` is not a run folder (no ``config.yaml``).

    Keys: ``name``, ``path``, ``dataset``, ``task``, ``algorithm``, ``control``, ``cml``, ``ways``, ``shots``,
    ``metric``, ``mean``, ``ci95``, ``num_tasks``, ``partial``, ``status`` (finished, running, resumable),
    ``step`` (last logged step), ``steps``, ``date`` (when the run started: the config's write time, ISO 8601
    UTC; ``started_s`` the same in seconds since the epoch), ``cmlgraph`` (the version that finished it, when recorded),
    ``warnings`` (the run's own warnings from ``summary.json``: chance level, too few test tasks, divergence).
    """
    folder = Path(folder)
    config_path = folder / "config.yaml"
    if not config_path.is_file():
        return None
    cfg = _read_yaml(config_path)
    data, algo, train = (cfg.get(k) or {} for k in ("data", "algo", "train"))
    summary = _read_json(folder / "summary.json")
    task = data.get("task", "graph")
    started = config_path.stat().st_mtime
    status = "finished" if summary is not None else ("running" if _locked(folder) else "resumable")
    record: dict[str, Any] = {
        "name": folder.name, "path": str(folder), "task": task,
        "dataset": data.get("graph") if task == "graph" else task,
        "algorithm": algo.get("algo"), "control": algo.get("control", "none"), "cml": bool(algo.get("cml")),
        "ways": data.get("ways") if task != "sinusoid" else None, "shots": data.get("shots"),
        "metric": None, "mean": None, "ci95": None, "num_tasks": None, "partial": bool(data.get("allow_partial")),
        "status": status, "step": _last_step(folder / "metrics.jsonl"), "steps": train.get("steps"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "started_s": started, "cmlgraph": None,
        "warnings": [],
    }
    if summary is not None:
        for key in ("metric", "mean", "ci95", "num_tasks", "partial", "cml"):
            if key in summary:
                record[key] = summary[key]
        record["dataset"] = summary.get("dataset", record["dataset"])
        record["step"] = summary.get("steps", record["step"])
        record["cmlgraph"] = (summary.get("provenance") or {}).get("cmlgraph")
        record["step"] = summary.get("steps_run", record["step"])  # early stopping ends before ``steps``
        record["warnings"] = [str(w) for w in summary.get("warnings") or []]
    return record


def list_runs(runs_dir: str | os.PathLike[str] = "runs") -> list[dict[str, Any]]:
    """Every run folder directly under ``runs_dir`` (see :func:`describe_run`), oldest first.

    Raises:
        ConfigError: ``runs_dir`` does not exist or is not a folder.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise ConfigError(f"runs folder {str(root)!r} does not exist; pass the folder given to `cmlgraph train "
                          f"--runs-dir` (default: runs)")
    records = [r for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
               if (r := describe_run(p)) is not None]
    return sorted(records, key=lambda r: (r["started_s"], r["name"]))


def format_score(record: dict[str, Any]) -> str:
    """``71.01 ± 0.69 %`` for accuracy, ``0.754 ± 0.077`` for MSE, empty when unfinished."""
    if record.get("mean") is None:
        return ""
    if record.get("metric") == "accuracy":
        return f"{100 * record['mean']:.2f} ± {100 * (record.get('ci95') or 0):.2f} %"
    return f"{record['mean']:.4g} ± {record.get('ci95') or 0:.2g}"


def format_shape(record: dict[str, Any]) -> str:
    """``5w3s`` (classification) or ``k5`` (sinusoid)."""
    if record.get("ways") is None:
        return f"k{record.get('shots')}"
    return f"{record.get('ways')}w{record.get('shots')}s"


__all__ = ["describe_run", "format_score", "format_shape", "list_runs"]
