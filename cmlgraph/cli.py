"""The ``cmlgraph`` command line: a thin layer over the Python API.

Every user mistake surfaces as a :class:`CmlgraphError` and is printed as one line ``error: ...`` with exit
status 2, never as a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from cmlgraph.cli_help import show_defaults, tidy_flags
from cmlgraph.config import Config, apply_overrides, from_yaml
from cmlgraph.errors import CmlgraphError, ConfigError, DataError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Few-shot node classification with gradient-based meta-learning and CML.")
datasets_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Graph datasets.")
app.add_typer(datasets_app, name="datasets")
console = Console(width=max(Console().width, 150))


def _version(value: bool) -> None:
    if value:
        from cmlgraph.provenance import cmlgraph_version

        print(f"cmlgraph {cmlgraph_version()}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the cmlgraph version and exit.")) -> None:
    """Few-shot node classification with gradient-based meta-learning and CML."""


def _overrides(**flags: Any) -> dict[str, dict[str, Any]]:
    """Map CLI flags to config sections, keeping only the flags the user gave."""
    sections = {
        "data": ("task", "graph", "data_root", "allow_partial", "split", "ways", "shots", "queries", "subgraph",
                 "features", "protocol"),
        "model": ("gnn", "hidden", "layers", "dropout", "norm", "init", "normalize"),
        "algo": ("algo", "cml", "gamma", "co_depth", "control", "inner_steps", "inner_lr", "first_order", "adapt",
                 "co_hidden", "prop_steps", "prop_alpha", "probe_c", "pretrain_epochs", "head_init", "proto_inner"),
        "train": ("steps", "meta_batch", "meta_lr", "seed", "val_every", "val_tasks", "test_tasks", "device",
                  "diag_every", "nan_policy", "patience", "prefetch", "prefetch_workers", "cuda_graphs"),
        "run": ("runs_dir", "name", "overwrite"),
    }
    out: dict[str, dict[str, Any]] = {}
    for section, keys in sections.items():
        values = {k: flags[k] for k in keys if flags.get(k) is not None}
        if values:
            out[section] = values
    return out


@app.command()
def train(
    config: Path | None = typer.Option(None, "--config", help="YAML experiment config (see configs/)."),
    task: str | None = typer.Option(None, help="Domain: graph (default), sinusoid, omniglot, digits."),
    graph: str | None = typer.Option(None, help="Graph dataset (`cmlgraph datasets list`); default synthetic. With "
                                  "--resume: the .npz (graph.save) of a cmlgraph.fit run's in-memory graph."),
    ways: int | None = typer.Option(None, help="N classes per task."),
    shots: int | None = typer.Option(None, help="K support examples per class (sinusoid: points)."),
    queries: int | None = typer.Option(None, help="Query examples per class (sinusoid: points)."),
    gnn: str | None = typer.Option(None, help="GNN: gcn, sgc, sage, gat, gin."),
    hidden: int | None = typer.Option(None, help="Hidden width of the extractor."),
    layers: int | None = typer.Option(None, help="Layers of the extractor (SGC: the propagation depth K).",
                                      show_default="2; the PCA-started SGC of a graph run: K chosen on validation "
                                                   "as sgc-proto chooses it"),
    dropout: float | None = typer.Option(None, help="Dropout of the GNN."),
    norm: str | None = typer.Option(None, help="Conv4 normalisation (images): batch (the paper's, transductive: a "
                                    "query's prediction depends on the other queries), instance, group, support."),
    init: str | None = typer.Option(None, help="Extractor init (graph): pca (SGC: principal axes of the "
                                    "propagated features, no labels), random, auto (pca for sgc)."),
    normalize: bool | None = typer.Option(None, "--normalize/--no-normalize",
                                          help="L2-normalise the extractor's features (graph MAML default: on)."),
    head_init: str | None = typer.Option(None, help="Head at each task's start: proto (Proto-MAML, class means of "
                                         "the support features; graph MAML default) or learned (MAML)."),
    proto_inner: str | None = typer.Option(None, help="With --head-init proto, the inner loop's gradient for the "
                                           "extractor: total (through the prototype head too; default) or partial "
                                           "(the head a separate variable started at the prototypes)."),
    algo: str | None = typer.Option(None, help="maml, anil, boil, maml++, sharp-maml, protonet, gmeta, ammgnn; "
                                    "training-free baselines (graph task, 0 steps): sgc-proto, label-prop, "
                                    "sgc-logreg, gcl-probe."),
    cml: bool | None = typer.Option(None, "--cml/--no-cml", help="Cooperative Meta-Learning co-learner term."),
    gamma: float | None = typer.Option(None, help="Weight γ of the co-learner loss."),
    co_depth: int | None = typer.Option(None, help="Hidden layers of the co-learner."),
    co_hidden: int | None = typer.Option(None, help="Co-learner hidden width (default: feature width)."),
    control: str | None = typer.Option(None, help="Paper controls: none, cl, noise, frozen-co (cl and frozen-co "
                                       "bring their own co-learner term: --cml/--no-cml does not change them; "
                                       "noise needs --no-cml)."),
    inner_steps: int | None = typer.Option(None, help="Inner-loop steps."),
    inner_lr: float | None = typer.Option(None, help="Inner-loop step size."),
    prop_steps: int | None = typer.Option(None, help="Baselines: propagation steps (K of S^K X; label-prop's "
                                          "iterations); default: chosen on the validation tasks."),
    prop_alpha: float | None = typer.Option(None, help="label-prop's teleport α; default: chosen on validation."),
    probe_c: float | None = typer.Option(None, help="sgc-logreg/gcl-probe: logistic regression's C (default: "
                                         "chosen on validation; gcl-probe 1.0)."),
    pretrain_epochs: int | None = typer.Option(None, help="gcl-probe: most GRACE pretraining epochs (default 200)."),
    first_order: bool | None = typer.Option(None, "--first-order/--second-order", help="Meta-gradient order."),
    adapt: str | None = typer.Option(None, help="Inner-loop groups: auto, all, head (ANIL-style), extractor."),
    meta_lr: float | None = typer.Option(None, help="Adam meta learning rate."),
    meta_batch: int | None = typer.Option(None, help="Tasks per meta-iteration."),
    steps: int | None = typer.Option(None, help="Meta-iterations."),
    seed: int | None = typer.Option(None, help="Random seed."),
    val_every: int | None = typer.Option(None, help="Validate every N steps."),
    val_tasks: int | None = typer.Option(None, help="Fixed validation tasks (default 100; fewer: a faster but noisier "
                                         "model selection)."),
    test_tasks: int | None = typer.Option(None, help="Fixed test tasks."),
    data_root: str | None = typer.Option(None, help="Raw data root (else $CMLGRAPH_DATA, else datasets/; with "
                                      "--resume, else the root the run recorded)."),
    allow_partial: bool | None = typer.Option(None, "--allow-partial", help="Run on the classes present."),
    split: str | None = typer.Option(None, help="Class split: counts 'a/b/c' or a JSON file."),
    subgraph: str | None = typer.Option(None, help="Graph execution: auto, full, khop (auto: the faster exact "
                                                    "mode; khop above data.subgraph_threshold nodes, 20,000)."),
    features: str | None = typer.Option(None, help="Feature preprocessing: raw, row (L1), standard (z-score), "
                                                    "auto (row or standard, chosen on the run's validation tasks "
                                                    "by sgc-proto: the default of sgc-proto, ProtoNet and the MAML "
                                                    "family's SGC on cora, citeseer, pubmed, amazon-computers, "
                                                    "amazon-photo); a MAML-family GCN/SAGE/GIN/GAT gets standard "
                                                    "there; else the dataset's own (row for bag-of-words)."),
    protocol: str | None = typer.Option(None, help="Preset of a published protocol filling unset settings: tlp."),
    patience: int | None = typer.Option(None, help="Stop after N validations without improvement."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:N."),
    diag_every: int | None = typer.Option(None, help="Gradient diagnostics every N steps (0: off)."),
    nan_policy: str | None = typer.Option(None, help="On NaN/inf: stop or skip the meta-batch."),
    prefetch: str | None = typer.Option(None, help="Prepare the next meta-batches (episodes, k-hop plans) in a "
                                        "worker thread while a step computes, same results: auto (on for CUDA, "
                                        "off on the CPU), on, off."),
    prefetch_workers: int | None = typer.Option(None, help="With prefetching on: meta-batches built at once, in as "
                                                "many threads (G-Meta's ball layouts gain), same results; 0 = auto "
                                                "(half the cores on CUDA, at most 8; 1 on the CPU). Given as a "
                                                "number above 1, k-hop plans are built in that many spawned "
                                                "processes (a Python script must guard its code with if __name__ == "
                                                "'__main__'; docs/cli.md)."),
    cuda_graphs: str | None = typer.Option(None, help="Replay the meta-step as a CUDA graph: auto "
                                           "(where eligible, checked once against eager), on, off (docs/gpu.md)."),
    runs_dir: str | None = typer.Option(None, help="Parent folder of run folders."),
    name: str | None = typer.Option(None, help="Run folder name."),
    overwrite: bool | None = typer.Option(None, "--overwrite", help="Replace a run folder of the same name."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue RUN_DIR from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Meta-train and evaluate; writes a run folder (config, metrics, summary, model, plots)."""
    flags = dict(locals())
    from cmlgraph.train.trainer import resume as resume_run
    from cmlgraph.train.trainer import train as train_run

    if resume is not None:  # where the data is (--data-root) and an in-memory run's graph (--graph) are not settings
        given = [k for k, v in flags.items()
                 if v is not None and k not in ("resume", "quiet", "config", "data_root", "graph")]
        if given or config is not None:
            raise ConfigError(f"--resume takes its settings from the run folder; drop "
                              f"{', '.join('--' + g.replace('_', '-') for g in given) or '--config'}")
        resume_run(resume, console, progress=not quiet, graph=graph, data_root=data_root)
        return
    if graph is not None:
        if task not in (None, "graph"):
            raise ConfigError(f"--graph {graph} selects the graph task, but --task {task} was given; drop one")
        flags["task"] = "graph"
    cfg = from_yaml(config) if config is not None else Config()
    cfg = apply_overrides(cfg, _overrides(**flags), "command line")
    _refuse_flags_of_other_tasks(cfg.data.task, flags)
    try:
        train_run(cfg, console, progress=not quiet)
    except ConfigError as exc:  # "train.test_tasks = 0" also names the flag the user typed: --test-tasks
        raise ConfigError(_with_flag_names(str(exc), set(flags))) from None


def _with_flag_names(message: str, flag_names: set[str]) -> str:
    """``train.test_tasks = 0`` → ``--test-tasks (train.test_tasks) = 0`` for config keys that are flags."""
    import re

    def name(m: re.Match[str]) -> str:
        key = m.group(2)
        return f"--{key.replace('_', '-')} ({m.group(0)})" if key in flag_names else m.group(0)

    return re.sub(r"\b(data|model|algo|train)\.([a-z_]+)\b", name, message)


#: Flags that only a task's own model reads: given with another task they would be silently ignored.
_ONLY_FOR = {"gnn": {"graph"}, "dropout": {"graph"}, "subgraph": {"graph"}, "features": {"graph"},
             "init": {"graph"},
             "norm": {"omniglot", "digits"},
             "protocol": {"graph"}, "ways": {"graph", "omniglot", "digits"}, "split": {"graph", "omniglot", "digits"}}


def _refuse_flags_of_other_tasks(task: str, flags: dict[str, object]) -> None:
    """Raise when a flag typed on the command line does nothing for ``task`` (e.g. ``--gnn`` with sinusoid).

    Raises:
        ConfigError: Naming each such flag and the tasks it is for.
    """
    unused = [k for k, tasks in _ONLY_FOR.items() if flags.get(k) is not None and task not in tasks]
    if unused:
        what = "; ".join(f"--{k.replace('_', '-')} is for {'/'.join(sorted(_ONLY_FOR[k]))}" for k in unused)
        it = "it (it would be" if len(unused) == 1 else "them (they would be"
        raise ConfigError(f"{what}, not --task {task}: drop {it} ignored)")


# effective defaults in --help
show_defaults(train, {"config": "none", "resume": "none",
                      "meta_lr": "0.001; 0.0001 for a MAML-family graph run from the PCA start (--init pca)"})


def _csv_list(text: str, cast: Any = str) -> list[Any]:
    """A comma-separated flag as a list (``cast`` each item); raises ConfigError when empty or not castable."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"empty list {text!r}; give comma-separated values")
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise ConfigError(f"{text!r} is not a comma-separated list of integers") from None


def _batch_overrides(steps: int | None, test_tasks: int | None, data_root: str | None,
                     device: str | None = None) -> dict[str, dict[str, Any]]:
    """The config overrides of every run of ``compare``/``leaderboard``/``reproduce`` from their --steps,
    --test-tasks, --data-root and --device."""
    overrides: dict[str, dict[str, Any]] = {}
    if device is not None:
        overrides.setdefault("train", {})["device"] = device
    if steps is not None:
        overrides.setdefault("train", {})["steps"] = steps
    if test_tasks is not None:
        overrides.setdefault("train", {})["test_tasks"] = test_tasks
    if data_root is not None:
        overrides.setdefault("data", {})["data_root"] = data_root
    return overrides


@app.command()
def compare(
    domains: str = typer.Option("sinusoid,digits", help="Comma-separated: sinusoid, omniglot, digits, or graphs."),
    algos: str = typer.Option("maml", help="Comma-separated base algorithms."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds."),
    runs_dir: Path = typer.Option(Path("runs/compare"), help="Where runs are found or trained."),
    out: Path | None = typer.Option(None, help="Folder for compare.md/csv/png (default: RUNS_DIR)."),
    steps: int | None = typer.Option(None, help="Override meta-iterations of every run."),
    test_tasks: int | None = typer.Option(None, help="Override test tasks of every run."),
    data_root: str | None = typer.Option(None, help="Raw data root."),
    device: str | None = typer.Option(None, help="Device of every run trained (cpu, cuda, cuda:N; default: each "
                                                 "run's config, cpu)."),
    parallel_runs: int = typer.Option(1, help="Train up to N missing runs of one shape (seeds, CML arms) together "
                                              "in one process; 1: one after another (docs/gpu.md)."),
) -> None:
    """Each algorithm with and without CML per domain; trains missing runs, reuses finished ones."""
    from cmlgraph.compare import run_compare, write_outputs
    from cmlgraph.train.parallel import check_parallel_runs

    check_parallel_runs(parallel_runs)
    overrides = _batch_overrides(steps, test_tasks, data_root, device)
    with _again_resumes():
        cells = run_compare(_csv_list(domains), _csv_list(algos), _csv_list(seeds, int), runs_dir, overrides,
                            log=console.print, console=console, parallel_runs=parallel_runs)
    for path in write_outputs(cells, out or runs_dir):
        console.print(f"wrote {path}")
    console.print((Path(out or runs_dir) / "compare.md").read_text())


@app.command()
def leaderboard(
    graphs: str = typer.Option("cora,citeseer,amazon-computers,amazon-photo,coauthor-cs",
                               help="Comma-separated graphs: `cmlgraph datasets list` names or .npz files saved "
                                    "with graph.save (their runs are named by the file name)."),
    ways: int | None = typer.Option(None, help="Classes per task (default: the graph's preset: 2, coauthor-cs 5)."),
    shots: str | None = typer.Option(None, help="Comma-separated shots (default: the graph's preset: 1 and 3, "
                                                "amazon-computers 1 and 5)."),
    methods: str | None = typer.Option(None, help="Comma-separated methods: any --algo name, +cml for CML (default: "
                                                  "sgc-proto, label-prop, sgc-logreg, gcl-probe, maml, maml+cml, "
                                                  "gmeta, gmeta+cml, ammgnn, ammgnn+cml, protonet)."),
    seeds: str = typer.Option("0,1,2,3,4", help="Comma-separated seeds."),
    steps: int | None = typer.Option(None, help="Override meta-iterations of every run (quick runs)."),
    test_tasks: int | None = typer.Option(None, help="Override test tasks of every run."),
    config: Path | None = typer.Option(None, help="Base YAML config of every run (default: cmlgraph's defaults, "
                                                  "as `cmlgraph train --graph G --ways N --shots K`)."),
    runs_dir: Path = typer.Option(Path("runs/leaderboard"), help="Where runs are found or trained."),
    out: Path | None = typer.Option(None, help="Folder for leaderboard.md/csv/png (default: RUNS_DIR)."),
    data_root: str | None = typer.Option(None, help="Raw data root."),
    device: str | None = typer.Option(None, help="Device of every run trained (cpu, cuda, cuda:N; default: each "
                                                 "run's config, cpu)."),
    parallel_runs: int = typer.Option(1, help="Train up to N missing runs of one shape (seeds, CML arms) together "
                                              "in one process; 1: one after another (docs/gpu.md)."),
) -> None:
    """Every method on the same fixed test tasks per graph and setting, over seeds: mean ± 95% CI, the paired
    difference to the best training-free baseline, and CML − base; trains missing runs, reuses finished ones."""
    from cmlgraph.leaderboard import parse_methods, run_leaderboard, settings, write_outputs
    from cmlgraph.train.parallel import check_parallel_runs

    check_parallel_runs(parallel_runs)

    if config is not None and not config.is_file():
        raise ConfigError(f"--config {config}: no such file; give a YAML config (e.g. configs/graph-table.yaml)")
    for flag, value in (("--steps", steps), ("--test-tasks", test_tasks)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: give a positive number")
    cells = settings(_csv_list(graphs), ways, _csv_list(shots, int) if shots is not None else None)
    chosen = parse_methods(_csv_list(methods) if methods is not None else None, log=console.print)
    seed_list = _csv_list(seeds, int)
    if len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"--seeds {seeds}: a seed is repeated; list each once")
    overrides = _batch_overrides(steps, test_tasks, data_root, device)
    with _again_resumes():
        board = run_leaderboard(cells, chosen, seed_list, runs_dir, config, overrides, log=console.print,
                                console=console, parallel_runs=parallel_runs)
    for path in write_outputs(board, out or runs_dir):
        console.print(f"wrote {path}")
    console.print((Path(out or runs_dir) / "leaderboard.md").read_text())


@app.command()
def reproduce(
    only: str | None = typer.Option(None, help="Comma-separated selectors: a tag (sinusoid, table3, citeseer, "
                                               "gmeta, 1shot, k5, ...), tag+tag, or a glob on the ids; default: "
                                               "all."),
    runs: int | None = typer.Option(None, help="Runs (seeds 0..N-1) per arm (default: 5 for Table 3 as in the "
                                               "paper, 3 for the sinusoid)."),
    steps: int | None = typer.Option(None, help="Cap on the meta-iterations of every run."),
    test_tasks: int | None = typer.Option(None, help="Override test tasks of every run."),
    runs_dir: Path = typer.Option(Path("runs/reproduce"), help="Where runs are found or trained."),
    out: Path | None = typer.Option(None, help="Folder for reproduce.md/csv and figure2.png (default: RUNS_DIR)."),
    data_root: str | None = typer.Option(None, help="Raw data root."),
    list_only: bool = typer.Option(False, "--list", help="List the selected experiments and exit."),
    device: str | None = typer.Option(None, help="Device of every run trained (cpu, cuda, cuda:N; default: each "
                                                 "run's config, cpu)."),
    parallel_runs: int = typer.Option(1, help="Train up to N missing runs of one shape (seeds, CML arms) together "
                                              "in one process; 1: one after another (docs/gpu.md)."),
) -> None:
    """The paper's experiments the local data allows, ours beside its numbers; trains missing runs, reuses
    finished ones."""
    from cmlgraph.paper.cells import paper_cells, select_cells
    from cmlgraph.paper.reproduce import data_status, run_reproduce, write_reproduce
    from cmlgraph.train.trainer import train as train_run

    cells = select_cells(paper_cells(), only)
    if runs is not None and runs < 1:  # the same check as a training call, also before --list
        raise ConfigError(f"--runs {runs}: give at least 1 run per cell")
    from cmlgraph.train.parallel import check_parallel_runs

    check_parallel_runs(parallel_runs)
    if list_only:
        status = data_status(cells, data_root)
        for cell in cells:
            console.print(f"{cell.id}  ({cell.config})" + (f"  [yellow]{status[cell.id]}[/yellow]"
                                                           if cell.id in status else ""))
        return
    overrides = _batch_overrides(None, test_tasks, None, device) or None
    with _again_resumes():
        results = run_reproduce(cells, runs_dir, runs, steps, overrides, data_root=data_root,
                                train_fn=lambda cfg: train_run(cfg, console, progress=True)[0], log=console.print,
                                console=console, parallel_runs=parallel_runs)
    for path in write_reproduce(results, out or runs_dir):
        console.print(f"wrote {path}")
    console.print((Path(out or runs_dir) / "reproduce.md").read_text())


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Reduced set (< 60 s on 2 cores): sinusoid, Conv4 at 28 px, "
                                                      "the 10k-node graph."),
    json_path: Path | None = typer.Option(None, "--json", help="Write every case and ratio to this JSON file."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    graphs: str | None = typer.Option(None, help="Comma-separated graphs (synthetic-10k, synthetic-100k, "
                                                 "synthetic-1m, amazon-clothing, synthetic-2k); default: all of the "
                                                 "set."),
    domains: str | None = typer.Option(None, help="Comma-separated domains: sinusoid, images, graph, "
                                                   "gmeta (default: all)."),
    budget: float | None = typer.Option(None, help="Seconds of timed iterations per case (quick 2, full 20)."),
    timeout: float | None = typer.Option(None, help="Seconds before a case is stopped and skipped (quick 60, "
                                                    "full 300)."),
    threads: int = typer.Option(1, help="torch threads per case (1: stable timings on a shared machine; 0: torch's "
                                        "default)."),
    start_method: str | None = typer.Option(None, help="Fresh process per case: spawn (full's and CUDA's "
                                                       "default) or forkserver (--quick's default on the CPU)."),
    data_root: str | None = typer.Option(None, help="Raw data root (Amazon-Clothing)."),
) -> None:
    """Meta-training throughput, ms per meta-iteration and peak memory, cmlgraph vs reference implementations."""
    from cmlgraph.bench import run_bench

    def _list(text: str | None) -> list[str] | None:
        return [t.strip() for t in text.split(",") if t.strip()] if text is not None else None

    run_bench(quick=quick, json_path=json_path, device=device, graphs=_list(graphs), domains=_list(domains),
              budget_s=budget, timeout_s=timeout, threads=threads, start_method=start_method, data_root=data_root,
              console=console)


@app.command("eval")
def eval_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder made by `cmlgraph train` or cmlgraph.fit."),
    graph: str | None = typer.Option(None, help="Registered graph name or a .npz file from graph.save(PATH) (needed "
                                  "for a cmlgraph.fit run on an in-memory graph).", show_default="the run's graph"),
    data_root: str | None = typer.Option(None, help="Raw data root of a registered graph.",
                                      show_default="data.data_root, else $CMLGRAPH_DATA, else the run's recorded root"),
    device: str | None = typer.Option(None, help="cpu or cuda.",
                                   show_default="the run's device if this machine has it, else cpu"),
) -> None:
    """Re-evaluate a saved run's inference model on its fixed test tasks."""
    from cmlgraph.train.reeval import reevaluate

    res = reevaluate(run_dir, console, graph=graph, data_root=data_root, device=device)
    console.print(f"{res['metric']}: {res['mean']:.4f} ± {res['ci95']:.4f} over {res['num_tasks']} tasks"
                  + (f"  ({res['nonfinite_tasks']} with NaN/inf predictions)" if res["nonfinite_tasks"] else "")
                  + (f"  (features {res['features']}, as the run used)" if res.get("features") else "")
                  + (f"  (on {res['device']}; the run trained on {res['run_device']})"
                     if res["device"] != res["run_device"] else ""))
    line = _baseline_line(run_dir)
    if line:
        console.print(line)


def _baseline_line(run_dir: Path) -> str | None:
    """The line ``cmlgraph train`` ends with, from the run's ``summary.json``: its best validation accuracy beside
    the training-free baseline's on the same validation tasks (``None`` for a run without that record)."""
    import json

    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    record = summary.get("baseline_val")
    if not isinstance(record, dict) or "method" not in record or not isinstance(record.get("settings", {}), dict):
        return None
    from cmlgraph.train.baseline_check import console_line

    tasks = summary.get("distinct_val_tasks") or summary.get("val_tasks_asked") or 0
    return console_line(summary.get("best_val"), int(summary.get("best_step") or 0),
                        {"settings": {}, **record}, int(tasks))


@app.command()
def predict(
    run_dir: Path | None = typer.Argument(None, help="A finished graph run folder made by `cmlgraph train` (or "
                                          "--method instead)."),
    method: str | None = typer.Option(None, help="A training-free method instead of a run folder: sgc-proto, "
                                      "label-prop, sgc-logreg, gcl-probe (needs --graph)."),
    support: Path = typer.Option(..., "--support", help="CSV with a header `node,label`: the labelled nodes."),
    out: Path = typer.Option(..., "--out", help="Output CSV: node, prediction, one probability column per class."),
    graph: str | None = typer.Option(None, help="Registered graph name or a .npz file from graph.save(PATH).",
                                  show_default="the run's graph"),
    classes: str | None = typer.Option(None, help="Comma-separated class order (each needs a support node).",
                                    show_default="the sorted labels"),
    data_root: str | None = typer.Option(None, help="Raw data root of a registered graph (else $CMLGRAPH_DATA).",
                                      show_default=False),
    device: str | None = typer.Option(None, help="cpu or cuda.",
                                   show_default="the run's device if available"),
    prop_steps: int | None = typer.Option(None, help="--method: propagation steps (default: docs/baselines.md)."),
    prop_alpha: float | None = typer.Option(None, help="--method label-prop: teleport α."),
    probe_c: float | None = typer.Option(None, help="--method sgc-logreg/gcl-probe: logistic regression's C."),
    pretrain_epochs: int | None = typer.Option(None, help="--method gcl-probe: GRACE pretraining epochs."),
    features: str | None = typer.Option(None, help="--method: feature preprocessing raw, row or standard.",
                                        show_default="the graph's own"),
) -> None:
    """Label a few nodes of new classes, predict the rest: adapts the run's model on the support set exactly as
    its evaluation does, or (--method) answers with a training-free method and no run folder."""
    from cmlgraph.predict import adapt, predict_with_method, read_support_csv, resolve_graph

    options = {"prop_steps": prop_steps, "prop_alpha": prop_alpha, "probe_c": probe_c,
               "pretrain_epochs": pretrain_epochs, "features": features}
    if (run_dir is None) == (method is None):
        raise ConfigError("give a run folder or --method NAME (a training-free method), not both"
                          if run_dir is not None else "give a run folder (cmlgraph predict RUN_DIR ...) or --method "
                          "NAME with --graph (a training-free method: sgc-proto, label-prop, sgc-logreg, gcl-probe)")
    if run_dir is not None and any(v is not None for v in options.values()):
        given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None]
        one = len(given) == 1
        raise ConfigError(f"{', '.join(given)} {'sets' if one else 'set'} a training-free method's "
                          f"option{'' if one else 's'}; a run folder keeps its own settings: drop "
                          f"{'it' if one else 'them'}, or use --method")
    if method is not None and graph is None:
        raise ConfigError(f"--method {method} needs --graph (a registered graph name or a .npz file from "
                          f"graph.save(PATH))")
    if not support.is_file():  # before loading any graph: the cheapest mistake is reported first
        raise DataError(f"--support {support}: no such file; give a CSV with a header `node,label`")
    order = [c.strip() for c in classes.split(",") if c.strip()] if classes is not None else None
    if method is not None:
        from cmlgraph.predict import resolve_method_graph

        g = resolve_method_graph(graph, data_root)
        labels = read_support_csv(support, g)
        pred = predict_with_method(method, g, labels, classes=order, device=device, **options)
    else:
        g = resolve_graph(run_dir, graph, data_root)
        labels = read_support_csv(support, g)
        pred = adapt(run_dir, g, labels, classes=order, device=device, console=console)
    pred.to_csv(out)
    counts = {c: pred.labels.count(c) for c in pred.classes}
    console.print(f"{len(pred.nodes)} nodes of {g.name!r} predicted from {len(labels)} labelled nodes "
                  f"({', '.join(f'{c}: {n}' for c, n in counts.items())}); wrote {out}")


@app.command()
def embed(
    run_dir: Path = typer.Argument(..., help="A finished graph run folder made by `cmlgraph train`."),
    out: Path = typer.Option(..., "--out", help="Output .npy file: float32, shape (num_nodes, d)."),
    graph: str | None = typer.Option(None, help="Registered graph name or a .npz file from graph.save(PATH).",
                                  show_default="the run's graph"),
    data_root: str | None = typer.Option(None, help="Raw data root of a registered graph (else $CMLGRAPH_DATA).",
                                      show_default=False),
    device: str | None = typer.Option(None, help="cpu or cuda.",
                                   show_default="the run's device if available"),
) -> None:
    """The trained extractor's features of every node (row i: node i), for probing or plotting."""
    import numpy as np

    from cmlgraph.predict import embed as embed_nodes

    feats = embed_nodes(run_dir, graph, data_root=data_root, device=device)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, feats, allow_pickle=False)
    tmp.replace(out)
    console.print(f"wrote {out}: {feats.shape[0]} nodes × {feats.shape[1]} features")


@app.command()
def runs(
    runs_dir: Path = typer.Argument(Path("runs"), help="Folder holding run folders."),
    json_out: bool = typer.Option(False, "--json", help="Print the records as JSON instead of a table."),
) -> None:
    """The run folders, oldest first: dataset, algorithm, CML, ways/shots, test score ± 95% CI, status, date, and
    the settings that differ between listed runs of the same dataset (e.g. features)."""
    import json

    from rich.markup import escape

    from cmlgraph.runs import (
        describe_run,
        format_score,
        format_settings,
        format_shape,
        list_runs,
        run_status,
        run_step,
    )

    records = list_runs(runs_dir)
    if json_out:
        print(json.dumps(records, indent=2))
        return
    if not records:
        one = describe_run(runs_dir)  # a run folder itself: that run
        records = [one] if one is not None else []
        if not records:
            console.print(f"no run folders in {escape(str(runs_dir))}: `cmlgraph train` writes one there (the "
                          f"default --runs-dir is runs; another folder: `cmlgraph runs FOLDER`)")
            return
    from rich.table import Table

    table = Table(title=f"runs in {runs_dir}")
    cols = ["name", "dataset", "algorithm", "CML", "shape", "steps", "test score", "tasks", "status", "date"]
    differ = any(r.get("differs") for r in records)
    for col in cols + (["settings that differ"] if differ else []):
        table.add_column(col, no_wrap=col not in ("name", "settings that differ"), overflow="fold")
    from rich.text import Text

    widths = [len(str(col.header)) for col in table.columns]
    for r in records:
        algo = r["algorithm"] + ("" if r["control"] in (None, "none") else f" ({r['control']})")
        status = run_status(r)
        score = format_score(r) + (f" [yellow]! {len(r['warnings'])}[/yellow]" if r["warnings"] else "")
        row = [escape(r["name"]), escape(str(r["dataset"])) + (" (partial)" if r["partial"] else ""), algo,
               "yes" if r["cml"] else "no", format_shape(r), f"{run_step(r)}/{r['steps']}", score,
               str(r["num_tasks"] or ""), status, r["date"].replace("T", " ").rstrip("Z"),
               *([escape(format_settings(r))] if differ else [])]
        widths = [max(w, Text.from_markup(cell).cell_len) for w, cell in zip(widths, row, strict=True)]
        table.add_row(*row)
    # piped (| grep, > file): as wide as the table needs (cells, padding, borders), so no name is folded over two
    # lines and each can be copied; a terminal keeps its own width
    wide = sum(widths) + 3 * len(widths) + 1
    (console if console.is_terminal or wide <= console.width else Console(width=wide)).print(table)
    for r in records:
        if r["status"] == "failed":
            why = escape(str(r.get("error") or ""))
            console.print(f"[red]{escape(r['name'])} failed[/red]: {why} (resuming repeats the same steps; start a "
                          f"new run with other settings)")
    if any(r["warnings"] for r in records):
        console.print("[yellow]! N[/yellow]: the run gave N warnings (chance level, too few test tasks, divergence); "
                      "see `warnings` in its summary.json or `cmlgraph runs --json`")


@datasets_app.command("list")
def datasets_list(data_root: str | None = typer.Option(None, help="Raw data root.")) -> None:
    """Every graph dataset with its stats, default class split (train/val/test classes), source URL and local
    availability."""
    from rich.table import Table

    from cmlgraph.graphs import list_datasets

    table = Table(title="graph datasets", show_lines=False)
    table.add_column("name", no_wrap=True)
    for col in ("nodes", "edges", "features", "classes"):
        table.add_column(col, justify="right")
    table.add_column("split (train/val/test)", no_wrap=True)
    table.add_column("local", no_wrap=True)
    table.add_column("source", overflow="fold")
    for row in list_datasets(data_root):
        status = "yes" if row.get("available") else ("partial" if row.get("partial") else "no")
        table.add_row(row["name"], *(f"{row.get(c):,}" if isinstance(row.get(c), int) else str(row.get(c, ""))
                                     for c in ("nodes", "edges", "features", "classes")),
                      str(row.get("class_split", "")), status, str(row.get("url") or "generated"))
    console.print(table)


@datasets_app.command("download")
def datasets_download(name: str = typer.Argument(..., help="Dataset name (`cmlgraph datasets list`)."),
                      data_root: str | None = typer.Option(None, help="Raw data root (read only).")) -> None:
    """Download a dataset's missing raw files (checksummed, atomic) into the cache (needs internet)."""
    from cmlgraph.graphs import download_dataset

    for path in download_dataset(name, data_root):
        console.print(f"stored {path}")


tidy_flags(app, datasets_app)  # switches show no "<bool>" value type in --help


@contextmanager
def _again_resumes() -> Iterator[None]:
    """Ctrl-C or SIGTERM in ``compare``/``leaderboard``/``reproduce``: say that the same command continues (it resumes
    the stopped runs from their checkpoints and reuses the finished ones: :func:`cmlgraph.compare.obtain_run`)."""
    from cmlgraph.train.interrupt import RunTerminated, announce  # imports no torch

    try:
        yield
    except (KeyboardInterrupt, RunTerminated):
        console.print("[yellow]run the same command again to continue:[/yellow] it resumes the stopped runs from "
                      "their checkpoints and reuses the finished ones")
        announce()
        raise


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning project errors into one-line messages (exit status 2)."""
    from cmlgraph.allocator import tune_malloc
    from cmlgraph.provenance import cli_command, recording

    try:
        tune_malloc()  # large freed blocks kept for reuse: no page faults per inner step (cmlgraph/allocator.py)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if argv is None:  # the real command line (tests calling main([...]) keep pytest's warning capture)
        _plain_warnings()
    try:
        with recording(cli_command(argv)):  # the command line, in the run's summary.json and config.yaml
            app(args=argv, standalone_mode=True)
    except CmlgraphError as exc:
        msg = " ".join(str(exc).split())
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; resume with `cmlgraph train --resume RUN_DIR`", file=sys.stderr)
        sys.exit(130)
    except SystemExit as exc:
        _finish_rank(exc)
        if exc.code in (130, 143):  # typer's status for any KeyboardInterrupt; a run stopped by SIGTERM
            _interrupted_exit(exc, by_signal=argv is None)
        raise


def _plain_warnings() -> None:
    """Show cmlgraph's own warnings as ``warning: MESSAGE`` lines on stderr, as ``cmlgraph train`` prints its own,
    not as Python's ``.../typer/main.py:1445: UserWarning: ...`` followed by a line of typer's source (what ``eval``
    and ``predict`` showed a new-user trial). A warning raised elsewhere (torch, PyG) keeps Python's format, which
    names where it came from."""
    import warnings

    default = warnings.showwarning
    here = Path(__file__).resolve().parent

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        path = Path(filename).resolve()
        # cmlgraph warns with the caller's line (stacklevel): under the CLI that is typer's or click's code
        if here in path.parents or {"typer", "click"} & set(path.parts):
            print(f"warning: {message}", file=sys.stderr if file is None else file)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _interrupted_exit(exc: SystemExit, by_signal: bool = False) -> None:
    """A command stopped by Ctrl-C (status 130) or a run by SIGTERM (143): say so where no run did, and let a further
    signal while Python shuts down (threads joined, files closed: a second or two) end the process at once, not
    print a traceback from an exit handler.

    With ``by_signal`` (the real command line: ``cmlgraph``, ``python -m cmlgraph``) a Ctrl-C ends the process by
    SIGINT, after Python's shutdown, as an uncaught KeyboardInterrupt does, not with status 130: a shell loop over
    runs (``for s in 0 1 2; do cmlgraph train --seed $s; done``) then stops, where after a plain exit 130 bash takes
    the Ctrl-C as handled and starts the next run.

    Raises:
        KeyboardInterrupt: With ``by_signal`` after Ctrl-C, printed by no traceback (:func:`_quiet_interrupt_hook`).
    """
    import signal

    from cmlgraph.train.interrupt import announced  # imports no torch

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda s, frame: os._exit(128 + s))
    if not announced():
        print("interrupted", file=sys.stderr)
    if by_signal and exc.code == 130:
        sys.excepthook = _quiet_interrupt_hook(sys.excepthook)
        raise KeyboardInterrupt from None


def _quiet_interrupt_hook(previous: Any) -> Any:
    """``sys.excepthook`` that prints nothing for an uncaught KeyboardInterrupt (the run has said where it stopped)
    and hands anything else to ``previous``."""

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if kind is not KeyboardInterrupt:
            previous(kind, value, tb)

    return hook


def _finish_rank(exc: SystemExit) -> None:
    """A torchrun rank whose run finished (and left its process group) exits here, skipping the interpreter's
    finalisation, where torch's TCPStore server could abort it (:func:`cmlgraph.train.distributed.left_group`)."""
    if exc.code not in (0, None) or "cmlgraph.train.distributed" not in sys.modules:
        return
    from cmlgraph.train.distributed import left_group

    if left_group():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
