"""The CUDA-graph capture's input buffers for GAT's k-hop subgraph inputs (issue 18 item 4; :mod:`.cuda_graphs`).

GAT in ``khop`` mode reads each episode's own k-hop subgraph (``GraphInput.subgraph``), whose node and edge counts
change with every batch, and runs a meta-batch's tasks as one pass over their disjoint union. :class:`UnionBuffers`
holds one padded union per side (support, query) (:class:`~cmlgraph.backbones.union_static.StaticUnion`) on fixed
``GraphInput`` objects that the captured meta-step reads, and refills them from each meta-batch's subgraphs: device
copies only. A batch that outgrows the buffers asks for larger ones (:meth:`UnionBuffers.fits` is False; the step
captures again with :meth:`UnionBuffers.needs`). Only the stacked meta-step is captured: task by task, PyG's
``GATConv`` runs on each subgraph's own sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cmlgraph.backbones.gnn import STATIC_BATCH_KEY
from cmlgraph.backbones.union_static import StaticUnion, UnionCapacity, union_needs
from cmlgraph.core.episode import Episode
from cmlgraph.graphs.types import GraphInput
from cmlgraph.train.cuda_graphs import copy_targets

#: The subgraph sides of an episode.
UNION_SIDES = ("support_x", "query_x")


class UnionBuffers:
    """Static subgraph-union inputs of a meta-batch's shape, refilled for each meta-batch.

    Args:
        episodes: The first meta-batch (GAT k-hop subgraph sides).
        stacked: Whether the meta-step stacks the tasks; only a stacked step is captured.
        capacity: Per side, buffers at least this large (a recapture's grown capacities).

    Raises:
        ValueError: The meta-step runs the tasks one by one, or a padded union would be too large
            (:class:`~cmlgraph.backbones.union_static.StaticUnion`).
    """

    def __init__(self, episodes: Sequence[Episode], stacked: bool,
                 capacity: dict[str, UnionCapacity] | None = None) -> None:
        if not stacked:
            raise ValueError("GAT's k-hop subgraphs are captured with the tasks batched only (train.batched on)")
        self.static = [Episode(self._fixed(ep.support_x), ep.support_y.clone(), self._fixed(ep.query_x),
                               ep.query_y.clone()) for ep in episodes]
        self.unions = {side: StaticUnion([getattr(ep, side) for ep in episodes],
                                         None if capacity is None else capacity[side]) for side in UNION_SIDES}
        for side in UNION_SIDES:  # where the GNN's pass over these very inputs finds its union
            items = [getattr(ep, side) for ep in self.static]
            items[0].__dict__[STATIC_BATCH_KEY] = (tuple(id(it) for it in items), self.unions[side])

    @staticmethod
    def _fixed(x: GraphInput) -> GraphInput:
        """A fixed subgraph input of the first batch's task (its shapes only are read: the pass takes the padded
        union; its self-loop cache sizes the memory estimate)."""
        return GraphInput(x.x, x.edge_index, x.nodes.clone(), dict(x.cache), subgraph=True)

    @staticmethod
    def signature(episodes: Sequence[Episode]) -> list[tuple[Any, ...]]:
        """What must match besides the subgraph sizes: the feature width, layout and dtype, the requested-node
        counts and the targets' shapes."""
        return [tuple((tuple(x.x.shape[1:]), x.x.layout, x.x.dtype, bool(x.subgraph), tuple(x.nodes.shape))
                      for x in (ep.support_x, ep.query_x)) + (tuple(ep.support_y.shape), tuple(ep.query_y.shape))
                for ep in episodes]

    def fits(self, episodes: Sequence[Episode]) -> bool | None:
        """Whether ``episodes`` fit these buffers (True), need larger ones (False) or are of another shape
        (``None``: that step runs eagerly)."""
        if self.signature(episodes) != self.signature(self.static):
            return None
        return all(self.unions[side].holds([getattr(ep, side) for ep in episodes]) for side in UNION_SIDES)

    def needs(self, episodes: Sequence[Episode]) -> dict[str, UnionCapacity]:
        """Capacities holding both these buffers' and ``episodes``' unions."""
        return {side: self.unions[side].capacity.grown(union_needs([getattr(ep, side) for ep in episodes]))
                for side in UNION_SIDES}

    def copy_in(self, episodes: Sequence[Episode]) -> None:
        """Refill the buffers with ``episodes`` (which :meth:`fits`), asynchronously."""
        for side in UNION_SIDES:
            self.unions[side].fill([getattr(ep, side) for ep in episodes])
            for dst, src in zip(self.static, episodes, strict=True):
                getattr(dst, side).nodes.copy_(getattr(src, side).nodes, non_blocking=True)
        copy_targets(self.static, episodes)


__all__ = ["UNION_SIDES", "UnionBuffers"]
