"""The leaderboard's files: ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard-cml.csv`` and
``leaderboard.png``, formatted as ``cmlgraph compare``'s (accuracy in %, mean ± 95% CI)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cmlgraph.compare import _fmt, _scaled, kept_start_note, seed_ci, write_csv
from cmlgraph.leaderboard.table import Board, CmlRow, Entry
from cmlgraph.train.io import atomic_write

METRIC = "accuracy"


def _signed(mean: float, ci: float | None) -> str:
    return ("+" if mean >= 0 else "") + _fmt(mean, ci, METRIC)


def ranked(entries: Sequence[Entry]) -> list[Entry]:
    """Entries grouped by setting (in order of first appearance), best mean first within a setting."""
    order = list(dict.fromkeys(e.setting for e in entries))
    return [e for s in order for e in sorted((e for e in entries if e.setting == s), key=lambda e: -e.mean)]


def entry_row(e: Entry, rank: int) -> dict[str, Any]:
    """A flat dict for ``leaderboard.csv`` (fractions, not %; empty CI with one seed)."""
    v = e.vs_best
    return {"graph": e.setting.graph, "ways": e.setting.ways, "shots": e.setting.shots, "rank": rank,
            "method": e.method.name, "algorithm": e.method.algo, "cml": e.method.cml, "baseline": e.method.baseline,
            "mean": e.mean, "ci95": seed_ci((e.mean, e.ci95), e.seeds), "seeds": e.seeds, "tasks_per_seed": e.tasks,
            "best_baseline": e.best_baseline or "",
            "diff_vs_best": v.diff_seeds[0] if v else None,
            "diff_vs_best_ci95": seed_ci(v.diff_seeds, v.seeds) if v else None,
            "diff_vs_best_ci95_tasks": v.diff[1] if v else None,
            "paired_tasks": v.tasks if v else None, "runs": ";".join(e.runs)}


def cml_row(c: CmlRow) -> dict[str, Any]:
    """A flat dict for ``leaderboard-cml.csv``."""
    p = c.paired
    return {"graph": c.setting.graph, "ways": c.setting.ways, "shots": c.setting.shots, "algorithm": c.algo,
            "base_mean": p.base[0], "base_ci95": seed_ci(p.base, p.seeds), "cml_mean": p.cml[0],
            "cml_ci95": seed_ci(p.cml, p.seeds), "diff_mean": p.diff_seeds[0],
            "diff_ci95": seed_ci(p.diff_seeds, p.seeds), "diff_ci95_tasks": p.diff[1], "seeds": p.seeds,
            "paired_tasks": p.tasks, "base_runs": ";".join(p.base_runs), "cml_runs": ";".join(p.cml_runs)}


def markdown(board: Board) -> str:
    """The leaderboard as markdown: one ranked table per setting, then the CML − base table."""
    lines: list[str] = []
    entries = ranked(board.entries)
    for setting in dict.fromkeys(e.setting for e in entries):
        sub = [e for e in entries if e.setting == setting]
        best = sub[0].best_baseline
        lines += [f"## {setting.label}", "",
                  f"Best baseline: {best}." if best else "No training-free baseline on this board.", "",
                  "| rank | method | accuracy % | − best baseline (paired by seed) | (CI over test tasks) | seeds "
                  "| tasks/seed |", "|---|---|---|---|---|---|---|"]
        for rank, e in enumerate(sub, 1):
            name = e.method.name + (" (baseline)" if e.method.baseline else "")
            v = e.vs_best
            diff = (_signed(v.diff_seeds[0], seed_ci(v.diff_seeds, v.seeds)), f"± {_scaled(v.diff[1], METRIC)}") \
                if v else (("best baseline", "") if e.method.name == best else ("—", ""))
            lines.append(f"| {rank} | {name} | {_fmt(e.mean, seed_ci((e.mean, e.ci95), e.seeds), METRIC)} | "
                         f"{diff[0]} | {diff[1]} | {e.seeds} | {e.tasks} |")
        lines.append("")
    if board.cml:
        lines += ["## CML − base", "",
                  "| setting | algorithm | without CML | with CML | CML − base (paired by seed) | (CI over test tasks) "
                  "| seeds |", "|---|---|---|---|---|---|---|"]
        for c in board.cml:
            p = c.paired
            lines.append(f"| {c.setting.label} | {c.algo} | {_fmt(p.base[0], seed_ci(p.base, p.seeds), METRIC)} | "
                         f"{_fmt(p.cml[0], seed_ci(p.cml, p.seeds), METRIC)} | "
                         f"{_signed(p.diff_seeds[0], seed_ci(p.diff_seeds, p.seeds))} | "
                         f"± {_scaled(p.diff[1], METRIC)} | {p.seeds} |")
        lines.append("")
    kept = list(dict.fromkeys([*(r for e in entries if e.vs_best for r in e.vs_best.kept_start),
                               *(r for c in board.cml for r in c.paired.kept_start)]))
    if kept:  # meta-trained runs whose model is their untrained start (best validation at step 0)
        lines += [kept_start_note(f"{len(kept)} meta-trained runs", kept,
                                  "a difference between two such runs compares"), ""]
    lines.append("Accuracy in %, mean ± 95% Student-t CI over seeds (each seed's value is its run's mean over its "
                 "fixed test tasks). Differences pair the two methods' runs of the same seed, which were evaluated "
                 "on identical test tasks (checked by hash of test_episodes.pt); their CI over seeds includes the "
                 "run-to-run variation of training. The column \"CI over test tasks\" is the CI of the same mean over "
                 "the pooled per-task differences: it covers only the sampling of test tasks.")
    return "\n".join(lines) + "\n"


def write_outputs(board: Board, out_dir: str | Path) -> list[Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard-cml.csv`` (when any algorithm is on the board
    with and without CML; otherwise an older one in ``out_dir`` is removed) and ``leaderboard.png`` into
    ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(board)
    atomic_write(out / "leaderboard.md", lambda f: f.write(md.encode()))
    rows, rank, last = [], 0, None
    for e in ranked(board.entries):
        rank = rank + 1 if e.setting == last else 1
        last = e.setting
        rows.append(entry_row(e, rank))
    write_csv(out / "leaderboard.csv", rows)
    paths = [out / "leaderboard.md", out / "leaderboard.csv"]
    if board.cml:
        write_csv(out / "leaderboard-cml.csv", [cml_row(c) for c in board.cml])
        paths.append(out / "leaderboard-cml.csv")
    else:  # a board without CML pairs: an older board's CML table in this folder would no longer describe it
        (out / "leaderboard-cml.csv").unlink(missing_ok=True)
    plot(board, out / "leaderboard.png")
    return paths + [out / "leaderboard.png"]


def plot(board: Board, path: Path) -> None:
    """One panel per setting: each method's mean with its 95% CI over seeds (clipped to [0, 1]), baselines grey,
    the best baseline as a dashed line; the accuracy axis is [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = ranked(board.entries)
    settings = list(dict.fromkeys(e.setting for e in entries))
    fig, axes = plt.subplots(1, len(settings), figsize=(max(4.5, 0.55 * len(entries) / len(settings) + 1.5)
                                                        * len(settings), 4.0), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        sub = [e for e in entries if e.setting == setting]
        means = [e.mean for e in sub]
        cis = [e.ci95 if e.seeds > 1 else 0.0 for e in sub]
        low = [min(c, m) for m, c in zip(means, cis, strict=True)]
        high = [min(c, 1.0 - m) for m, c in zip(means, cis, strict=True)]
        colors = ["0.6" if e.method.baseline else ("C1" if e.method.cml else "C0") for e in sub]
        ax.bar(range(len(sub)), means, yerr=[low, high], capsize=3, color=colors)
        best = [e for e in sub if e.method.name == e.best_baseline]
        if best:
            ax.axhline(best[0].mean, color="0.3", linestyle="--", linewidth=1,
                       label=f"best baseline ({best[0].method.name})")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xticks(range(len(sub)), [e.method.name for e in sub], rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel("test accuracy")
        ax.set_title(setting.label, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
