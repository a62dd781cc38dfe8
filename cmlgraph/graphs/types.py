"""Typed containers shared by the graph data layer, the episode sampler and the GNN backbones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class GraphInput:
    """What a GNN backbone reads: a graph (the full one or an episode's k-hop subgraph) and the nodes to embed.

    Attributes:
        x: Node features ``[num_nodes, F]``; dense, or a torch sparse tensor (COO or CSR) that stays sparse.
        edge_index: ``LongTensor[2, E]`` in PyG convention (both directions for undirected graphs).
        nodes: ``LongTensor[n]`` indices (into this graph) of the nodes whose features the backbone returns.
        cache: Per-graph precomputations a backbone may store (e.g. the normalised adjacency); keyed by name.
    """

    x: Tensor
    edge_index: Tensor
    nodes: Tensor
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        """Number of nodes of the graph (not of ``nodes``)."""
        return int(self.x.shape[0])


@dataclass
class NodeEpisode:
    """One N-way K-shot Q-query node-classification task.

    Labels are remapped to ``0..ways-1`` in the order of ``classes``; ``support`` and ``query`` are disjoint.

    Attributes:
        support: ``LongTensor[ways * shots]`` global node ids.
        support_y: ``LongTensor[ways * shots]`` labels in ``0..ways-1``.
        query: ``LongTensor[ways * queries]`` global node ids.
        query_y: ``LongTensor[ways * queries]`` labels in ``0..ways-1``.
        classes: ``LongTensor[ways]`` the original class ids.
    """

    support: Tensor
    support_y: Tensor
    query: Tensor
    query_y: Tensor
    classes: Tensor
