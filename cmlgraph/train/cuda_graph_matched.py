"""The CUDA-graph capture's input buffers for AMM-GNN's matched inputs (issue 18 item 4; :mod:`.cuda_graphs`).

An AMM-GNN meta-batch's data are its tasks' 2-hop computation trees over ``D⁻¹(A + I)`` (built on the host by the
prefetch worker, :meth:`~cmlgraph.domains.tlp_graph.TLPGraphDomain.materialize`) and each task's attribute-matching
draws. :class:`MatchedBuffers` holds, per side (support, query) and task group (the encoder's groups of at most
``max_tasks`` when the tasks run stacked, else one per task), a padded layout
(:class:`~cmlgraph.backbones.plan_static.StaticTaskLayout`) and the drawn rows ``[T, 2, k, F]`` in the memos
that the encoder's pass over the fixed inputs finds (:meth:`~cmlgraph.backbones.ammgnn.MatchedInput.stack_tasks`,
or the input's own memo for one task), and refills them per meta-batch: device copies only (and the drawn rows'
gather). A batch that outgrows the buffers asks for larger ones (:meth:`MatchedBuffers.fits` is False).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from cmlgraph.backbones.ammgnn import MATCH_ROWS_KEY, STATIC_STACK_KEY, MatchedInput, match_rows
from cmlgraph.backbones.plan_static import PlanCapacity, StaticTaskLayout, plan_needs
from cmlgraph.core.episode import Episode
from cmlgraph.core.streams import group_tasks
from cmlgraph.graphs.types import GraphInput

#: The matched sides of an episode.
MATCHED_SIDES = ("support_x", "query_x")


class MatchedBuffers:
    """Static AMM-GNN inputs of a meta-batch's shape, refilled for each meta-batch.

    Args:
        episodes: The first meta-batch.
        stacked: Whether the meta-step stacks the tasks (the encoder's groups) or runs them one by one.
        extractor: The run's :class:`~cmlgraph.backbones.ammgnn.MatchedGCN`.
        capacity: Per side and group, buffers at least this large (a recapture's grown capacities), else ``SLACK``
            over the first batch's needs.
    """

    def __init__(self, episodes: Sequence[Episode], stacked: bool, extractor: Any,
                 capacity: dict[tuple[str, int], PlanCapacity] | None = None) -> None:
        self.stacked, self.extractor = stacked, extractor
        self.reads = extractor.plan_reads()
        self.static = [Episode(_fixed(ep.support_x), ep.support_y.clone(), _fixed(ep.query_x), ep.query_y.clone())
                       for ep in episodes]
        self.layouts: dict[tuple[str, int], StaticTaskLayout] = {}
        self.rows: dict[tuple[str, int], Tensor] = {}
        for key, group in self._groups(len(episodes)):
            items = [getattr(episodes[i], key[0]) for i in group]
            base = None if capacity is None else capacity[key]
            self.layouts[key] = StaticTaskLayout([extractor.plan(it.graph) for it in items], self.reads, base)
            self.rows[key] = _drawn_rows(items)
        self._install()

    def _groups(self, tasks: int) -> list[tuple[tuple[str, int], list[int]]]:
        """Per side, the task groups the encoder runs together (its ``max_tasks``), or one task each."""
        spans = (group_tasks([1] * tasks, int(self.extractor.max_tasks)) if self.stacked
                 else [(i, i + 1) for i in range(tasks)])
        return [((side, g), list(range(a, b))) for side in MATCHED_SIDES for g, (a, b) in enumerate(spans)]

    def _install(self) -> None:
        """Put the layouts and drawn rows where the encoder's pass over these very inputs finds them."""
        for side in MATCHED_SIDES:
            groups = [(key, group) for key, group in self._groups(len(self.static)) if key[0] == side]
            memos = [{"layout": self.layouts[key], "rows": self.rows[key]} for key, _ in groups]
            items = [getattr(ep, side) for ep in self.static]
            for (key, group), memo in zip(groups, memos, strict=True):
                for j, i in enumerate(group):  # the regulariser's rows: views of the group's buffer
                    items[i].memo[MATCH_ROWS_KEY] = self.rows[key][j]
                if not self.stacked:
                    items[group[0]].memo.update(memo)
            if self.stacked:
                items[0].memo[STATIC_STACK_KEY] = (tuple(id(it) for it in items), {("groups", None): memos})

    def signature(self, episodes: Sequence[Episode]) -> list[tuple[Any, ...]]:
        """What must match between these buffers and a meta-batch besides the plan sizes: the graph, the node and
        draw counts, the dropout switches and the targets' shapes."""
        return [tuple((id(x.graph.x), tuple(x.graph.nodes.shape), tuple(x.match.shape), x.dropout)
                      for x in (ep.support_x, ep.query_x))
                + (tuple(ep.support_y.shape), tuple(ep.query_y.shape)) for ep in episodes]

    def _plans(self, episodes: Sequence[Episode], side: str, group: list[int]) -> list[Any]:
        return [self.extractor.plan(getattr(episodes[i], side).graph) for i in group]

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
            self.rows[key].copy_(_drawn_rows([getattr(episodes[i], key[0]) for i in group]), non_blocking=True)
        for dst, src in zip(self.static, episodes, strict=True):
            for side in MATCHED_SIDES:
                d, s = getattr(dst, side), getattr(src, side)
                d.graph.nodes.copy_(s.graph.nodes, non_blocking=True)
                d.match.copy_(s.match, non_blocking=True)
            dst.support_y.copy_(src.support_y, non_blocking=True)
            dst.query_y.copy_(src.query_y, non_blocking=True)


def _drawn_rows(items: list[MatchedInput]) -> Tensor:
    """The tasks' drawn rows, ``[T, 2, k, F]`` (dense): gathered on the host by the domain's ``materialize`` where
    it did (``MATCH_ROWS_KEY``; a sparse row selection on the device would sync), else here."""
    return torch.stack([it.memo[MATCH_ROWS_KEY] if MATCH_ROWS_KEY in it.memo else match_rows(it.graph, it.match)
                        for it in items])


def _fixed(x: MatchedInput) -> MatchedInput:
    """A fixed input of the same graph, node and draw counts and dropout switch (its memo set by the buffers)."""
    g = x.graph
    return MatchedInput(GraphInput(g.x, g.edge_index, g.nodes.clone(), g.cache, local=True), x.match.clone(),
                        x.dropout)


__all__ = ["MATCHED_SIDES", "MatchedBuffers"]
