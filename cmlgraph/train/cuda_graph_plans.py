"""The CUDA-graph capture's input buffers for k-hop computation-tree inputs (issue 18 item 4; :mod:`.cuda_graphs`).

A k-hop meta-batch's data are its tasks' computation trees (:class:`~cmlgraph.backbones.gnn_plan.Plan`, built on
the host by the prefetch worker, :meth:`~cmlgraph.domains.graph.GraphDomain.tree_input`), whose sizes change with
every batch. :class:`PlanBuffers` holds one padded layout per side (support, query) and task group
(:class:`~cmlgraph.backbones.plan_static.StaticTaskLayout`: the whole meta-batch when the tasks run stacked, else
one per task) on fixed ``GraphInput`` objects that the captured meta-step reads, and refills them from each
meta-batch's plans: device copies only. A batch that outgrows the buffers asks for larger ones (:meth:`PlanBuffers.
fits` is False; the step captures again with :meth:`PlanBuffers.needs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cmlgraph.backbones.gnn import STATIC_BATCH_KEY, STATIC_LAYOUT_KEY
from cmlgraph.backbones.gnn_plan import Plan
from cmlgraph.backbones.plan_static import PlanCapacity, StaticTaskLayout, plan_needs
from cmlgraph.core.episode import Episode
from cmlgraph.graphs.types import GraphInput
from cmlgraph.train.cuda_graphs import copy_targets

#: The computation-tree sides of an episode.
PLAN_SIDES = ("support_x", "query_x")


class PlanBuffers:
    """Static computation-tree inputs of a meta-batch's shape, refilled for each meta-batch.

    The shared mechanism of padded trees (also AMM-GNN's, :class:`~cmlgraph.train.cuda_graph_matched.
    MatchedBuffers`, which overrides the hooks ``_spans``, ``_tree``, ``_fixed``, ``_install``, ``signature`` and
    the refills): one padded layout per side and task group, the fit and growth checks, the refill.

    Args:
        episodes: The first meta-batch (k-hop ``GraphInput`` sides with their plans prepared, or built here).
        stacked: Whether the meta-step stacks the tasks (one padded layout per side) or runs them one by one (one
            per side and task).
        extractor: The run's GNN (:class:`~cmlgraph.backbones.gnn.GNNBackbone`, a plan kind), in the mode of the
            meta-step (training: its dropout decides what the pass reads).
        capacity: Per side and group, buffers at least this large (a recapture's grown capacities), else ``SLACK``
            over the first batch's needs.

    Raises:
        ValueError: A padded layout would be too large (:class:`~cmlgraph.backbones.plan_static.StaticTaskLayout`).
    """

    def __init__(self, episodes: Sequence[Episode], stacked: bool, extractor: Any,
                 capacity: dict[tuple[str, int], PlanCapacity] | None = None) -> None:
        self.stacked, self.extractor = stacked, extractor
        self.reads = extractor.plan_reads()
        self.static = [Episode(self._fixed(ep.support_x), ep.support_y.clone(), self._fixed(ep.query_x),
                               ep.query_y.clone()) for ep in episodes]
        self.layouts: dict[tuple[str, int], StaticTaskLayout] = {}
        for key, group in self._groups(len(episodes)):
            base = None if capacity is None else capacity[key]
            self.layouts[key] = StaticTaskLayout(self._plans(episodes, key[0], group), self.reads, base)
        self._install(episodes)

    def _spans(self, tasks: int) -> list[tuple[int, int]]:
        """The task groups ``[a, b)`` the pass runs together: the whole meta-batch stacked, else one task each."""
        return [(0, tasks)] if self.stacked else [(i, i + 1) for i in range(tasks)]

    def _groups(self, tasks: int) -> list[tuple[tuple[str, int], list[int]]]:
        return [((side, g), list(range(a, b))) for side in PLAN_SIDES for g, (a, b) in enumerate(self._spans(tasks))]

    @staticmethod
    def _tree(x: Any) -> GraphInput:
        """The computation-tree input of an episode side (the extractor's ``plan`` reads it)."""
        return x

    @staticmethod
    def _fixed(x: GraphInput) -> GraphInput:
        """A fixed computation-tree input of the same graph and node count (its layout set by the buffers)."""
        return GraphInput(x.x, x.edge_index, x.nodes.clone(), x.cache, local=True)

    def _plans(self, episodes: Sequence[Episode], side: str, group: list[int]) -> list[Plan]:
        return [self.extractor.plan(self._tree(getattr(episodes[i], side))) for i in group]

    def _install(self, episodes: Sequence[Episode]) -> None:
        """Put the layouts where the GNN's pass over these very inputs finds them (:mod:`cmlgraph.backbones.gnn`)."""
        for key, group in self._groups(len(episodes)):
            items = [getattr(self.static[i], key[0]) for i in group]
            if self.stacked:
                items[0].__dict__[STATIC_BATCH_KEY] = (tuple(id(it) for it in items), self.layouts[key])
            else:
                items[0].__dict__[STATIC_LAYOUT_KEY] = self.layouts[key]

    def signature(self, episodes: Sequence[Episode]) -> list[tuple[Any, ...]]:
        """What must match between these buffers and a meta-batch besides the plan sizes: the graph, the
        requested-node counts and the targets' shapes."""
        return [tuple((id(x.x), bool(x.local), tuple(x.nodes.shape)) for x in (ep.support_x, ep.query_x))
                + (tuple(ep.support_y.shape), tuple(ep.query_y.shape)) for ep in episodes]

    def fits(self, episodes: Sequence[Episode]) -> bool | None:
        """Whether ``episodes`` fit these buffers (True), need larger ones (False) or are of another graph or shape
        (``None``: that step runs eagerly)."""
        if self.signature(episodes) != self.signature(self.static):
            return None
        return all(self.layouts[key].holds(self._plans(episodes, key[0], group))
                   for key, group in self._groups(len(episodes)))

    def needs(self, episodes: Sequence[Episode]) -> dict[tuple[str, int], PlanCapacity]:
        """Capacities holding both these buffers' and ``episodes``' plans."""
        return {key: self.layouts[key].capacity.grown(plan_needs(self._plans(episodes, key[0], group), self.reads))
                for key, group in self._groups(len(episodes))}

    def copy_in(self, episodes: Sequence[Episode]) -> None:
        """Refill the buffers with ``episodes`` (which :meth:`fits`), asynchronously."""
        for key, group in self._groups(len(episodes)):
            self.layouts[key].fill(self._plans(episodes, key[0], group))
            self._refill_group(key, [getattr(episodes[i], key[0]) for i in group])
        for dst, src in zip(self.static, episodes, strict=True):
            for side in PLAN_SIDES:
                self._refill_input(getattr(dst, side), getattr(src, side))
        copy_targets(self.static, episodes)

    def _refill_group(self, key: tuple[str, int], items: list[Any]) -> None:
        """Refill a group's buffers besides its layout (none here)."""

    @staticmethod
    def _refill_input(dst: Any, src: Any) -> None:
        dst.nodes.copy_(src.nodes, non_blocking=True)


__all__ = ["PLAN_SIDES", "PlanBuffers"]
