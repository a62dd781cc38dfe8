"""The graphs the benchmark runs on, prepared once and reloaded by every case that needs them.

Why a file per graph: each case runs in a fresh process so that its peak memory is its own, and generating the
1M-node synthetic graph takes seconds and a transient gigabyte or two. The graph is therefore built once, in its
own process, and saved as plain tensors; a case only loads what it keeps in memory (``weights_only=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cmlgraph.graphs import FewShotGraph


@dataclass(frozen=True)
class GraphSpec:
    """A benchmark graph.

    Attributes:
        key: Short name used in case names (``synthetic-10k``, ``amazon-clothing``).
        source: ``synthetic`` (the embedded generator) or a registry dataset name.
        options: Keyword arguments of :func:`cmlgraph.graphs.make_synthetic` (synthetic graphs only).
    """

    key: str
    source: str
    options: dict[str, Any] = field(default_factory=dict)


def synthetic(key: str, num_nodes: int, num_edges: int | None = None) -> GraphSpec:
    """A synthetic contextual-SBM graph with the generator's defaults (64 dense features, 60 classes)."""
    opts: dict[str, Any] = {"num_nodes": num_nodes}
    if num_edges is not None:
        opts["num_edges"] = num_edges
    return GraphSpec(key, "synthetic", opts)


def build_graph(spec: GraphSpec, data_root: str | None = None) -> FewShotGraph:
    """Generate or load the graph of a spec (the partial Amazon-Clothing is accepted)."""
    if spec.source == "synthetic":
        from cmlgraph.graphs import make_synthetic

        return make_synthetic(seed=0, **spec.options)
    from cmlgraph.graphs import load_graph

    return load_graph(spec.source, data_root, allow_partial=True)


def save_graph(graph: FewShotGraph, path: Path) -> dict[str, Any]:
    """Save a graph as plain tensors; returns its size facts for the report."""
    x = graph.x.coalesce() if graph.x.layout == torch.sparse_coo else graph.x
    torch.save({"x": x, "edge_index": graph.edge_index, "y": graph.y,
                "partial": torch.tensor(bool(graph.partial)),
                "splits": {k: torch.tensor(v, dtype=torch.long) for k, v in graph.splits.items()}}, path)
    stored = x._nnz() * (4 + 8 * x.dim()) if x.layout == torch.sparse_coo else x.numel() * x.element_size()
    return {"nodes": graph.num_nodes, "edges": graph.num_edges, "features": graph.num_features,
            "sparse_features": graph.sparse_features, "feature_bytes": int(stored), "partial": bool(graph.partial)}


def load_saved_graph(path: Path, name: str) -> FewShotGraph:
    """Rebuild a graph written by :func:`save_graph`."""
    state = torch.load(path, weights_only=True)
    splits = {k: [int(c) for c in v.tolist()] for k, v in state["splits"].items()}
    return FewShotGraph(name=name, x=state["x"], edge_index=state["edge_index"], y=state["y"], splits=splits,
                        partial=bool(state["partial"]))


__all__ = ["GraphSpec", "build_graph", "load_saved_graph", "save_graph", "synthetic"]
