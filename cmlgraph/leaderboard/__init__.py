"""``cmlgraph leaderboard``: every method, training-free baselines included, on the same fixed test tasks per
graph and setting, over seeds; each method beside the best baseline and CML beside its base, paired only on
identical test tasks.

Built on ``cmlgraph compare`` (:mod:`cmlgraph.compare`): runs are found or trained by
:func:`cmlgraph.compare.obtain_run`, paired by :func:`cmlgraph.compare.paired_stats`, and only when
:func:`cmlgraph.train.pairing.check_same_tasks` finds their test tasks identical.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmlgraph.leaderboard.methods import (
    BASELINES,
    DEFAULT_METHODS,
    GRAPH_PRESETS,
    Method,
    Setting,
    parse_methods,
    settings,
)

if TYPE_CHECKING:
    from cmlgraph.config import Config
    from cmlgraph.leaderboard.table import Board

#: Names whose modules import torch (through :mod:`cmlgraph.compare`), imported on first use (PEP 562): listing runs
#: reads ``BASELINES`` from :mod:`cmlgraph.leaderboard.methods`, which runs this package's ``__init__`` first, and
#: ``cmlgraph runs`` must not pay torch's 2 s import for it.
_LAZY = {"markdown": "cmlgraph.leaderboard.outputs", "write_outputs": "cmlgraph.leaderboard.outputs",
         "method_config": "cmlgraph.leaderboard.run", "obtain_runs": "cmlgraph.leaderboard.run",
         "Board": "cmlgraph.leaderboard.table", "CmlRow": "cmlgraph.leaderboard.table",
         "Entry": "cmlgraph.leaderboard.table", "build_board": "cmlgraph.leaderboard.table"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cmlgraph.leaderboard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def run_leaderboard(settings_: Sequence[Setting], methods: Sequence[Method], seeds: Sequence[int],
                    runs_dir: str | Path, base: str | Path | None = None,
                    overrides: dict[str, dict[str, Any]] | None = None,
                    train_fn: Callable[[Config], Any] | None = None, log: Callable[[str], None] = print,
                    console: Any = None, parallel_runs: int = 1) -> Board:
    """Train what is missing, reuse what is finished, and aggregate the leaderboard (see :func:`obtain_runs`
    and :func:`build_board`); ``parallel_runs`` > 1 trains up to that many runs of one shape together."""
    from cmlgraph.leaderboard.run import obtain_runs
    from cmlgraph.leaderboard.table import build_board

    found = obtain_runs(settings_, methods, seeds, runs_dir, base, overrides, train_fn, log, console, parallel_runs)
    return build_board(found, settings_, methods, seeds)


__all__ = ["BASELINES", "DEFAULT_METHODS", "GRAPH_PRESETS", "Board", "CmlRow", "Entry", "Method", "Setting",
           "build_board", "markdown", "method_config", "obtain_runs", "parse_methods", "run_leaderboard", "settings",
           "write_outputs"]
