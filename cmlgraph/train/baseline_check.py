"""Run health against a training-free baseline: ``sgc-proto``'s accuracy on a meta-learning run's own validation
tasks (issue 17 item 4).

Why: on most local graphs a method with no training at all (nearest class mean on propagated features) labelled
nodes better than the models cmlgraph trained, and nothing in a run said so. Every meta-learning run on a graph now
scores ``sgc-proto`` on **its own** fixed validation tasks, with ``K`` chosen on those same tasks exactly as an
``--algo sgc-proto`` run with the same data settings and seed chooses it (:meth:`TrainingFree.fit`: the best of
:data:`~cmlgraph.algorithms.baselines.GRID_K` on the validation tasks), so the run's best validation accuracy and the
baseline's are on identical tasks. The trainer stores the record in ``summary.json["baseline_val"]``, prints both
numbers and warns when the run is below (:func:`cmlgraph.train.guards.baseline_warning`).

The baseline reads each task on the whole graph (the run's features and edges; support and query node ids of the
run's episodes), as a full-graph ``--algo sgc-proto`` run does, whatever the run's own episode input is (k-hop
subgraphs for GAT, computation trees, G-Meta's balls, AMM-GNN's matched inputs). It draws no random numbers and
runs under :func:`torch.random.fork_rng`, so the run's results are the same with or without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cmlgraph.core.episode import Episode

#: The training-free method a run is compared with.
BASELINE = "sgc-proto"
#: Skip the check (with the reason recorded) when the dense ``S^K X`` of the graph would exceed this many bytes.
MAX_DENSE_BYTES = 2 * 2**30


class _BaselineHolder(nn.Module):
    """What a baseline's ``fit`` reads of a :class:`~cmlgraph.core.model.MetaModel`: ``baseline`` (its state, set by
    ``prepare``) and ``extractor`` (the evaluation asks it whether to batch tasks; the baselines use none). A model
    of its own, so the run's model (and its saved ``model.pt``) never holds the baseline's state."""

    def __init__(self) -> None:
        super().__init__()
        self.extractor = nn.Identity()


class WholeGraphTasks:
    """The run's raw episodes as a full-graph ``--algo sgc-proto`` run materializes them: support and query node
    ids on the whole graph of ``domain`` (a :class:`~cmlgraph.domains.graph.GraphDomain`, or its subclass
    :class:`~cmlgraph.domains.tlp_graph.TLPGraphDomain`)."""

    metric = "accuracy"

    def __init__(self, domain: Any) -> None:
        self.domain = domain
        self.name = domain.name
        self.loss_fn = domain.loss_fn

    def materialize(self, raw: Any, device: torch.device | str = "cpu") -> Episode:
        """One task: :class:`~cmlgraph.graphs.GraphInput` of the whole graph for its support and query nodes."""
        from cmlgraph.domains.graph import GraphDomain

        s = GraphDomain.node_input(self.domain, raw.support, device)
        q = GraphDomain.node_input(self.domain, raw.query, device)
        return Episode(s, raw.support_y.to(device), q, raw.query_y.to(device))


def skip_reason(cfg: Any, domain: Any, algo: Any) -> str | None:
    """Why a run gets no baseline check (``None``: it gets one). Runs that are not meta-learning on a graph (a
    training-free baseline itself, sinusoid, images) are not asked; see :func:`applies`."""
    from cmlgraph.domains.graph import GraphDomain

    if not isinstance(domain, GraphDomain) or getattr(domain, "metric", None) != "accuracy":
        return f"the run's domain ({type(domain).__name__}) holds no node-classification graph"
    if not getattr(domain, "samplers", None):
        return "the domain has no episode samplers"
    graph = domain.graph
    dense = int(graph.num_nodes) * int(graph.num_features) * 4
    if dense > MAX_DENSE_BYTES:
        return (f"the dense propagated features S^K X of {graph.name!r} ({graph.num_nodes} x {graph.num_features}) "
                f"would take {dense / 2**30:.1f} GiB; compare with a separate `--algo {BASELINE}` run instead")
    return None


def applies(cfg: Any, algo: Any) -> bool:
    """Whether a run is compared with the baseline at all: a meta-learning (``algo.trains``) run on a graph."""
    return cfg.data.task == "graph" and bool(getattr(algo, "trains", True))


def baseline_val(domain: Any, val_raws: Sequence[Any], device: torch.device | str, seed: int = 0
                 ) -> dict[str, Any]:
    """``sgc-proto``'s validation accuracy on ``val_raws``, ``K`` chosen on them as an ``--algo sgc-proto`` run does.

    Args:
        domain: The run's graph domain (its graph and features are read, nothing is sampled).
        val_raws: The run's fixed validation episodes (``Trainer.val_raws``).
        device: Where to compute.
        seed: The run's seed (``sgc-proto`` draws nothing; kept for the baseline's constructor).

    Returns:
        ``{"method": "sgc-proto", "val": float, "settings": {"k": K, "features": ...}, "selected_on": str,
        "grid": [{"k": .., "val": ..}, ...], "seconds": float}``.
    """
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    threads = torch.get_num_threads()
    # Hundreds of tiny per-task products: on a busy 2-core CPU two threads made them 10x slower (26 s against 2 s
    # for Amazon-Photo's 100 validation tasks x 5 K; docs/baselines.md "Run health").
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=devices):  # nothing the run draws afterwards may change
            record = _fit(domain, val_raws, device, seed)
    finally:
        torch.set_num_threads(threads)
    return {"method": BASELINE, "val": float(record["val"]),
            "settings": {**record["settings"], "features": getattr(domain, "features", None)},
            "selected_on": record["selected_on"], "grid": record["grid"], "seconds": record["seconds"]}


def _fit(domain: Any, val_raws: Sequence[Any], device: torch.device | str, seed: int) -> dict[str, Any]:
    """``sgc-proto``'s ``fit`` on the run's validation tasks read on the whole graph; frees its cache after."""
    from cmlgraph.algorithms.baselines import CACHE, make_baseline

    algo = make_baseline(BASELINE, seed=seed)
    holder = _BaselineHolder()
    algo.prepare(holder)  # type: ignore[arg-type]
    holder.to(device)
    try:
        return algo.fit(holder, WholeGraphTasks(domain), val_raws, device)  # type: ignore[arg-type]
    finally:  # free S^K X and S: the run's own episodes share this cache
        cache = _whole_graph_cache(domain, device)
        for key in [k for k in cache if isinstance(k, str) and k.startswith(CACHE)]:
            del cache[key]


def _whole_graph_cache(domain: Any, device: torch.device | str) -> dict[str, Any]:
    """The cache dict that ``domain``'s whole-graph inputs on ``device`` share."""
    from cmlgraph.domains.graph import GraphDomain

    return GraphDomain.node_input(domain, torch.zeros(0, dtype=torch.long), device).cache


def console_line(best_val: float | None, best_step: int, record: dict[str, Any], num_tasks: int) -> str:
    """The end-of-run line: the run's best validation accuracy beside the baseline's on the same tasks."""
    run = f"{best_val:.4f} (step {best_step})" if best_val is not None else "none (no validation)"
    if record.get("val") is None:
        return f"best validation accuracy {run}; {record['method']} not computed: {record.get('skipped')}"
    settings = ", ".join(f"{k} {v}" for k, v in record["settings"].items() if k != "features")
    return (f"best validation accuracy {run}; training-free {record['method']} ({settings}) on the same "
            f"{num_tasks} validation tasks: {record['val']:.4f}")


__all__ = ["BASELINE", "MAX_DENSE_BYTES", "WholeGraphTasks", "applies", "baseline_val", "console_line",
           "skip_reason"]
