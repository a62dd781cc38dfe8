"""The ``cmlgraph`` command line: a thin layer over the Python API.

Every user mistake surfaces as a :class:`CmlgraphError` and is printed as one line ``error: ...`` with exit
status 2, never as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from cmlgraph.config import Config, apply_overrides, from_yaml
from cmlgraph.errors import CmlgraphError, ConfigError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Few-shot node classification with gradient-based meta-learning and CML.")
datasets_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Graph datasets.")
app.add_typer(datasets_app, name="datasets")
console = Console(width=max(Console().width, 150))


def _overrides(**flags: Any) -> dict[str, dict[str, Any]]:
    """Map CLI flags to config sections, keeping only the flags the user gave."""
    sections = {
        "data": ("task", "graph", "data_root", "allow_partial", "split", "ways", "shots", "queries", "subgraph",
                 "protocol"),
        "model": ("gnn", "hidden", "layers", "dropout"),
        "algo": ("algo", "cml", "gamma", "co_depth", "control", "inner_steps", "inner_lr", "first_order", "adapt",
                 "co_hidden"),
        "train": ("steps", "meta_batch", "meta_lr", "seed", "val_every", "test_tasks", "device", "diag_every",
                  "nan_policy", "patience"),
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
    graph: str | None = typer.Option(None, help="Graph dataset (`cmlgraph datasets list`); default synthetic."),
    ways: int | None = typer.Option(None, help="N classes per task."),
    shots: int | None = typer.Option(None, help="K support examples per class (sinusoid: points)."),
    queries: int | None = typer.Option(None, help="Query examples per class (sinusoid: points)."),
    gnn: str | None = typer.Option(None, help="GNN: gcn, sgc, sage, gat, gin."),
    hidden: int | None = typer.Option(None, help="Hidden width of the extractor."),
    layers: int | None = typer.Option(None, help="Layers of the extractor."),
    dropout: float | None = typer.Option(None, help="Dropout of the GNN."),
    algo: str | None = typer.Option(None, help="maml, anil, boil, maml++, sharp-maml, protonet, gmeta, ammgnn."),
    cml: bool | None = typer.Option(None, "--cml/--no-cml", help="Cooperative Meta-Learning co-learner term."),
    gamma: float | None = typer.Option(None, help="Weight γ of the co-learner loss."),
    co_depth: int | None = typer.Option(None, help="Hidden layers of the co-learner."),
    co_hidden: int | None = typer.Option(None, help="Co-learner hidden width (default: feature width)."),
    control: str | None = typer.Option(None, help="Paper controls: none, cl, noise, frozen-co."),
    inner_steps: int | None = typer.Option(None, help="Inner-loop steps."),
    inner_lr: float | None = typer.Option(None, help="Inner-loop step size."),
    first_order: bool | None = typer.Option(None, "--first-order/--second-order", help="Meta-gradient order."),
    adapt: str | None = typer.Option(None, help="Inner-loop groups: auto, all, head (ANIL-style), extractor."),
    meta_lr: float | None = typer.Option(None, help="Adam meta learning rate."),
    meta_batch: int | None = typer.Option(None, help="Tasks per meta-iteration."),
    steps: int | None = typer.Option(None, help="Meta-iterations."),
    seed: int | None = typer.Option(None, help="Random seed."),
    val_every: int | None = typer.Option(None, help="Validate every N steps."),
    test_tasks: int | None = typer.Option(None, help="Fixed test tasks."),
    data_root: str | None = typer.Option(None, help="Raw data root (else $CMLGRAPH_DATA, else datasets/)."),
    allow_partial: bool | None = typer.Option(None, "--allow-partial", help="Run on the classes present."),
    split: str | None = typer.Option(None, help="Class split: counts 'a/b/c' or a JSON file."),
    subgraph: str | None = typer.Option(None, help="Graph execution: auto, full, khop."),
    protocol: str | None = typer.Option(None, help="Preset of a published protocol filling unset settings: tlp."),
    patience: int | None = typer.Option(None, help="Stop after N validations without improvement."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:N."),
    diag_every: int | None = typer.Option(None, help="Gradient diagnostics every N steps (0: off)."),
    nan_policy: str | None = typer.Option(None, help="On NaN/inf: stop or skip the meta-batch."),
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

    if resume is not None:
        given = [k for k, v in flags.items() if v is not None and k not in ("resume", "quiet", "config")]
        if given or config is not None:
            raise ConfigError(f"--resume takes its settings from the run folder; drop "
                              f"{', '.join('--' + g.replace('_', '-') for g in given) or '--config'}")
        resume_run(resume, console, progress=not quiet)
        return
    if graph is not None:
        if task not in (None, "graph"):
            raise ConfigError(f"--graph {graph} selects the graph task, but --task {task} was given; drop one")
        flags["task"] = "graph"
    cfg = from_yaml(config) if config is not None else Config()
    cfg = apply_overrides(cfg, _overrides(**flags), "command line")
    train_run(cfg, console, progress=not quiet)


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
) -> None:
    """Each algorithm with and without CML per domain; trains missing runs, reuses finished ones."""
    from cmlgraph.compare import run_compare, write_outputs

    def _list(text: str, cast: Any = str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise ConfigError(f"empty list {text!r}; give comma-separated values")
        try:
            return [cast(t) for t in items]
        except ValueError:
            raise ConfigError(f"{text!r} is not a comma-separated list of integers") from None

    overrides: dict[str, dict[str, Any]] = {}
    if steps is not None:
        overrides.setdefault("train", {})["steps"] = steps
    if test_tasks is not None:
        overrides.setdefault("train", {})["test_tasks"] = test_tasks
    if data_root is not None:
        overrides.setdefault("data", {})["data_root"] = data_root
    cells = run_compare(_list(domains), _list(algos), _list(seeds, int), runs_dir, overrides, log=console.print)
    for path in write_outputs(cells, out or runs_dir):
        console.print(f"wrote {path}")
    console.print((Path(out or runs_dir) / "compare.md").read_text())


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Reduced set (< 60 s on 2 cores): sinusoid, Conv4 at 28 px, "
                                                      "the 10k-node graph."),
    json_path: Path | None = typer.Option(None, "--json", help="Write every case and ratio to this JSON file."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    graphs: str | None = typer.Option(None, help="Comma-separated graphs (synthetic-10k, synthetic-100k, "
                                                 "synthetic-1m, amazon-clothing); default: all of the set."),
    domains: str | None = typer.Option(None, help="Comma-separated domains: sinusoid, images, graph, "
                                                   "gmeta (default: all)."),
    budget: float | None = typer.Option(None, help="Seconds of timed iterations per case (quick 2, full 20)."),
    timeout: float | None = typer.Option(None, help="Seconds before a case is stopped and skipped (quick 60, "
                                                    "full 300)."),
    threads: int = typer.Option(1, help="torch threads per case (1: stable timings on a shared machine; 0: torch's "
                                        "default)."),
    start_method: str | None = typer.Option(None, help="Fresh process per case: spawn (full's default) or "
                                                       "forkserver (--quick's default)."),
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
def eval_cmd(run_dir: Path = typer.Argument(..., help="A run folder made by `cmlgraph train`.")) -> None:
    """Re-evaluate a saved run's inference model on its fixed test tasks."""
    from cmlgraph.train.reeval import reevaluate

    res = reevaluate(run_dir)
    console.print(f"{res['metric']}: {res['mean']:.4f} ± {res['ci95']:.4f} over {res['num_tasks']} tasks")


@datasets_app.command("list")
def datasets_list(data_root: str | None = typer.Option(None, help="Raw data root.")) -> None:
    """Every graph dataset with its stats, source URL and local availability."""
    from rich.table import Table

    from cmlgraph.graphs import list_datasets

    table = Table(title="graph datasets", show_lines=False)
    table.add_column("name", no_wrap=True)
    for col in ("nodes", "edges", "features", "classes"):
        table.add_column(col, justify="right")
    table.add_column("local", no_wrap=True)
    table.add_column("source", overflow="fold")
    for row in list_datasets(data_root):
        status = "yes" if row.get("available") else ("partial" if row.get("partial") else "no")
        table.add_row(row["name"], *(f"{row.get(c):,}" if isinstance(row.get(c), int) else str(row.get(c, ""))
                                     for c in ("nodes", "edges", "features", "classes")),
                      status, str(row.get("url") or "generated"))
    console.print(table)


@datasets_app.command("download")
def datasets_download(name: str = typer.Argument(..., help="Dataset name (`cmlgraph datasets list`)."),
                      data_root: str | None = typer.Option(None, help="Raw data root (read only).")) -> None:
    """Download a dataset's missing raw files (checksummed, atomic) into the cache (needs internet)."""
    from cmlgraph.graphs import download_dataset

    for path in download_dataset(name, data_root):
        console.print(f"stored {path}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning project errors into one-line messages (exit status 2)."""
    try:
        app(args=argv, standalone_mode=True)
    except CmlgraphError as exc:
        msg = " ".join(str(exc).split())
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; resume with `cmlgraph train --resume RUN_DIR`", file=sys.stderr)
        sys.exit(130)
