"""``cmlgraph runs``: what the run folders under a runs directory hold, read without torch.

Each folder with a ``config.yaml`` is a run. Its status: ``finished`` (``summary.json`` exists: it is written
last), ``running`` (a live process holds the folder's lock), or ``resumable`` (stopped or killed before the end;
``cmlgraph train --resume RUN_DIR`` continues it from its last checkpoint, or from step 0 without one).
"""

from __future__ import annotations

import json
import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

import yaml

try:  # POSIX only; elsewhere a live run shows as resumable
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from cmlgraph.errors import ConfigError

#: libyaml's safe loader where PyYAML was built with it: listing reads every run's config.yaml, and the pure-Python
#: loader took about 8.5 ms a file (a new-user trial: 2.6 to 3.6 s to list 220 runs; 0.23 against 0.03 s for 27).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class _Stub:
    """Whatever a checkpoint's pickle names (tensors, storages, ordered dicts): accepts and keeps nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub()

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _StepReader(pickle.Unpickler):
    """Unpickles a checkpoint's ``data.pkl`` with every class replaced by :class:`_Stub` and no tensor data read:
    its plain values (the step) come back, and nothing in the file is ever run."""

    def find_class(self, module: str, name: str) -> Any:
        return _Stub

    def persistent_load(self, pid: Any) -> Any:
        return None


def checkpoint_step(folder: str | os.PathLike[str]) -> int | None:
    """The meta-step of a run folder's ``checkpoint.pt`` (where ``--resume`` continues), read without torch.

    Returns:
        The step, or ``None`` when the folder has no checkpoint (a resume restarts at step 0).

    Raises:
        ValueError: The checkpoint is not a readable cmlgraph checkpoint (not a torch zip archive, no step).
    """
    path = Path(folder) / "checkpoint.pt"
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                raise ValueError(f"{path} holds no data.pkl")
            with archive.open(name) as f:
                state = _StepReader(f).load()
        return int(state["step"])
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError,
            AttributeError, IndexError) as exc:
        raise ValueError(f"{path} is not a readable checkpoint ({type(exc).__name__})") from None


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


#: Config keys that ``settings`` leaves out: the table's own columns, where the data is read, execution strategies
#: that give the same results, and logging intervals.
NOT_SETTINGS = frozenset({
    "data.task", "data.graph", "data.data_root", "data.ways", "data.shots", "data.subgraph",
    "data.subgraph_threshold", "algo.algo", "algo.cml", "algo.control", "train.steps", "train.batched",
    "train.prefetch", "train.device", "train.log_every", "train.checkpoint_every", "train.diag_every",
})


#: The settings a training-free baseline's run reads (besides ``data.*``): its own options and its evaluation tasks.
#: Its config still holds the meta-learning defaults (init, head, meta learning rate...), which it never uses.
TRAINING_FREE_SETTINGS = frozenset({"algo.prop_steps", "algo.prop_alpha", "algo.probe_c", "algo.pretrain_epochs",
                                    "train.seed", "train.val_tasks", "train.test_tasks"})


def _training_free(cfg: dict[str, Any], summary: dict[str, Any] | None) -> bool:
    if summary is not None and "training_free" in summary:
        return bool(summary["training_free"])
    from cmlgraph.leaderboard.methods import BASELINES  # torch-free (listing runs imports no torch)

    return str((cfg.get("algo") or {}).get("algo")) in BASELINES


#: A setting an unfinished run resolves when it starts (``data.features`` unset or ``auto``, ``model.layers``
#: unset) and records only in its ``summary.json``: :func:`differing_settings` does not count it as a difference.
PENDING = "(resolved when the run finishes)"


def run_settings(cfg: dict[str, Any], summary: dict[str, Any] | None) -> dict[str, Any]:
    """A run's settings as flat ``section.key`` → value (the ``run`` section and :data:`NOT_SETTINGS` left out;
    for a training-free baseline only ``data.*`` and :data:`TRAINING_FREE_SETTINGS`, the settings it reads).

    ``data.features`` is the preprocessing the run resolved (``summary.json``'s ``features``) when recorded: a
    config leaves it unset for the graph's default. A graph run's config written before ``data.features`` existed
    trained on raw features (:func:`cmlgraph.graphs.features.pin_legacy_features`).
    """
    flat = {f"{section}.{key}": value for section, values in cfg.items() if section != "run" and
            isinstance(values, dict) for key, value in values.items() if f"{section}.{key}" not in NOT_SETTINGS}
    if _training_free(cfg, summary):
        flat = {k: v for k, v in flat.items() if k.startswith("data.") or k in TRAINING_FREE_SETTINGS}
    data = cfg.get("data") or {}
    if data.get("task", "graph") == "graph":
        if isinstance(data, dict) and "features" not in data:
            flat["data.features"] = "raw"
        if summary is not None and summary.get("features"):
            flat["data.features"] = summary["features"]
        if summary is not None and isinstance(summary.get("layers"), int) and flat.get("model.layers") is None:
            flat["model.layers"] = summary["layers"]  # the depth it chose (domains/depth_choice.py)
        if summary is None:  # resolved only when the run's domain is built: unknown here, so told apart by nothing
            for key in ("data.features", "model.layers"):
                if key in flat and flat[key] in (None, "auto"):
                    flat[key] = PENDING
    return flat



def differing_settings(records: list[dict[str, Any]]) -> None:
    """Set each record's ``differs``: its settings whose values differ between the listed runs of the same task and
    dataset (short key → value; a key is the config key without its section unless two sections share it).

    Why: two runs with the same table columns may differ in a setting (issue 19: compare's Cora used raw features,
    train's row-normalised ones); the listing must show what tells them apart.
    """
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r.get("task"), r.get("dataset")), []).append(r)
    for group in groups.values():
        order = {"data": 0, "model": 1, "algo": 2, "train": 3}  # the config's section order
        keys = sorted({k for r in group for k in r.get("settings", {})},
                      key=lambda k: (order.get(k.split(".", 1)[0], 4), k))
        def reads(r: dict[str, Any], k: str) -> bool:  # a training-free run has no meta-learning settings
            if r.get("settings", {}).get(k) == PENDING:  # not known yet: no difference
                return False
            return not r.get("training_free") or k in r.get("settings", {})

        differ = [k for k in keys if len({json.dumps(r.get("settings", {}).get(k), sort_keys=True, default=str)
                                          for r in group if reads(r, k)}) > 1]
        tails = [k.split(".", 1)[-1] for k in differ]
        for r in group:
            r["differs"] = {(t if tails.count(t) == 1 else k): r.get("settings", {}).get(k)
                            for k, t in zip(differ, tails, strict=True) if reads(r, k)}


def run_step(record: dict[str, Any]) -> int:
    """The steps column of ``cmlgraph runs``: the meta-steps a run has to show. A resumable run with a checkpoint
    shows the checkpoint's step, where ``--resume`` continues (its last logged step may lie after it: steps logged
    after the checkpoint are redone); without one, the last logged step (a resume restarts at 0, said in the
    status)."""
    if record["status"] == "resumable" and record.get("checkpoint_step") is not None:
        return int(record["checkpoint_step"])
    return int(record["step"] or 0)


def run_status(record: dict[str, Any]) -> str:
    """The status column of ``cmlgraph runs``: ``finished``; ``running (step s/n)`` with the last logged step;
    ``failed at step s/n`` with the step that failed (its message names it too); ``resumable from step c/n`` with
    the checkpoint's step (where ``--resume`` continues, which may be before the last logged step), ``resumable
    (no checkpoint: restarts at step 0/n)``, or ``resumable? checkpoint unreadable``."""
    status, steps = record["status"], record["steps"]
    if status == "finished":
        return status
    if status == "failed":
        return f"failed at step {record['step'] or 0}/{steps}"
    if status != "resumable":
        return f"{status} (step {record['step'] or 0}/{steps})"
    if record.get("checkpoint_error"):
        return "resumable? checkpoint unreadable"
    if record.get("checkpoint_step") is None:
        return f"resumable (no checkpoint: restarts at step 0/{steps})"
    return f"resumable from step {record['checkpoint_step']}/{steps}"


def format_settings(record: dict[str, Any]) -> str:
    """``features=raw inner_lr=0.5``: the record's ``differs`` (see :func:`differing_settings`)."""
    return " ".join(f"{k}={'default' if v is None else v}" for k, v in (record.get("differs") or {}).items())


#: A run folder's record of a numerical failure (written by ``Trainer.record_failure``): resuming repeats it.
FAILED_FILE = "failed.json"


def describe_run(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """One run folder as a flat record, or ``None`` when ``folder`` is not a run folder (no ``config.yaml``).

    Keys: ``name``, ``path``, ``dataset``, ``task``, ``algorithm``, ``control``, ``cml``, ``ways``, ``shots``,
    ``metric``, ``mean``, ``ci95``, ``num_tasks``, ``partial``, ``status`` (finished, running, resumable, or failed: a
    numerical failure that resuming would repeat, its message under ``error``),
    ``step`` (last logged step; a failed run's failing step), ``steps``, ``date`` (when the run started: the
    config's write time, ISO 8601 UTC; ``started_s`` the same in seconds since the epoch), ``cmlgraph`` (the
    version that finished it, when recorded),
    ``checkpoint_step`` (an unfinished run's checkpoint step, where ``--resume`` continues; ``None`` without one, and
    ``checkpoint_error`` when it cannot be read),
    ``warnings`` (the run's own warnings from ``summary.json``: chance level, too few test tasks, divergence),
    ``settings`` (:func:`run_settings`).
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
    failure = _read_json(folder / FAILED_FILE) if summary is None else None
    status = "finished" if summary is not None else ("running" if _locked(folder) else
                                                     "failed" if failure is not None else "resumable")
    record: dict[str, Any] = {
        "name": folder.name, "path": str(folder), "task": task,
        "dataset": data.get("graph") if task == "graph" else task,
        "algorithm": algo.get("algo"), "control": algo.get("control", "none"), "cml": bool(algo.get("cml")),
        "ways": data.get("ways") if task != "sinusoid" else None, "shots": data.get("shots"),
        "metric": None, "mean": None, "ci95": None, "num_tasks": None, "partial": bool(data.get("allow_partial")),
        "status": status, "step": _last_step(folder / "metrics.jsonl"), "steps": train.get("steps"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "started_s": started, "cmlgraph": None,
        "warnings": [], "settings": run_settings(cfg, summary),
        "error": failure.get("message") if status == "failed" else None,
        "checkpoint_step": None,
    }
    if status == "failed" and isinstance(failure.get("step"), int):  # the step that failed, not the last logged
        record["step"] = failure["step"]
    if status != "finished":  # where ``--resume`` continues (None: no checkpoint, a resume restarts at step 0)
        try:
            record["checkpoint_step"] = checkpoint_step(folder)
        except ValueError as exc:
            record["checkpoint_error"] = str(exc)
    if _training_free(cfg, summary):  # nothing is meta-trained: 0 of 0 steps, not 0 of the config's 500
        record["steps"], record["training_free"] = 0, True
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
    """Every run folder directly under ``runs_dir`` (see :func:`describe_run`), oldest first, each with ``differs``
    (:func:`differing_settings`: its settings that differ from other listed runs of its task and dataset).

    Raises:
        ConfigError: ``runs_dir`` does not exist or is not a folder.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise ConfigError(f"runs folder {str(root)!r} does not exist; pass the folder given to `cmlgraph train "
                          f"--runs-dir` (default: runs)")
    records = [r for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
               if (r := describe_run(p)) is not None]
    records = sorted(records, key=lambda r: (r["started_s"], r["name"]))
    differing_settings(records)
    return records


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


__all__ = ["NOT_SETTINGS", "checkpoint_step", "describe_run", "differing_settings", "format_score", "format_settings",
           "format_shape", "list_runs", "run_settings", "run_status", "run_step"]
