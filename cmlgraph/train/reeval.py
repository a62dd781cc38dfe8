"""``cmlgraph eval RUN_DIR``: re-evaluate a saved inference model on the run's fixed test tasks.

The run's graph is loaded as training loaded it. Where its raw data is read (issue 19): ``--data-root`` when given,
else the config's ``data.data_root``, else ``$CMLGRAPH_DATA``, else the root the run recorded
(``summary.json``'s ``provenance.data_root``, also a comment in ``config.yaml``), so a run evaluates in a shell
without the variable. A run of ``cmlgraph.fit`` on an in-memory graph is not stored with its graph: give the graph
saved with ``graph.save(PATH)`` (``--graph PATH``); it is fitted to the episode settings exactly as in training, and
the saved test tasks are checked against it (their nodes must exist and carry the tasks' classes).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cmlgraph.algorithms.registry import get_algorithm
from cmlgraph.config import Config, from_yaml, load_yaml
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.domains.registry import build_domain
from cmlgraph.errors import CmlgraphError, ConfigError, DataError
from cmlgraph.graphs.features import pin_legacy_features, run_features
from cmlgraph.train.evaluate import evaluate
from cmlgraph.train.io import load_torch
from cmlgraph.train.progress import progress_bar, stage
from cmlgraph.train.trainer import prepare


def recorded_data_root(run_dir: str | Path) -> str | None:
    """The raw data root a run recorded when it started (``provenance.data_root`` in ``summary.json``, else the
    ``# data_root:`` comment of ``config.yaml``), or ``None`` for runs made before it was recorded."""
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        root = (summary.get("provenance") or {}).get("data_root")
        if root:
            return str(root)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r"^# data_root: (.+)$", text, flags=re.MULTILINE)
    return m.group(1).strip() if m else None


def run_data_root(run_dir: str | Path, cfg: Config, data_root: str | os.PathLike[str] | None = None) -> str | None:
    """The data root to load a run's graph from: ``data_root`` (``--data-root``), else the config's
    ``data.data_root``, else ``None`` when ``$CMLGRAPH_DATA`` is set (it applies), else the recorded root."""
    if data_root is not None and str(data_root) != "":
        return os.fspath(data_root)
    if cfg.data.data_root:
        return str(cfg.data.data_root)
    if os.environ.get("CMLGRAPH_DATA", ""):
        return None
    return recorded_data_root(run_dir)


def _in_memory(name: str) -> bool:
    """Whether ``data.graph`` names a graph given in memory to ``cmlgraph.fit`` (neither registered nor a file)."""
    from cmlgraph.graphs.registry import REGISTRY
    from cmlgraph.graphs.storage import is_graph_file

    return str(name).strip().lower().replace("_", "-") not in REGISTRY and not is_graph_file(name)


@contextmanager
def _graph_for(cfg: Config, graph: Any, command: str = "cmlgraph eval RUN_DIR",
               python: str = "cmlgraph.train.reeval.reevaluate(RUN_DIR, graph=graph)") -> Iterator[None]:
    """Point ``cfg`` at ``graph`` (a FewShotGraph, a registered name or a ``.npz`` file) while the domain is built;
    ``command`` and ``python`` are the command and the Python call the refusal of a missing in-memory graph names.

    A run on an in-memory graph gets ``graph`` registered under the run's graph name for the block, so that it is
    fitted to the episode settings as in training (:func:`cmlgraph.domains.graph.graph_of`).
    """
    from cmlgraph.domains.graph import CUSTOM_GRAPHS
    from cmlgraph.graphs import FewShotGraph, load_graph

    name = cfg.data.graph
    if cfg.data.task != "graph":
        if graph is not None:
            raise ConfigError(f"--graph applies to graph runs; this is a {cfg.data.task} run")
        yield
        return
    if graph is None:
        if _in_memory(name) and name not in CUSTOM_GRAPHS:
            raise ConfigError(f"this run was trained on the in-memory graph {name!r} (cmlgraph.fit on a FewShotGraph), "
                              f"which is not stored with the run: save that graph with graph.save('{name}.npz') and "
                              f"pass it (`{command} --graph {name}.npz`, or in Python `{python}` with the "
                              f"FewShotGraph)")
        yield
        return
    if not _in_memory(name):
        if isinstance(graph, FewShotGraph):
            raise ConfigError(f"this run was trained on {name!r}; pass graph as that name or a .npz file, "
                              f"not a FewShotGraph")
        cfg.data.graph = os.fspath(graph)
        yield
        return
    given = graph if isinstance(graph, FewShotGraph) else load_graph(os.fspath(graph))
    before = CUSTOM_GRAPHS.get(name)
    CUSTOM_GRAPHS[name] = given
    try:
        yield
    finally:
        if before is None:
            CUSTOM_GRAPHS.pop(name, None)
        else:
            CUSTOM_GRAPHS[name] = before


def check_episodes_fit(domain: Any, raws: list[Any], run_dir: Path) -> None:
    """Refuse a graph the run's saved test tasks do not belong to: a node id beyond the graph, or a node whose
    label is not its task's class.

    Raises:
        DataError: The tasks do not fit; the message names the first mismatch.
    """
    graph = getattr(domain, "graph", None)
    if graph is None or not raws or not hasattr(raws[0], "support"):
        return
    import torch

    y = graph.y
    for i, ep in enumerate(raws):
        nodes = torch.cat([ep.support, ep.query])
        labels = torch.cat([ep.support_y, ep.query_y])
        if int(nodes.max()) >= graph.num_nodes:
            raise DataError(f"test task {i} of {run_dir} uses node {int(nodes.max())}, but graph {graph.name!r} has "
                            f"{graph.num_nodes} nodes; give the graph the run was trained on (--graph)")
        bad = (y[nodes] != ep.classes[labels]).nonzero()
        if bad.numel():
            j = int(bad[0, 0])
            raise DataError(f"test task {i} of {run_dir} expects node {int(nodes[j])} in class "
                            f"{int(ep.classes[labels[j]])}, but graph {graph.name!r} labels it {int(y[nodes[j]])}; "
                            f"give the graph the run was trained on (--graph)")


def here_device(device: str) -> str:
    """``device`` where this machine has it (:func:`~cmlgraph.validate.device_unavailable`); else ``cuda`` (its
    ``cuda:N`` where this machine has fewer GPUs), or the CPU (a run trained on a GPU, CUDA's or Apple's, read on a
    machine without one)."""
    import torch

    from cmlgraph.validate import device_unavailable

    if device_unavailable(device) is None:
        return device
    return "cuda" if device.startswith("cuda") and torch.cuda.is_available() else "cpu"


def saved_run_config(run_dir: str | Path, device: str | None = None) -> Config:
    """A run folder's ``config.yaml`` resolved as its run resolved it (legacy feature settings pinned), to read the
    run back (evaluate, predict, embed): on ``device`` when given, else on the run's own device where this machine
    has it, else on the CPU (:func:`here_device`; a run trained on a GPU was refused on a machine without one:
    "no CUDA device is available"). Training-only switches that name a device (``train.cuda_graphs``) are reset
    to ``auto``: reading a run back never captures a meta-step."""
    path = Path(run_dir) / "config.yaml"
    cfg = pin_legacy_features(from_yaml(path), load_yaml(path))
    cfg.train.device = device or here_device(str(cfg.train.device))
    cfg.train.cuda_graphs = "auto"
    return prepare(cfg)


def load_inference_model(run_dir: str | Path, graph: Any = None, data_root: str | os.PathLike[str] | None = None,
                         device: str | None = None) -> tuple[Any, MetaModel, Any]:
    """Rebuild a run's domain and its co-learner-free inference model from ``config.yaml`` and ``model.pt``.

    Args:
        run_dir: A finished run folder.
        graph: For a graph run, the graph to evaluate on (a FewShotGraph, a registered name or a ``.npz`` file of
            ``graph.save``); default: the run's own (a ``cmlgraph.fit`` run on an in-memory graph needs it).
        data_root: Raw data root (default: see the module doc).
        device: Where the model is put and evaluated (:func:`saved_run_config`: default the run's device where
            this machine has it, else the CPU); the returned config's ``train.device``.

    Raises:
        CmlgraphError: A file of the run folder is missing.
        ConfigError: A run on an in-memory graph without ``graph``.
        DataError: The graph's data is missing, or the run's test tasks do not fit ``graph``.
    """
    run_dir = Path(run_dir)
    for f in ("config.yaml", "model.pt", "test_episodes.pt"):
        if not (run_dir / f).is_file():
            raise CmlgraphError(f"{run_dir / f} is missing; `cmlgraph eval` needs a finished run folder "
                                f"made by `cmlgraph train`")
    cfg = saved_run_config(run_dir, device)
    run_features(cfg, run_dir)  # data.features auto: what the run chose
    cfg.data.data_root = run_data_root(run_dir, cfg, data_root)
    try:
        with _graph_for(cfg, graph, command=f"cmlgraph eval {shlex.quote(str(run_dir))}",
                        python=f"cmlgraph.train.reeval.reevaluate({str(run_dir)!r}, graph=graph)"):
            domain = build_domain(cfg)
    except DataError as exc:
        recorded = recorded_data_root(run_dir)
        if recorded is None or recorded == cfg.data.data_root:
            raise
        raise DataError(f"{exc} This run read its data from {recorded!r}: `cmlgraph eval {run_dir} --data-root "
                        f"{recorded}`.") from exc
    algo = get_algorithm(cfg.algo, total_steps=int(cfg.train.steps), seed=cfg.train.seed)
    model = MetaModel(domain.build_extractor(), domain.out_dim, co_depth=None, normalize=bool(cfg.model.normalize))
    algo.prepare(model)
    model.load_state_dict(load_torch(run_dir / "model.pt"))  # read onto the CPU, then moved to the run's device
    return (cfg, algo, domain), model.to(cfg.train.device), load_torch(run_dir / "test_episodes.pt")


def reevaluate(run_dir: str | Path, console: Any = None, *, graph: Any = None,
               data_root: str | os.PathLike[str] | None = None, device: str | None = None) -> dict[str, Any]:
    """Mean ± 95% CI of the saved inference model on the run's saved test episodes (a progress bar on
    ``console`` when given); ``nonfinite_tasks`` counts tasks with NaN/inf predictions (scored as wrong).

    ``graph``, ``data_root`` and ``device``: see :func:`load_inference_model`.
    """
    (cfg, algo, domain), model, state = load_inference_model(run_dir, graph, data_root, device)
    raws = domain.from_state(state)
    check_episodes_fit(domain, raws, Path(run_dir))
    with progress_bar(console, enabled=console is not None) as bar, \
            stage(bar, "evaluating", len(raws), keep=True) as hook:
        res = evaluate(algo, model, parameters_of(model), domain, raws, cfg.train.device, progress=hook)
    return {"metric": domain.metric, "mean": res["mean"], "ci95": res["ci95"], "num_tasks": res["num_tasks"],
            "nonfinite_tasks": res["nonfinite_tasks"], "features": getattr(domain, "features", None),
            "device": str(cfg.train.device), "run_device": str(load_yaml(Path(run_dir) / "config.yaml")
                                                              .get("train", {}).get("device", "cpu"))}
