"""The leaderboard's statistics: each method's mean ± 95% CI over seeds, its paired difference to the best
baseline, and CML − base, all paired only on identical test tasks.

Statistics are ``cmlgraph compare``'s (:func:`cmlgraph.compare.paired_stats`, Student-t over seeds,
:func:`cmlgraph.train.stats.mean_ci95`): a method's mean is the mean over seeds of its runs' test means, with a t
interval over seeds (it includes run-to-run variation). A paired difference A − B subtracts the two runs of each
seed (identical test tasks, checked by hash); its mean ± CI over seeds is the headline, and the CI of the pooled
per-task differences (which covers only the sampling of test tasks, so it is narrower) stands beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cmlgraph.compare import Paired, paired_stats
from cmlgraph.leaderboard.methods import Method, Setting
from cmlgraph.leaderboard.run import Found
from cmlgraph.train.stats import mean_ci95


@dataclass
class Entry:
    """One method in one setting.

    ``mean``/``ci95`` are over the seeds' test means (``ci95`` is 0.0 with one seed). ``vs_best`` is the paired
    statistics of (best baseline, this method): ``vs_best.diff_seeds`` is this method − best baseline paired by
    seed, ``vs_best.diff`` the same mean with the CI of the pooled per-task differences; ``None`` for the best
    baseline itself or when no baseline is on the board.
    """

    setting: Setting
    method: Method
    mean: float
    ci95: float
    seeds: int
    tasks: int
    runs: list[str]
    best_baseline: str | None = None
    vs_best: Paired | None = None


@dataclass
class CmlRow:
    """CML − base of one algorithm in one setting, paired by seed (and by task within a seed)."""

    setting: Setting
    algo: str
    paired: Paired


@dataclass
class Board:
    """The whole leaderboard: entries in (setting, method) order, then the CML rows."""

    entries: list[Entry] = field(default_factory=list)
    cml: list[CmlRow] = field(default_factory=list)


def _mean(run: Path) -> float:
    return float(json.loads((run / "summary.json").read_text())["mean"])


def build_board(found: Found, settings: Sequence[Setting], methods: Sequence[Method], seeds: Sequence[int]) -> Board:
    """Aggregate the runs of every (setting, method) over ``seeds``.

    The best baseline of a setting is the training-free method with the highest mean there.

    Raises:
        ConfigError: Two runs to be paired have different test tasks (names both folders and why).
    """
    board = Board()
    for setting in settings:
        runs = {m: [found[(setting, m, s)] for s in seeds] for m in methods}
        stats = {m: mean_ci95([_mean(r) for r in runs[m]]) for m in methods}
        baselines = [m for m in methods if m.baseline]
        best = max(baselines, key=lambda m: stats[m][0]) if baselines else None
        for m in methods:
            vs = None if best is None or m == best else paired_stats(list(zip(runs[best], runs[m], strict=True)))
            n_tasks = int(json.loads((runs[m][0] / "summary.json").read_text())["num_tasks"])
            board.entries.append(Entry(setting, m, stats[m][0], stats[m][1], len(seeds), n_tasks,
                                       [r.name for r in runs[m]], best.name if best else None, vs))
        for m in methods:
            partner = Method(m.algo, True)
            if not m.cml and partner in runs:
                board.cml.append(CmlRow(setting, m.algo,
                                        paired_stats(list(zip(runs[m], runs[partner], strict=True)))))
    return board
