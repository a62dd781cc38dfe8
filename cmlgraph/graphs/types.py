"""Typed containers shared by the graph data layer, the episode sampler and the GNN backbones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor


@dataclass
class GraphInput:
    """What a GNN backbone reads: a graph (the full one or an episode's k-hop subgraph) and the nodes to embed.

    Attributes:
        x: Node features ``[num_nodes, F]``; dense, or a torch sparse tensor (COO or CSR) that stays sparse.
        edge_index: ``LongTensor[2, E]`` in PyG convention (both directions for undirected graphs).
        nodes: ``LongTensor[n]`` indices (into this graph) of the nodes whose features the backbone returns.
        cache: Per-graph precomputations a backbone may store (e.g. the normalised adjacency); keyed by name.
        local: Compute only the exact computation tree of ``nodes`` (their ``layers``-hop neighbourhood,
            shrinking layer by layer) instead of every node of the graph; same outputs. GNN kinds without a
            computation-tree path (GAT) ignore it and compute on the whole graph given.
        batch_whole: A whole-graph input (not ``local``) whose tasks the backbone runs as one batch: set by the
            graph domain for SGC, whose whole-graph pass is one cached propagation, so a batch of tasks is a
            gather of their nodes' propagated rows and one batched product (issue 18 item 3).
        subgraph: An episode's own k-hop subgraph (``x`` and ``edge_index`` of its neighbourhood; GAT in ``khop``
            mode): tasks of equally many requested nodes run as one batch over the disjoint union of their
            subgraphs (:meth:`cmlgraph.backbones.gnn.GNNBackbone.forward_tasks`).
    """

    x: Tensor
    edge_index: Tensor
    nodes: Tensor
    cache: dict[str, Any] = field(default_factory=dict)
    local: bool = False
    batch_whole: bool = False
    subgraph: bool = False

    @property
    def num_nodes(self) -> int:
        """Number of nodes of the graph (not of ``nodes``)."""
        return int(self.x.shape[0])

    @staticmethod
    def can_stack_tasks(items: list[GraphInput]) -> bool:
        """Whether these inputs (one per task) can run batched: computation-tree inputs (or whole-graph inputs
        marked ``batch_whole``) of one graph, or k-hop ``subgraph`` inputs with features of one width, layout and
        device; with the same number of requested nodes."""
        first = items[0]
        if first.subgraph:
            return all(isinstance(g, GraphInput) and g.subgraph and g.nodes.shape == first.nodes.shape
                       and g.x.layout == first.x.layout and g.x.shape[1:] == first.x.shape[1:]
                       and g.x.dtype == first.x.dtype and g.x.device == first.x.device for g in items)
        return all(isinstance(g, GraphInput) and (g.local or g.batch_whole) and g.local == first.local
                   and not g.subgraph and g.x is first.x and g.nodes.shape == first.nodes.shape for g in items)

    @staticmethod
    def stack_tasks(items: list[GraphInput]) -> GraphBatch:
        """The inputs of a meta-batch's tasks, to run together (see :class:`GraphBatch`)."""
        return GraphBatch(list(items))


@dataclass
class GraphBatch:
    """The graph inputs of several tasks run as one batch by a GNN backbone's ``forward_tasks``.

    Attributes:
        items: One :class:`GraphInput` per task.
        memo: The backbone's batched layout of the tasks (block-diagonal matrices), built on first use and
            reused by every inner step.
    """

    items: list[GraphInput]
    memo: dict[str, Any] = field(default_factory=dict)
    task_batch: ClassVar[bool] = True

    def __len__(self) -> int:
        return len(self.items)


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
