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
from cmlgraph.core.episode import Episode
from cmlgraph.core.streams import group_tasks
from cmlgraph.graphs.types import GraphInput
from cmlgraph.train.cuda_graph_plans import PlanBuffers

#: The matched sides of an episode.
MATCHED_SIDES = ("support_x", "query_x")


class MatchedBuffers(PlanBuffers):
    """Static AMM-GNN inputs of a meta-batch's shape, refilled for each meta-batch: :class:`~cmlgraph.train.
    cuda_graph_plans.PlanBuffers` over the matched inputs' trees, in the encoder's task groups, plus the drawn rows.

    Args:
        episodes: The first meta-batch.
        stacked: Whether the meta-step stacks the tasks (the encoder's groups) or runs them one by one.
        extractor: The run's :class:`~cmlgraph.backbones.ammgnn.MatchedGCN`.
        capacity: Per side and group, buffers at least this large (a recapture's grown capacities), else ``SLACK``
            over the first batch's needs.
    """

    def _spans(self, tasks: int) -> list[tuple[int, int]]:
        """The task groups the encoder runs together (its ``max_tasks``), or one task each."""
        return (group_tasks([1] * tasks, int(self.extractor.max_tasks)) if self.stacked
                else [(i, i + 1) for i in range(tasks)])

    @staticmethod
    def _tree(x: MatchedInput) -> GraphInput:
        return x.graph

    @staticmethod
    def _fixed(x: MatchedInput) -> MatchedInput:  # type: ignore[override]
        """A fixed input of the same graph, node and draw counts and dropout switch (its memo set by the buffers)."""
        g = x.graph
        return MatchedInput(GraphInput(g.x, g.edge_index, g.nodes.clone(), g.cache, local=True), x.match.clone(),
                            x.dropout)

    def _install(self, episodes: Sequence[Episode]) -> None:
        """Put the layouts and drawn rows where the encoder's pass over these very inputs finds them."""
        self.rows: dict[tuple[str, int], Tensor] = {
            key: _drawn_rows([getattr(episodes[i], key[0]) for i in group])
            for key, group in self._groups(len(episodes))}
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

    def _refill_group(self, key: tuple[str, int], items: list[Any]) -> None:
        self.rows[key].copy_(_drawn_rows(items), non_blocking=True)

    @staticmethod
    def _refill_input(dst: MatchedInput, src: MatchedInput) -> None:
        dst.graph.nodes.copy_(src.graph.nodes, non_blocking=True)
        dst.match.copy_(src.match, non_blocking=True)


def _drawn_rows(items: list[MatchedInput]) -> Tensor:
    """The tasks' drawn rows, ``[T, 2, k, F]`` (dense): gathered on the host by the domain's ``materialize`` where
    it did (``MATCH_ROWS_KEY``; a sparse row selection on the device would sync), else here."""
    return torch.stack([it.memo[MATCH_ROWS_KEY] if MATCH_ROWS_KEY in it.memo else match_rows(it.graph, it.match)
                        for it in items])


__all__ = ["MATCHED_SIDES", "MatchedBuffers"]
