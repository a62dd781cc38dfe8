"""Pairing two runs task by task: only when they were evaluated on the identical fixed test tasks.

Why: a paired difference (``compare``'s CML − base, ``leaderboard``'s method − best baseline) subtracts the scores
of the same test task in two runs. Runs of different seeds, data settings or splits have different tasks; equal
*numbers* of tasks are not enough, so the runs' saved ``test_episodes.pt`` (DESIGN §3) are compared by a hash of
their contents (tensor dtypes, shapes and values, key by key), which does not depend on how the file was written.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from cmlgraph.errors import ConfigError
from cmlgraph.train.io import load_torch


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for k in sorted(value, key=str):
            h.update(f"K{k!r}".encode())
            _feed(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}".encode())
        for v in value:
            _feed(h, v)
    else:
        h.update(f"V{value!r}".encode())


@lru_cache(maxsize=512)
def _hash_file(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    _feed(h, load_torch(path))
    return h.hexdigest()


def tasks_hash(run: str | Path) -> str:
    """SHA-256 of the contents of ``run/test_episodes.pt``: equal exactly when the runs' test tasks are equal.

    Raises:
        ConfigError: The run folder has no ``test_episodes.pt`` (not a finished ``cmlgraph train`` run).
    """
    path = Path(run) / "test_episodes.pt"
    if not path.is_file():
        raise ConfigError(f"{run} has no test_episodes.pt, so its test tasks are unknown and it cannot be paired; "
                          f"use a finished run folder of `cmlgraph train`")
    st = path.stat()
    return _hash_file(str(path.resolve()), st.st_mtime_ns, st.st_size)


def run_scores(run: str | Path) -> list[float]:
    """The run's per-test-task scores (``scores.pt``), in the order of its ``test_episodes.pt``."""
    return [float(v) for v in load_torch(Path(run) / "scores.pt")["scores"].tolist()]


def check_same_tasks(a: str | Path, b: str | Path) -> None:
    """Refuse to pair runs ``a`` and ``b`` unless their fixed test tasks are identical.

    Raises:
        ConfigError: Their ``test_episodes.pt`` differ (or their score counts do), naming both folders and why.
    """
    ha, hb = tasks_hash(a), tasks_hash(b)
    if ha != hb:
        raise ConfigError(f"cannot pair {a} with {b}: their test tasks differ (test_episodes.pt hashes {ha[:12]} vs "
                          f"{hb[:12]}); a paired difference needs runs of the same graph, split, ways, shots, "
                          f"queries, test-task count and seed")
    na, nb = len(run_scores(a)), len(run_scores(b))
    if na != nb:
        raise ConfigError(f"cannot pair {a} with {b}: same test tasks but {na} vs {nb} scores in scores.pt; "
                          f"one of the runs is incomplete or altered: retrain it")
