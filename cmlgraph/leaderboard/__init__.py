"""``cmlgraph leaderboard``: every method, training-free baselines included, on the same fixed test tasks per
graph and setting, over seeds; each method beside the best baseline and CML beside its base, paired only on
identical test tasks.

Built on ``cmlgraph compare`` (:mod:`cmlgraph.compare`): runs are found or trained by
:func:`cmlgraph.compare.obtain_run`, paired by :func:`cmlgraph.compare.paired_stats`, and only when
:func:`cmlgraph.train.pairing.check_same_tasks` finds their test tasks identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cmlgraph.config import Config
from cmlgraph.leaderboard.methods import (
    BASELINES,
    DEFAULT_METHODS,
    GRAPH_PRESETS,
    Method,
    Setting,
    parse_methods,
    settings,
)
from cmlgraph.leaderboard.outputs import markdown, write_outputs
from cmlgraph.leaderboard.run import method_config, obtain_runs
from cmlgraph.leaderboard.table import Board, CmlRow, Entry, build_board


def run_leaderboard(settings_: Sequence[Setting], methods: Sequence[Method], seeds: Sequence[int],
                    runs_dir: str | Path, base: str | Path | None = None,
                    overrides: dict[str, dict[str, Any]] | None = None,
                    train_fn: Callable[[Config], Any] | None = None, log: Callable[[str], None] = print,
                    console: Any = None, parallel_runs: int = 1) -> Board:
    """Train what is missing, reuse what is finished, and aggregate the leaderboard (see :func:`obtain_runs`
    and :func:`build_board`); ``parallel_runs`` > 1 trains up to that many runs of one shape together."""
    found = obtain_runs(settings_, methods, seeds, runs_dir, base, overrides, train_fn, log, console, parallel_runs)
    return build_board(found, settings_, methods, seeds)


__all__ = ["BASELINES", "DEFAULT_METHODS", "GRAPH_PRESETS", "Board", "CmlRow", "Entry", "Method", "Setting",
           "build_board", "markdown", "method_config", "obtain_runs", "parse_methods", "run_leaderboard", "settings",
           "write_outputs"]
