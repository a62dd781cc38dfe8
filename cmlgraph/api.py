"""The Python API in a few calls: train on a registered dataset or on a user's own graph.

Example:
    >>> import cmlgraph
    >>> graph = cmlgraph.from_arrays(edge_index, features, labels, name="mygraph")   # doctest: +SKIP
    >>> run_dir, summary = cmlgraph.fit(graph, ways=3, shots=2, steps=100)          # doctest: +SKIP
    >>> summary["mean"], summary["ci95"]                                             # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from cmlgraph.config import Config, apply_overrides
from cmlgraph.errors import ConfigError, ResourceError

if TYPE_CHECKING:  # imported in fit(): sinusoid and image runs through fit_config never load torch-geometric
    from cmlgraph.graphs import FewShotGraph

#: Which config section each keyword of :func:`fit` / :func:`make_config` belongs to.
_SECTION_OF = {key: section for section, keys in {
    "data": ("task", "graph", "data_root", "allow_partial", "split", "ways", "shots", "queries", "subgraph",
             "subgraph_threshold", "features", "synthetic_nodes", "synthetic_classes", "image_size", "rotations",
             "protocol", "test_queries"),
    "model": ("gnn", "hidden", "layers", "dropout", "gat_heads", "init", "normalize"),
    "algo": ("algo", "cml", "gamma", "co_depth", "control", "noise_std", "inner_steps", "eval_inner_steps",
             "inner_lr", "inner_lr_extractor", "inner_lr_head", "first_order", "adapt", "sam_rho", "sam_inner",
             "msl_fraction", "first_order_fraction", "co_hidden", "prop_steps", "prop_alpha", "probe_c",
             "pretrain_epochs", "head_init", "proto_inner"),
    "train": ("steps", "meta_batch", "meta_lr", "seed", "val_every", "val_tasks", "test_tasks", "log_every",
              "checkpoint_every", "diag_every", "device", "batched", "prefetch", "prefetch_workers", "nan_policy",
              "patience", "weight_decay"),
    "run": ("runs_dir", "name", "overwrite"),
}.items() for key in keys}


def api_names(message: str) -> str:
    """A config error in the Python API's words: ``--inner-lr -1.0`` → ``inner_lr -1.0`` and
    ``train.test_tasks = 0`` → ``test_tasks = 0`` for the settings :func:`fit` takes (others are left alone).

    Why: validation names the command-line flags; a user of :func:`fit` typed keyword arguments.
    """
    import re

    def flag(m: re.Match[str]) -> str:
        key = m.group(1).replace("-", "_")
        return key if key in _SECTION_OF else m.group(0)

    def dotted(m: re.Match[str]) -> str:
        return m.group(2) if m.group(2) in _SECTION_OF else m.group(0)

    def call(m: re.Match[str]) -> str:  # `--algo sgc-proto --features row` → `algo="sgc-proto", features="row"`
        pairs = re.findall(r"--([a-z][a-z0-9-]*) (\S+)", m.group(1))
        if any(k.replace("-", "_") not in _SECTION_OF for k, _ in pairs):
            return m.group(0)
        return "`" + ", ".join(f"{k.replace('-', '_')}={_literal(v)}" for k, v in pairs) + "`"

    message = re.sub(r"`((?:--[a-z][a-z0-9-]* [^\s`-][^\s`]*)(?: --[a-z][a-z0-9-]* [^\s`-][^\s`]*)*)`", call, message)
    # a quoted shell command (`cmlgraph predict --graph G.npz`) keeps its flags: it is run as it reads
    parts = re.split(r"(`cmlgraph [^`]*`)", message)
    message = "".join(part if part.startswith("`cmlgraph ") else
                      re.sub(r"(?<![\w-])--([a-z][a-z0-9-]*)", flag, part) for part in parts)
    message = message.replace("config key ", "setting ")
    return re.sub(r"\b(data|model|algo|train|run)\.([a-z_]+)\b", dotted, message)


def _literal(value: str) -> str:
    """A command-line value as the Python literal a keyword argument takes: numbers and booleans as they are,
    anything else quoted."""
    if value in ("true", "false"):
        return value.capitalize()
    try:
        float(value)
    except ValueError:
        return f'"{value}"'
    return value


def make_config(**settings: Any) -> Config:
    """A :class:`Config` from flat keyword settings (``ways=5, algo="maml", steps=100``...).

    Raises:
        ConfigError: An unknown setting (the valid ones are listed) or a value of the wrong type.
    """
    nested: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        if key not in _SECTION_OF:
            raise ConfigError(f"unknown setting {key!r}; valid settings: {', '.join(sorted(_SECTION_OF))}")
        nested.setdefault(_SECTION_OF[key], {})[key] = value
    return apply_overrides(Config(), nested, "settings")


def fit(graph: FewShotGraph | str = "synthetic", *, verbose: bool = False, **settings: Any
        ) -> tuple[Path, dict[str, Any]]:
    """Meta-train and evaluate on a graph; returns the run folder and its summary.

    Args:
        graph: A :class:`FewShotGraph` (e.g. from :func:`cmlgraph.from_arrays`) or a registered dataset name.
        verbose: Print progress and the result.
        **settings: Flat settings, e.g. ``ways=3, shots=2, algo="maml", cml=True, steps=100, runs_dir="runs"``.

    Returns:
        ``(run_dir, summary)``: the run folder (give it to :func:`cmlgraph.adapt`, ``predict``, ``embed``) and the
        ``summary.json`` contents (``mean``, ``ci95``, ``warnings``, ...).

    Raises:
        ConfigError: A bad setting, or ``task``/``graph`` among the settings (``fit`` trains on ``graph``; other
            domains go through :func:`fit_config`).
    """
    from cmlgraph.domains.graph import register_graph
    from cmlgraph.graphs import FewShotGraph

    clash = sorted({"task", "graph"} & set(settings))
    if clash:
        raise ConfigError(f"fit() trains on its first argument, a graph: drop {', '.join(clash)}=... (for sinusoid "
                          f"or images use cmlgraph.fit_config(cmlgraph.make_config(task=..., ...)))")
    name = register_graph(graph) if isinstance(graph, FewShotGraph) else graph
    from cmlgraph.provenance import api_call, recording
    from cmlgraph.train.trainer import train
    from cmlgraph.user_warnings import warning_words

    try:
        cfg = make_config(task="graph", graph=name, **settings)
        with recording(api_call("fit", graph, **settings)), warning_words(api_names):  # warnings in fit's words
            return train(cfg, Console() if verbose else None, progress=verbose)
    except ConfigError as exc:  # in the words of fit's keyword arguments, not the CLI's flags
        raise ConfigError(api_names(str(exc))) from None
    except ResourceError as exc:  # the settings that shrink a task, as keyword arguments
        raise ResourceError(api_names(str(exc))) from None


def resume(run_dir: str | Path, graph: FewShotGraph | str | Path | None = None, *,
           data_root: str | Path | None = None, verbose: bool = False) -> tuple[Path, dict[str, Any]]:
    """Continue a stopped run (Ctrl-C, SIGTERM, a crash) from its last checkpoint and finish it; returns the run
    folder and its summary, bit-identical on the CPU to a run never stopped.

    Args:
        run_dir: The run folder (:func:`fit` returned it; a stopped run names it).
        graph: For a run of :func:`fit` on an in-memory FewShotGraph, which is not stored with the run: the same
            graph, or a ``.npz`` file of ``graph.save``. ``None`` for registered datasets.
        data_root: Where a registered dataset's files are (default: ``$CMLGRAPH_DATA``, else the root the run
            recorded).
        verbose: Print progress and the result.

    Raises:
        CmlgraphError: Not a run folder, already finished, in use, or with an unreadable checkpoint.
        ConfigError: An in-memory graph's run without ``graph``.
        DataError: ``graph`` is not the run's (its saved test tasks do not fit it).
    """
    from cmlgraph.train.trainer import resume as resume_run

    return resume_run(run_dir, Console() if verbose else None, progress=verbose, graph=graph, data_root=data_root)


def fit_config(cfg: Config, *, verbose: bool = False) -> tuple[Path, dict[str, Any]]:
    """Meta-train and evaluate a full :class:`Config` (any domain)."""
    from cmlgraph.provenance import api_call, recording
    from cmlgraph.train.trainer import train

    with recording(api_call("fit_config", cfg)):
        return train(cfg, Console() if verbose else None, progress=verbose)
