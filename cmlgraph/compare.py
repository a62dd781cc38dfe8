"""``cmlgraph compare``: each base algorithm with and without CML, per domain, paired over seeds and tasks.

Runs that are missing are trained; a finished run whose resolved config matches is reused, whatever its
folder name (execution strategies that give the same results, ``data.subgraph``, ``data.subgraph_threshold`` and
``train.batched``, are not compared). Both arms of a seed share the seed's fixed test tasks, so the difference
CML − base is paired task by task; its mean and 95% CI pool the per-task differences of all seeds.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cmlgraph.config import Config, apply_overrides, from_yaml
from cmlgraph.errors import ConfigError
from cmlgraph.train.io import atomic_write
from cmlgraph.train.pairing import check_same_tasks, run_scores
from cmlgraph.train.stats import mean_ci95

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

#: Domain name → (config file in configs/, overrides). Any other name is taken as a graph dataset.
PRESETS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "sinusoid": ("sinusoid.yaml", {}),
    "omniglot": ("omniglot.yaml", {}),
    "digits": ("digits.yaml", {}),
    "amazon-clothing": ("graph-table.yaml", {"data": {"graph": "amazon-clothing", "allow_partial": True}}),
    "cora": ("graph-table.yaml", {"data": {"graph": "cora", "ways": 2}}),
    "citeseer": ("graph-table.yaml", {"data": {"graph": "citeseer", "ways": 2}}),
}


#: Domains of ``compare`` that are not graphs (their preset names the task).
TASK_DOMAINS = ("sinusoid", "omniglot", "digits")


def check_domains(domains: Sequence[str]) -> None:
    """Refuse a domain that is neither a task domain nor a known graph (a registered dataset or a user's graph
    registered in this process), before anything is trained or written.

    Why: any other name used to be taken for a graph and failed only at its first run, with a message that listed
    the graphs but not the task domains, after printing notes about a graph preset.

    Raises:
        ConfigError: Naming the bad domain and every valid one.
    """
    from cmlgraph.domains.graph import CUSTOM_GRAPHS
    from cmlgraph.graphs.registry import dataset_names

    graphs = [*dataset_names(), *CUSTOM_GRAPHS]
    for domain in domains:
        key = str(domain).strip().lower().replace("_", "-")
        if str(domain).endswith(".npz"):
            raise ConfigError(f"--domains: {domain!r} is a graph file; compare runs registered domains only: "
                              f"`cmlgraph leaderboard --graphs {domain} --ways W --shots K --methods maml,maml+cml` "
                              f"compares arms on a graph file")
        if domain not in PRESETS and key not in graphs and domain not in CUSTOM_GRAPHS:
            raise ConfigError(f"--domains: unknown domain {domain!r}{_closest(key, [*TASK_DOMAINS, *graphs])}; "
                              f"valid: {', '.join(TASK_DOMAINS)}, or a graph: {', '.join(graphs)}")


def check_algos(algos: Sequence[str]) -> None:
    """Refuse an algorithm name that is not registered, naming ``--algos`` (the flag the user gave) and the closest
    valid name, before anything is trained or written (each cell's config check would name ``--algo``).

    Raises:
        ConfigError: Naming the bad name and every valid one.
    """
    from cmlgraph.algorithms.registry import ALGORITHMS

    for algo in algos:
        if algo not in ALGORITHMS:
            raise ConfigError(f"--algos: unknown algorithm {algo!r}{_closest(str(algo), list(ALGORITHMS))}; valid: "
                              f"{', '.join(ALGORITHMS)}")


def _closest(name: str, valid: Sequence[str]) -> str:
    """`` (did you mean 'X'?)`` for the valid name closest to ``name``, or nothing."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def domain_config(domain: str, algo: str, cml: bool, seed: int, overrides: dict[str, dict[str, Any]] | None = None
                  ) -> Config:
    """The config of one cell of the comparison."""
    file, preset = PRESETS.get(domain, ("graph-table.yaml", {"data": {"graph": domain}}))
    path = CONFIGS / file
    cfg = from_yaml(path) if path.is_file() else Config()
    apply_overrides(cfg, preset, f"preset {domain!r}")
    apply_overrides(cfg, {"algo": {"algo": algo, "cml": cml}, "train": {"seed": seed}}, "compare")
    if overrides:
        apply_overrides(cfg, overrides, "compare overrides")
    return cfg


#: Keys never named as a difference from ``cmlgraph train``: the cell's identity, where data is read, and execution
#: strategies with the same results (as in :func:`_key`).
_IDENTITY = {("data", "task"), ("data", "graph"), ("data", "data_root"), ("data", "subgraph"),
             ("data", "subgraph_threshold"), ("algo", "algo"), ("algo", "cml"), ("train", "seed"), ("train", "batched"),
             ("train", "prefetch"), ("train", "prefetch_workers")}


def train_config(cfg: Config, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """The config ``cmlgraph train`` gives the same task, graph, algorithm, arm and seed as the cell ``cfg`` (its
    defaults), with the same command-line ``overrides``."""
    base = Config()
    data = {"task": cfg.data.task, **({"graph": cfg.data.graph} if cfg.data.task == "graph" else {})}
    apply_overrides(base, {"data": data, "algo": {"algo": cfg.algo.algo, "cml": cfg.algo.cml},
                           "train": {"seed": cfg.train.seed}}, "train defaults")
    if overrides:
        apply_overrides(base, overrides, "compare overrides")
    return base


def preset_overrides(cfg: Config, overrides: dict[str, dict[str, Any]] | None = None
                     ) -> dict[str, tuple[Any, Any]]:
    """The settings in which the cell ``cfg`` (its preset file and preset) differs from ``cmlgraph train``'s
    defaults: ``section.key`` → (compare's value, train's value).

    Why: ``compare`` and ``train`` must not silently disagree (issue 19: compare's Cora trained on raw features,
    train's on row-normalised ones); the difference is said in the console and in ``compare.md``. An unset
    ``data.features`` of a registered graph is its default (:data:`cmlgraph.graphs.features.DATASET_FEATURES`).
    """
    import copy

    from cmlgraph.train.trainer import prepare

    mine = prepare(copy.deepcopy(cfg)).to_dict()
    theirs = prepare(train_config(cfg, overrides)).to_dict()
    if cfg.data.task == "graph":
        from cmlgraph.graphs.features import DATASET_FEATURES

        for d in (mine, theirs):
            d["data"]["features"] = d["data"].get("features") or DATASET_FEATURES.get(str(cfg.data.graph))
    return {f"{section}.{key}": (value, theirs.get(section, {}).get(key))
            for section, values in mine.items() if section != "run" for key, value in values.items()
            if (section, key) not in _IDENTITY and value != theirs.get(section, {}).get(key)}


def describe_overrides(domain: str, diffs: dict[str, tuple[Any, Any]], algos: Sequence[str] = ()) -> str:
    """One line naming where compare's cell differs from ``cmlgraph train`` (empty when it does not); ``algos``
    names the algorithms it is about where they differ (``cora (maml): ...``)."""
    if not diffs:
        return ""
    file = PRESETS.get(domain, ("graph-table.yaml", {}))[0]
    def unset(key: str) -> str:  # what an unset setting means for `cmlgraph train`
        return "chosen on validation" if key == "model.layers" else "default"

    what = ", ".join(f"{key.split('.', 1)[1]} {mine} (train: {unset(key) if train is None else train})"
                     for key, (mine, train) in diffs.items())
    who = f"{domain} ({', '.join(algos)})" if algos else domain
    return f"{who}: compare's preset (configs/{file}) differs from `cmlgraph train`'s defaults: {what}"


def _key(cfg: Config) -> str:
    from cmlgraph.train.trainer import prepare

    d = prepare(cfg).to_dict()
    d.pop("run")
    d["data"].pop("data_root", None)
    # Execution strategies with the same results (tested equal): they do not make a run different.
    for section, key in (("data", "subgraph"), ("data", "subgraph_threshold"), ("train", "batched"),
                         ("train", "prefetch"), ("train", "prefetch_workers")):
        d[section].pop(key, None)
    return json.dumps(d, sort_keys=True)


def _saved_key(folder: Path) -> str | None:
    """The resolved-config key (:func:`_key`) of the run saved in ``folder``; ``None`` when unreadable."""
    from cmlgraph.graphs.features import pin_legacy_features

    try:
        path = folder / "config.yaml"
        stamp = (str(path.resolve()), path.stat().st_mtime_ns)
        if stamp not in _SAVED_KEYS:  # resolving a config costs ~0.1 s: once per saved run, not per lookup
            have = Config()
            saved = yaml.safe_load(path.read_text())
            pin_legacy_features(apply_overrides(have, saved, "run config"), saved)
            _SAVED_KEYS[stamp] = _key(have)
        return _SAVED_KEYS[stamp]
    except Exception:  # noqa: BLE001 - an unreadable folder is simply not reused
        return None


def find_run(runs_dir: Path, cfg: Config) -> Path | None:
    """A finished run under ``runs_dir`` whose resolved config equals ``cfg`` (run section aside)."""
    want = _key(cfg)
    for summary in sorted(runs_dir.glob("*/summary.json")):
        if _saved_key(summary.parent) == want:
            return summary.parent
    return None


def find_stopped_run(runs_dir: Path, cfg: Config) -> tuple[Path, int] | None:
    """An unfinished run of ``cfg``'s settings under ``runs_dir`` that ``--resume`` can continue, and its checkpoint
    step: stopped by Ctrl-C, SIGTERM or a kill after its first checkpoint, not running (its folder's lock free), not
    failed numerically (resuming would repeat the failure). Of several, the one furthest on.

    Why: ``compare``, ``reproduce`` and ``leaderboard`` run again after an interruption continue such a run instead
    of training it again from step 0 (its folder used to be replaced), so stopping a long comparison loses at most
    the steps since each run's last checkpoint (with Ctrl-C, none).
    """
    from cmlgraph.runs import FAILED_FILE, _locked, checkpoint_step

    want, best = _key(cfg), None
    for config in sorted(runs_dir.glob("*/config.yaml")):
        folder = config.parent
        if (folder / "summary.json").exists() or (folder / FAILED_FILE).exists() or _locked(folder):
            continue
        try:
            step = checkpoint_step(folder)
        except ValueError:  # an unreadable checkpoint: trained again, as before
            continue
        if step is not None and (best is None or step > best[1]) and _saved_key(folder) == want:
            best = (folder, step)
    return best


#: (config.yaml path, mtime) → resolved-config key of a saved run, so that planning N runs against M saved ones
#: resolves M + N configs, not M × N.
_SAVED_KEYS: dict[tuple[str, int], str] = {}


@dataclass
class Paired:
    """Paired statistics of (base run, CML run) pairs that share their seeds' fixed test tasks.

    ``base`` and ``cml`` are (mean, 95% Student-t CI half-width) over the per-seed test means. ``diff_seeds`` is the
    paired difference CML − base over seeds (one difference of test means per seed, t interval): the CI that
    answers "does CML help", since it includes the run-to-run variation of training. ``diff`` pools the per-task
    differences of all pairs (the same mean; its CI covers only the sampling of test tasks, so it is narrower).
    Accuracy is a fraction, as in ``summary.json``.
    """

    metric: str
    base: tuple[float, float]
    cml: tuple[float, float]
    diff: tuple[float, float]
    seeds: int
    tasks: int
    base_runs: list[str]
    cml_runs: list[str]
    diff_seeds: tuple[float, float] = (0.0, 0.0)
    #: Runs (of either arm) that meta-trained but kept their step-0 parameters: no validation beat the start.
    kept_start: list[str] = field(default_factory=list)


@dataclass
class Cell(Paired):
    """One domain × algorithm row of the comparison: the paired statistics of its runs."""

    domain: str = ""
    algorithm: str = ""
    #: Where the cell's settings differ from ``cmlgraph train``'s defaults (:func:`describe_overrides`).
    overrides: str = ""
    #: A training-free baseline (``sgc-proto``, ...): it has no CML arm, and its row stands beside the others as a
    #: reference (its ``cml`` and ``diff`` fields repeat the base arm against itself and are not shown).
    training_free: bool = False

    def row(self) -> dict[str, Any]:
        """A flat dict for CSV (a training-free row's CML and difference columns are empty)."""
        arm = not self.training_free
        return {"domain": self.domain, "algorithm": self.algorithm, "metric": self.metric,
                "base_mean": self.base[0], "base_ci95": seed_ci(self.base, self.seeds),
                "cml_mean": self.cml[0] if arm else None, "cml_ci95": seed_ci(self.cml, self.seeds) if arm else None,
                "diff_mean": self.diff[0] if arm else None,
                "diff_ci95": seed_ci(self.diff_seeds, self.seeds) if arm else None,
                "diff_ci95_tasks": self.diff[1] if arm else None, "seeds": self.seeds,
                "paired_tasks": self.tasks if arm else None, "base_runs": ";".join(self.base_runs),
                "cml_runs": ";".join(self.cml_runs) if arm else "", "training_free": self.training_free}


def paired_stats(pairs: Sequence[tuple[Path, Path]]) -> Paired:
    """Mean ± 95% CI of each arm over seeds and of the per-task paired difference CML − base.

    Raises:
        ConfigError: The two runs of a pair have different test tasks (:func:`check_same_tasks`).
    """
    base_means, cml_means, diffs = [], [], []
    kept: list[str] = []
    metric = ""
    for base, cml in pairs:
        sb, sc = json.loads((base / "summary.json").read_text()), json.loads((cml / "summary.json").read_text())
        metric = sb["metric"]
        base_means.append(sb["mean"])
        cml_means.append(sc["mean"])
        check_same_tasks(base, cml)
        xb, xc = run_scores(base), run_scores(cml)
        diffs += [c - b for b, c in zip(xb, xc, strict=True)]
        kept += [run.name for run, summary in ((base, sb), (cml, sc)) if kept_its_start(summary)]
    seed_diffs = [c - b for b, c in zip(base_means, cml_means, strict=True)]
    return Paired(metric, mean_ci95(base_means), mean_ci95(cml_means), mean_ci95(diffs), len(pairs), len(diffs),
                  [p[0].name for p in pairs], [p[1].name for p in pairs], diff_seeds=mean_ci95(seed_diffs),
                  kept_start=list(dict.fromkeys(kept)))


def kept_its_start(summary: dict[str, Any]) -> bool:
    """Whether a run meta-trained (steps run > 0) but its model is its step-0 start: the best validation score was
    the start's (``best_step`` 0), so its test score is that of an untrained model."""
    steps = summary.get("steps_run", summary.get("steps")) or 0
    return int(steps) > 0 and summary.get("best_step") == 0


def kept_start_note(who: str, kept: Sequence[str], difference: str) -> str:
    """The note under a table whose runs ``kept`` (``who``: how many of which) kept their untrained start, so that
    ``difference`` (its verb included) compares starts (:func:`kept_its_start`)."""
    return (f"Note: {who} kept their step-0 parameters (no validation after the start beat it: {', '.join(kept)}), "
            f"so their scores are an untrained model's and {difference} starts, not meta-learning; train longer "
            f"(--steps) or check --meta-lr.")


def build_cell(domain: str, algo: str, pairs: Sequence[tuple[Path, Path]], training_free: bool = False) -> Cell:
    """Aggregate (base run, CML run) pairs of the same seeds into a row (a training-free baseline: its runs paired
    with themselves, ``training_free`` set)."""
    return Cell(**vars(paired_stats(pairs)), domain=domain, algorithm=algo, training_free=training_free)


def trains(algo: str) -> bool:
    """Whether the registered algorithm ``algo`` meta-trains (a training-free baseline has no CML arm)."""
    from cmlgraph.algorithms.registry import ALGORITHMS

    return bool(ALGORITHMS[algo].trains)


def obtain_run(cfg: Config, runs_dir: Path, name: str, train_fn: Callable[[Config], Any] | None = None,
               log: Callable[[str], None] = print, console: Any = None) -> Path:
    """The finished run of ``cfg`` under ``runs_dir``: reused if one matches (:func:`find_run`), else trained.

    A stopped run of ``cfg``'s settings with a checkpoint (Ctrl-C, SIGTERM, a kill) is resumed to its end
    (:func:`find_stopped_run`). A new run is written to ``runs_dir/name``. An *unfinished* folder of that name (a
    killed run of other settings, or without a checkpoint) is replaced; a
    *finished* one never is: it holds a run of other settings (e.g. another ``--steps``), so the new run gets the
    next free name (``name-1``, ...) and both are kept. ``train_fn`` trains a config and returns its run folder
    (default: :func:`cmlgraph.train.trainer.train`, with its progress bars on ``console`` when one is given).
    """
    from cmlgraph.train.trainer import train

    run = find_run(runs_dir, cfg)
    if run is not None:
        log(f"reusing {run}")
        return Path(run)
    resumed = _resume_stopped(cfg, runs_dir, log, console)
    if resumed is not None:
        return resumed
    _claim(cfg, runs_dir, name, log)
    return Path((train_fn or (lambda c: train(c, console, progress=console is not None)[0]))(cfg))


def _resume_stopped(cfg: Config, runs_dir: Path, log: Callable[[str], None], console: Any) -> Path | None:
    """Continue a stopped run of ``cfg``'s settings (:func:`find_stopped_run`) to its end; ``None`` when none."""
    from cmlgraph.train.trainer import resume

    stopped = find_stopped_run(runs_dir, cfg)
    if stopped is None:
        return None
    folder, step = stopped
    log(f"resuming {folder} from its checkpoint at step {step} (stopped before it finished)")
    return Path(resume(folder, console, progress=console is not None)[0])


def _claim(cfg: Config, runs_dir: Path, name: str, log: Callable[[str], None], group: str = "") -> None:
    """Point ``cfg`` at ``runs_dir/name`` as :func:`obtain_run` does (a killed run's folder replaced, a finished
    one kept) and say that it is trained."""
    existing = runs_dir / name
    finished = (existing / "summary.json").is_file()
    cfg.run.runs_dir = str(runs_dir)
    cfg.run.name = name
    cfg.run.overwrite = existing.is_dir() and not finished  # never delete a finished run
    log(f"training {name}{group}" + (f" ({existing} holds a finished run of other settings: kept; this run takes "
                                     f"the next free name)" if finished else ""))


def obtain_runs(items: Sequence[tuple[Config, str, Callable[[str], None]]], runs_dir: Path,
                train_fn: Callable[[Config], Any] | None = None, console: Any = None, parallel_runs: int = 1
                ) -> list[Path]:
    """:func:`obtain_run` for each ``(cfg, name, log)``, training the missing runs up to ``parallel_runs`` at a
    time in one process (``--parallel-runs``, issue 18).

    Finished runs are reused exactly as :func:`obtain_run` reuses them. The runs to train are grouped by shape
    (:func:`cmlgraph.train.parallel.group_runs`: only the seed and the arm differ), at most ``parallel_runs`` per
    group, and a group of several is trained by :func:`cmlgraph.train.parallel.train_parallel` (``train_fn`` then
    trains only the runs left alone). A run that fails stops after its group has finished the others.

    Raises:
        ConfigError: ``parallel_runs`` below 1.
    """
    from cmlgraph.train.parallel import check_parallel_runs, group_runs, raise_first_error, train_parallel
    from cmlgraph.train.trainer import train

    if check_parallel_runs(parallel_runs) == 1:
        return [obtain_run(cfg, runs_dir, name, train_fn, log, console) for cfg, name, log in items]
    out: dict[int, Path] = {}
    first: dict[str, int] = {}
    same: dict[int, int] = {}  # an item whose config an earlier missing item trains: reused from it
    for i, (cfg, _, log) in enumerate(items):
        run = find_run(runs_dir, cfg)
        if run is not None:
            log(f"reusing {run}")
            out[i] = Path(run)
        else:
            same[i] = first.setdefault(_key(cfg), i)
    todo = []
    for i, j in same.items():
        if i == j:
            resumed = _resume_stopped(items[i][0], runs_dir, items[i][2], console)  # alone, before the groups
            if resumed is not None:
                out[i] = resumed
            else:
                todo.append(i)
    for group in group_runs([items[i][0] for i in todo], parallel_runs):
        idx = [todo[j] for j in group]
        for i in idx:
            cfg, name, log = items[i]
            _claim(cfg, runs_dir, name, log, f" (together with {len(idx) - 1} more)" if len(idx) > 1 else "")
        if len(idx) == 1:
            cfg = items[idx[0]][0]
            out[idx[0]] = Path((train_fn or (lambda c: train(c, console, progress=console is not None)[0]))(cfg))
            continue
        results = train_parallel([items[i][0] for i in idx], console, progress=console is not None)
        raise_first_error(results)
        for i, r in zip(idx, results, strict=True):
            assert r.run_dir is not None
            out[i] = r.run_dir
    for i, j in same.items():
        if i != j:
            items[i][2](f"reusing {out[j]}")
            out[i] = out[j]
    return [out[i] for i in range(len(items))]


def run_compare(domains: Sequence[str], algos: Sequence[str], seeds: Sequence[int], runs_dir: str | Path,
                overrides: dict[str, dict[str, Any]] | None = None,
                train_fn: Callable[[Config], Any] | None = None, log: Callable[[str], None] = print,
                console: Any = None, parallel_runs: int = 1) -> list[Cell]:
    """Train what is missing, reuse what is finished, and aggregate the comparison.

    Each run is announced as ``[i/N]``; with a rich ``console`` the runs show their progress bars there. With
    ``parallel_runs`` N > 1, up to N missing runs of one shape train together in one process (:func:`obtain_runs`).
    """
    from cmlgraph.train.trainer import prepare

    runs_dir = Path(runs_dir)
    check_domains(domains)
    check_algos(algos)
    plan = []
    differs: dict[tuple[str, str], str] = {}
    for domain in domains:
        diffs: dict[str, dict[str, tuple[Any, Any]]] = {}
        for algo in algos:
            for seed in seeds:
                for cml in (False, True) if trains(algo) else (False,):  # a baseline has no CML arm
                    cfg = domain_config(domain, algo, cml, seed, overrides)
                    prepare(cfg)  # validate every cell before training any
                    plan.append((domain, algo, seed, cml, cfg))
            diffs[algo] = preset_overrides(cfg, overrides)
        # said once per distinct difference, before any training, so no one mistakes these runs for `cmlgraph
        # train`'s; where the algorithms' differences differ (train's meta-lr is MAML's own), each names its own
        distinct = {json.dumps(d, sort_keys=True, default=str) for d in diffs.values()}
        for algo in algos:
            same = [a for a in algos if diffs[a] == diffs[algo]]
            line = describe_overrides(domain, diffs[algo], same if len(distinct) > 1 else ())
            if line and line not in differs.values():
                log(f"note: {line}")
            differs[(domain, algo)] = line
    items = [(cfg, f"{domain}-{algo}-{'cml' if cml else 'base'}-s{seed}",
              lambda m, i=i: log(f"[{i}/{len(plan)}] {m}")) for i, (domain, algo, seed, cml, cfg) in enumerate(plan, 1)]
    runs_dir.mkdir(parents=True, exist_ok=True)  # only once every config is valid: a bad one leaves no folder
    paths = obtain_runs(items, runs_dir, train_fn, console, parallel_runs)
    found = {(domain, algo, seed, cml): path for (domain, algo, seed, cml, _), path in zip(plan, paths, strict=True)}
    cells = [build_cell(d, a, [(found[(d, a, s, False)], found[(d, a, s, trains(a))]) for s in seeds],
                        training_free=not trains(a))
             for d in domains for a in algos]
    for c in cells:
        c.overrides = differs[(c.domain, c.algorithm)]
    return cells


def _fmt(mean: float, ci: float | None, metric: str) -> str:
    """``mean ± ci`` in the metric's unit; ``ci=None`` (one seed: no spread to measure) reads "(1 seed, no CI)"; a
    CI that rounds to zero (every seed gave the same value) says so rather than read as perfect precision."""
    scale, digits = (100.0, 2) if metric == "accuracy" else (1.0, 3)
    if ci is None:
        return f"{scale * mean:.{digits}f} (1 seed, no CI)"
    if round(scale * ci, digits) == 0:
        return f"{scale * mean:.{digits}f} ± {scale * ci:.{digits}f} (every seed the same)"
    return f"{scale * mean:.{digits}f} ± {scale * ci:.{digits}f}"


def _scaled(value: float, metric: str) -> str:
    """A number in the metric's unit (accuracy in %, 2 decimals; MSE 3 decimals)."""
    scale, digits = (100.0, 2) if metric == "accuracy" else (1.0, 3)
    return f"{scale * value:.{digits}f}"


def seed_ci(mc: tuple[float, float], seeds: int) -> float | None:
    """The CI of an arm's mean over seeds, or ``None`` with one seed (its 0.0 would read as "no variation")."""
    return mc[1] if seeds > 1 else None


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Atomically write ``rows`` (flat dicts with the same keys) as a CSV file with a header."""
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def write_outputs(cells: Sequence[Cell], out_dir: str | Path) -> list[Path]:
    """Write ``compare.md``, ``compare.csv`` and ``compare.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| domain | algorithm | metric | without CML | with CML | CML − base (paired over seeds) "
             "| (CI over test tasks) | seeds | tasks |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        unit = "accuracy %" if c.metric == "accuracy" else "MSE"
        base = _fmt(c.base[0], seed_ci(c.base, c.seeds), c.metric)
        if c.training_free:  # a reference row: no CML arm, nothing paired
            lines.append(f"| {c.domain} | {c.algorithm} (training-free) | {unit} | {base} | — | — | — | {c.seeds} "
                         f"| {c.tasks} |")
            continue
        lines.append(f"| {c.domain} | {c.algorithm} | {unit} | {base} | "
                     f"{_fmt(c.cml[0], seed_ci(c.cml, c.seeds), c.metric)}"
                     f" | {'+' if c.diff[0] >= 0 else ''}{_fmt(c.diff[0], seed_ci(c.diff_seeds, c.seeds), c.metric)}"
                     f" | ± {_scaled(c.diff[1], c.metric)} | {c.seeds} | {c.tasks} |")
    lines += ["", "Mean ± 95% Student-t CI over seeds (columns 4–6; column 6 pairs the arms seed by seed, so its CI "
              "includes the run-to-run variation of training: read it to judge CML). Column 7 is the CI of the same "
              "mean difference over the pooled per-task differences: it covers only the sampling of test tasks. "
              "Accuracy: higher is better; MSE: lower is better."]
    if any(c.training_free for c in cells):
        lines += ["", "A training-free baseline is not meta-trained, so it has no CML arm: its row (column 4, on the "
                  "same test tasks) is the score a meta-learned model should beat."]
    for c in cells:
        if c.kept_start and not c.training_free:
            runs = len(c.base_runs) + len(c.cml_runs)
            verb = "compares" if len(c.kept_start) == runs else "partly compares"
            lines += ["", kept_start_note(f"{len(c.kept_start)} of {runs} {c.domain} {c.algorithm} runs", c.kept_start,
                                          f"the CML − base difference {verb}")]
    notes = list(dict.fromkeys(c.overrides for c in cells if c.overrides))
    if notes:
        lines += ["", "Settings that differ from `cmlgraph train`'s defaults (the runs above are not what "
                  "`cmlgraph train` gives these domains):", "", *(f"- {n}" for n in notes)]
    md = "\n".join(lines) + "\n"
    atomic_write(out / "compare.md", lambda f: f.write(md.encode()))
    write_csv(out / "compare.csv", [c.row() for c in cells])
    _plot(cells, out / "compare.png")
    return [out / "compare.md", out / "compare.csv", out / "compare.png"]


def compare_figure(cells: Sequence[Cell]) -> Any:
    """The comparison as a figure: per domain, both arms' means ± 95% CI (top) and the paired difference
    CML − base ± its 95% CI (bottom: over seeds with several seeds, else over the pooled test tasks).

    Accuracy axes are clipped to the values accuracy can take ([0, 1] for the arms, [−1, 1] for the difference):
    a CI reaching past them is drawn to the edge, never as an impossible accuracy (issue 19).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(dict.fromkeys(c.domain for c in cells))
    fig, axes = plt.subplots(2, len(domains), figsize=(4.5 * len(domains), 6.4), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for ax, dax, domain in zip(axes[0], axes[1], domains, strict=True):
        sub = [c for c in cells if c.domain == domain]
        xs = list(range(len(sub)))
        ax.bar([x - 0.2 for x in xs], [c.base[0] for c in sub], 0.4, yerr=[c.base[1] for c in sub], capsize=3,
               label="without CML", color=["tab:gray" if c.training_free else "tab:blue" for c in sub])
        nan = float("nan")  # a training-free baseline: no CML bar, no difference bar
        ax.bar([x + 0.2 for x in xs], [nan if c.training_free else c.cml[0] for c in sub], 0.4,
               yerr=[0.0 if c.training_free else c.cml[1] for c in sub], capsize=3, label="with CML")
        ax.set_xticks(xs, [f"{c.algorithm}\n(training-free)" if c.training_free else c.algorithm for c in sub])
        ax.set_title(f"{domain} ({sub[0].metric})")
        cis = [0.0 if c.training_free else c.diff_seeds[1] if c.seeds > 1 else c.diff[1] for c in sub]
        dax.bar(xs, [nan if c.training_free else c.diff[0] for c in sub], 0.5, yerr=cis, capsize=3,
                color="tab:green")
        dax.axhline(0.0, color="black", linewidth=0.8)
        dax.set_xticks(xs, [c.algorithm for c in sub])
        over = "seeds" if all(c.seeds > 1 for c in sub) else "test tasks"
        dax.set_title(f"CML − base (paired, 95% CI over {over})", fontsize=9)
        if sub[0].metric == "accuracy":
            ax.set_ylim(0.0, 1.0)
            reach = max([abs(c.diff[0]) + ci for c, ci in zip(sub, cis, strict=True) if not c.training_free]
                        + [0.01])
            dax.set_ylim(-min(1.0, 1.2 * reach), min(1.0, 1.2 * reach))
        else:  # an MSE is never negative
            ax.set_ylim(bottom=0.0)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if any(c.training_free for c in cells):  # a gray bar: a training-free baseline's score, the bar to beat
        from matplotlib.patches import Patch

        handles, labels = [*handles, Patch(color="tab:gray")], [*labels, "training-free baseline"]
    axes[0][0].legend(handles, labels)
    fig.tight_layout()
    return fig


def _plot(cells: Sequence[Cell], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = compare_figure(cells)
    fig.savefig(path, dpi=110)
    plt.close(fig)
