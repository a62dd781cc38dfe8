"""``cmlgraph reproduce``: run the paper's experiments that the local data allows and set ours beside its numbers.

Each selected cell (:mod:`cmlgraph.paper.cells`) is trained for ``runs`` seeds in both arms (base, base + CML)
from the paper's configs; finished runs are reused exactly as ``cmlgraph compare`` reuses them
(:func:`cmlgraph.compare.obtain_run`), and the paired statistics are compare's (:func:`cmlgraph.compare.paired_stats`):
both arms of a seed share its fixed test tasks, so CML − base is paired task by task. Graph cells whose dataset is
not available locally (``cmlgraph datasets list``) are reported as not run, never silently dropped.

Outputs (``write_reproduce``): ``reproduce.md`` and ``reproduce.csv`` (ours: mean ± 95% CI over the runs' test
means, beside the published number; the paired CML − base difference beside the published one) and, when sinusoid
cells ran, ``figure2.png`` (:mod:`cmlgraph.paper.figure2`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cmlgraph.compare import Paired, _scaled, obtain_runs, paired_stats, seed_ci, write_csv
from cmlgraph.config import Config, apply_overrides, from_yaml
from cmlgraph.errors import ConfigError
from cmlgraph.paper.cells import DEFAULT_RUNS, PAPER_CONFIGS, PaperCell
from cmlgraph.paper.published import load_published
from cmlgraph.text import counted
from cmlgraph.train.io import atomic_write

ALGO_LABELS = {"gmeta": "G-Meta", "ammgnn": "AMM-GNN", "maml": "MAML"}


@dataclass
class CellResult:
    """A cell's outcome: its paired statistics and run pairs (per seed), or why it was not run."""

    cell: PaperCell
    paired: Paired | None = None
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: str | None = None
    paper_settings: dict[str, int] = field(default_factory=dict)  # the paper config's steps and test tasks

    @cached_property
    def _summaries(self) -> list[tuple[Path, dict[str, Any]]]:
        """Each run folder of the cell with its ``summary.json``, read once."""
        return [(r, json.loads((r / "summary.json").read_text())) for pair in self.pairs for r in pair]

    def deviations(self) -> list[str]:
        """How the runs differ from the paper config's length and test set (``--steps``/``--test-tasks`` or runs
        reused from another setting): empty when they match."""
        out: list[str] = []
        sums = [x for _, x in self._summaries]
        steps = sorted({int(x.get("steps", 0)) for x in sums})
        tasks = sorted({int(x.get("num_tasks", 0)) for x in sums})
        want_steps, want_tasks = self.paper_settings.get("steps"), self.paper_settings.get("test_tasks")
        if want_steps is not None and steps != [want_steps]:
            out.append(f"meta-iterations capped at {'/'.join(map(str, steps))} (paper config: {want_steps})")
        if want_tasks is not None and tasks != [want_tasks]:
            out.append(f"{'/'.join(map(str, tasks))} test tasks per run (paper config: {want_tasks})")
        return out

    def warnings(self) -> list[str]:
        """The runs' own warnings (``summary.json``), each with the runs that gave it."""
        seen: dict[str, tuple[str, list[str]]] = {}  # by the text with its numbers blanked: one line per kind
        for r, summary in self._summaries:
            for w in summary.get("warnings", []):
                seen.setdefault(re.sub(r"\d[\d.,]*", "#", w), (w, []))[1].append(r.name)
        return [f"{first} ({counted(len(names), 'run')}: {', '.join(names)})" for first, names in seen.values()]


def cell_config(cell: PaperCell, cml: bool, seed: int, configs_dir: Path = PAPER_CONFIGS,
                overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """The config of one arm and seed of ``cell``: its paper config, the cell's overrides, then ``overrides``.

    Raises:
        ConfigError: The config file is missing, or a setting is invalid.
    """
    path = Path(configs_dir) / cell.config
    if not path.is_file():
        raise ConfigError(_missing_message([cell.config], Path(configs_dir)))
    cfg = from_yaml(path)
    apply_overrides(cfg, cell.overrides(cml, seed), f"reproduce cell {cell.id}")
    if overrides:
        apply_overrides(cfg, overrides, "reproduce overrides")
    return cfg


def _missing_message(files: Sequence[str], configs_dir: Path) -> str:
    return (f"the paper config(s) {', '.join(str(configs_dir / f) for f in files)} do not exist; the Table 3 cells "
            f"need configs/paper/table3-gmeta.yaml and table3-ammgnn.yaml (G-Meta and AMM-GNN, --algo gmeta|ammgnn). "
            f"Run the other experiments with --only (e.g. --only sinusoid)")


def data_status(cells: Sequence[PaperCell], data_root: str | None = None) -> dict[str, str]:
    """Why each graph cell cannot run here (cell id → reason), from the dataset registry's availability check."""
    graphs = {c.dataset for c in cells if c.experiment != "sinusoid"}
    if not graphs:
        return {}
    from cmlgraph.graphs import list_datasets

    rows = {r["name"]: r for r in list_datasets(data_root)}
    reasons = {}
    for c in cells:
        row = rows.get(c.dataset)
        if c.dataset not in graphs or row is None or row.get("available") or row.get("partial"):
            continue
        missing = list(row.get("missing") or [])
        files = ", ".join(missing[:2]) + (f" and {len(missing) - 2} more files" if len(missing) > 2 else "")
        reasons[c.id] = f"data missing ({files}; `cmlgraph datasets download {c.dataset}`)"
    return reasons


def plan_runs(cells: Sequence[PaperCell], runs: int | None, configs_dir: Path = PAPER_CONFIGS,
              overrides: dict[str, dict[str, Any]] | None = None, steps: int | None = None,
              skip: dict[str, str] | None = None) -> list[tuple[PaperCell, int, bool, Config]]:
    """Every (cell, seed, cml, config) to obtain, each config validated; ``steps`` caps ``train.steps``.

    Raises:
        ConfigError: A needed config file is missing (all of them are named), or a cell's settings are invalid;
            raised before anything is trained.
    """
    from cmlgraph.train.trainer import prepare

    skip = skip or {}
    todo = [c for c in cells if c.id not in skip]
    missing = sorted({c.config for c in todo if not (Path(configs_dir) / c.config).is_file()})
    if missing:
        raise ConfigError(_missing_message(missing, Path(configs_dir)))
    if runs is not None and runs < 1:
        raise ConfigError(f"--runs {runs}: give at least 1 run per cell")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: give at least 1 meta-iteration")
    plan = []
    for cell in todo:
        for seed in range(runs if runs is not None else DEFAULT_RUNS[cell.experiment]):
            for cml in (False, True):
                cfg = cell_config(cell, cml, seed, Path(configs_dir), overrides)
                if steps is not None and int(prepare(cfg).train.steps) > steps:
                    cfg.train.steps = steps
                prepare(cfg)  # every cell is validated before any is trained
                plan.append((cell, seed, cml, cfg))
    return plan


def run_reproduce(cells: Sequence[PaperCell], runs_dir: str | Path, runs: int | None = None,
                  steps: int | None = None, overrides: dict[str, dict[str, Any]] | None = None,
                  configs_dir: str | Path = PAPER_CONFIGS, data_root: str | None = None,
                  train_fn: Callable[[Config], Any] | None = None,
                  log: Callable[[str], None] = print, console: Any = None,
                  parallel_runs: int = 1) -> list[CellResult]:
    """Train what is missing, reuse what is finished (as ``compare`` does), and pair each cell's arms.

    Args:
        cells: The cells to run (:func:`cmlgraph.paper.cells.select_cells`).
        runs_dir: Where runs are found or trained.
        runs: Seeds 0..runs−1 per cell (default: 5 for Table 3, as the paper; 3 for the sinusoid).
        steps: Cap on every run's meta-iterations.
        overrides: Further config overrides of every run (e.g. ``train.test_tasks``).
        configs_dir: The paper's config folder.
        data_root: Raw data root of the graphs (also used for the availability check).
        train_fn: Trains a config, returns its run folder (default: the trainer, without progress bars).
        log: Progress lines.
        console: Where runs trained together show their progress bars (``None``: none).
        parallel_runs: Train up to this many missing runs of one shape together in one process
            (:func:`cmlgraph.compare.obtain_runs`; 1: one after another).

    Returns:
        One result per cell, in order; cells whose data is missing carry ``skipped`` and no statistics.
    """
    runs_dir = Path(runs_dir)
    if data_root is not None:
        overrides = {**(overrides or {}), "data": {**(overrides or {}).get("data", {}), "data_root": data_root}}
    skip = data_status(cells, data_root)
    for cell_id, reason in skip.items():
        log(f"not running {cell_id}: {reason}")
    plan = plan_runs(cells, runs, Path(configs_dir), overrides, steps, skip)
    runs_dir.mkdir(parents=True, exist_ok=True)
    items = [(cfg, f"{cell.slug}-{'cml' if cml else 'base'}-s{seed}", lambda m, i=i: log(f"[{i}/{len(plan)}] {m}"))
             for i, (cell, seed, cml, cfg) in enumerate(plan, 1)]
    paths = obtain_runs(items, runs_dir, train_fn, console, parallel_runs)
    found = {(cell.id, seed, cml): path for (cell, seed, cml, _), path in zip(plan, paths, strict=True)}
    results = []
    for cell in cells:
        if cell.id in skip:
            results.append(CellResult(cell, skipped=skip[cell.id]))
            continue
        seeds = sorted({s for (cid, s, _) in found if cid == cell.id})
        pairs = [(found[(cell.id, s, False)], found[(cell.id, s, True)]) for s in seeds]
        from cmlgraph.train.trainer import prepare

        paper = prepare(cell_config(cell, False, 0, Path(configs_dir))).train  # no --steps / --test-tasks
        results.append(CellResult(cell, paired_stats(pairs), pairs,
                                  paper_settings={"steps": int(paper.steps), "test_tasks": int(paper.test_tasks)}))
    return results


def _metric(cell: PaperCell) -> str:
    return "mse" if cell.experiment == "sinusoid" else "accuracy"


def _paper_diff(cell: PaperCell) -> float | None:
    return None if cell.paper_base is None or cell.paper_cml is None else round(cell.paper_cml - cell.paper_base, 4)


def _num(value: float | None, metric: str) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if metric == "accuracy" else f"{value:.3f}"


def _ours(mc: tuple[float, float | None], metric: str, sign: bool = False) -> str:
    """``mean ± ci`` in the table's unit; without a CI (one run per arm) "(1 run, no CI)", never a false ± 0."""
    scale = 100.0 if metric == "accuracy" else 1.0
    mean = mc[0] * scale
    digits = 2 if metric == "accuracy" else 3
    spread = f" ± {mc[1] * scale:.{digits}f}" if mc[1] is not None else " (1 run, no CI)"
    return f"{'+' if sign and mean >= 0 else ''}{mean:.{digits}f}{spread}"


def _tlp100(runs: Sequence[Path]) -> float | None:
    """Mean over runs of TLP's 100-task figure (``tlp100_mean`` in summary.json), if every run has it."""
    vals = [json.loads((r / "summary.json").read_text()).get("tlp100_mean") for r in runs]
    return 100.0 * sum(vals) / len(vals) if vals and all(v is not None for v in vals) else None


def _row(res: CellResult) -> dict[str, Any]:
    c, p = res.cell, res.paired
    metric = _metric(c)
    scale = 100.0 if metric == "accuracy" else 1.0
    row: dict[str, Any] = {
        "experiment": c.experiment, "id": c.id, "dataset": c.dataset, "ways": c.ways, "shots": c.shots,
        "algorithm": c.algo, "unit": "accuracy %" if metric == "accuracy" else "MSE",
        "paper_base": c.paper_base, "paper_cml": c.paper_cml, "paper_diff": _paper_diff(c),
        "base_mean": None, "base_ci95": None, "cml_mean": None, "cml_ci95": None, "diff_mean": None,
        "diff_ci95": None, "diff_ci95_tasks": None, "runs": 0, "paired_tasks": 0, "base_tlp100": None,
        "cml_tlp100": None,
        "base_runs": "", "cml_runs": "", "status": res.skipped or "ran",
    }
    if p is not None:
        for arm, mc in (("base", p.base), ("cml", p.cml), ("diff", p.diff_seeds)):
            ci = seed_ci(mc, p.seeds)  # over seeds (t interval); none with one run
            row[f"{arm}_mean"], row[f"{arm}_ci95"] = mc[0] * scale, (None if ci is None else ci * scale)
        row["diff_ci95_tasks"] = p.diff[1] * scale  # the same mean difference, CI over the pooled test tasks
        row.update(runs=p.seeds, paired_tasks=p.tasks, base_runs=";".join(p.base_runs),
                   cml_runs=";".join(p.cml_runs), base_tlp100=_tlp100([a for a, _ in res.pairs]),
                   cml_tlp100=_tlp100([b for _, b in res.pairs]))
    return row


def markdown(results: Sequence[CellResult], published: dict[str, Any] | None = None) -> str:
    """The ``reproduce.md`` text: one row per cell, ours beside the paper's, then the sources."""
    pub = published or load_published()
    lines = ["| experiment | setting | method | unit | paper | ours | paper + CML | ours + CML | paper CML − base "
             "| ours CML − base (paired over runs) | (CI over test tasks) | runs | tasks |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        c, p = res.cell, res.paired
        metric = _metric(c)
        unit = "accuracy %" if metric == "accuracy" else "MSE"
        paper_diff = _paper_diff(c)
        pd = "—" if paper_diff is None else f"{'+' if paper_diff >= 0 else ''}{paper_diff:.2f}"
        if p is None:
            ours = [f"not run: {res.skipped}", "", "", "", "0", "0"]
        else:
            ours = [_ours((p.base[0], seed_ci(p.base, p.seeds)), metric),
                    _ours((p.cml[0], seed_ci(p.cml, p.seeds)), metric),
                    _ours((p.diff_seeds[0], seed_ci(p.diff_seeds, p.seeds)), metric, sign=True),
                    f"± {_scaled(p.diff[1], metric)}", str(p.seeds), str(p.tasks)]
        lines.append(f"| {c.experiment} | {c.setting} | {ALGO_LABELS.get(c.algo, c.algo)} | {unit} | "
                     f"{_num(c.paper_base, metric)} | {ours[0]} | {_num(c.paper_cml, metric)} | {ours[1]} | {pd} | "
                     f"{ours[2]} | {ours[3]} | {ours[4]} | {ours[5]} |")
    tlp = [(r, base, cml) for r in results if r.pairs and (base := _tlp100([a for a, _ in r.pairs])) is not None
           and (cml := _tlp100([b for _, b in r.pairs])) is not None]
    if tlp:  # the protocol's own figure, for comparison only: TLP scores the best model on 100 test tasks
        lines += ["", "TLP's own figure (mean over the runs of each run's accuracy % on TLP's 100 test tasks; the "
                  "table above uses our fixed test tasks):", "",
                  "| setting | method | paper | ours, TLP's 100 tasks | paper + CML | ours + CML, TLP's 100 tasks |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r.cell.setting} | {ALGO_LABELS.get(r.cell.algo, r.cell.algo)} | "
                  f"{_num(r.cell.paper_base, 'accuracy')} | {base:.2f} | {_num(r.cell.paper_cml, 'accuracy')} | "
                  f"{cml:.2f} |" for r, base, cml in tlp]
    reduced = [f"- {r.cell.id}: {'; '.join(d)}" for r in results if r.pairs and (d := r.deviations())]
    warned = [f"- {r.cell.id}: {w}" for r in results if r.pairs for w in r.warnings()]
    if reduced:
        lines += ["", "**Not the paper's settings** (do not set these rows beside the paper's numbers):", *reduced]
    if warned:
        lines += ["", "**Warnings of the runs** (from their `summary.json`):", *warned]
    notes = ["Ours: mean ± 95% Student-t CI (t₀.₉₇₅,ₙ₋₁·sd/√runs) over the runs' test means, each run on its "
             "seed's fixed test tasks (shared by both arms). CML − base pairs the arms run by run (seed by seed): its "
             "CI includes the run-to-run variation of training, so it is the one to judge CML by. The next column is "
             "the CI of the same mean difference over the pooled per-task differences, which covers only the "
             "sampling of test tasks. Accuracy: higher is better; MSE: lower is better."]
    experiments = {r.cell.experiment for r in results}
    if "table3" in experiments:
        t = pub["table3"]
        notes.append(f"Paper, Table 3: {t['source']}. {' '.join(t['note'].split())}")
    if "sinusoid" in experiments:
        s = pub["sinusoid"]
        notes.append(f"Paper, sinusoid: {s['source']}. {' '.join(s['note'].split())}")
    notes.append(f"Source: {pub['paper']['citation']} (arXiv {pub['paper']['arxiv']}).")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def write_reproduce(results: Sequence[CellResult], out_dir: str | Path, published: dict[str, Any] | None = None,
                    figure_seed: int = 0) -> list[Path]:
    """Write ``reproduce.md``, ``reproduce.csv`` and, with sinusoid results, ``figure2.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(results, published)
    atomic_write(out / "reproduce.md", lambda f: f.write(md.encode()))
    write_csv(out / "reproduce.csv", [_row(r) for r in results])
    written = [out / "reproduce.md", out / "reproduce.csv"]
    sine = {r.cell.shots: r.pairs[0] for r in results if r.cell.experiment == "sinusoid" and r.pairs}
    if sine:
        from cmlgraph.paper.figure2 import plot_figure2

        plot_figure2(sine, out / "figure2.png", seed=figure_seed)
        written.append(out / "figure2.png")
    return written


__all__ = ["CellResult", "cell_config", "data_status", "markdown", "plan_runs", "run_reproduce", "write_reproduce"]
