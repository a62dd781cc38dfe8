"""The CUDA-graph capture's input buffers for G-Meta's ball inputs (issue 18 item 4; :mod:`.cuda_graphs`).

A G-Meta meta-batch's data are its ball layouts (:func:`cmlgraph.backbones.gmeta.ball_layout`, one per side:
support and query), whose sizes change with every batch. :class:`BallBuffers` holds one padded static layout per
side (:mod:`cmlgraph.backbones.ball_static`) inside fixed ``BallInput`` objects that the captured meta-step reads
(the stacked batch's memo, or the input's own memo for a single unstacked task), and refills them from each
meta-batch's layouts, which the prefetch worker built ahead (:meth:`~cmlgraph.domains.tlp_graph.TLPGraphDomain.
prepare_batch`): device copies only. A batch that outgrows the buffers asks for larger ones (:meth:`BallBuffers.
fits` is False; the step captures again with :meth:`BallBuffers.grown`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cmlgraph.backbones.ball_static import BallCapacity, fill_static, layout_size, static_layout
from cmlgraph.backbones.gmeta import ball_layout, prepare_ball_batch
from cmlgraph.core.episode import Episode
from cmlgraph.graphs.balls import STACK_KEY, BallInput
from cmlgraph.train.cuda_graphs import copy_targets

#: The ball sides of an episode.
BALL_SIDES = ("support_x", "query_x")


class BallBuffers:
    """Static ball inputs of a meta-batch's shape, refilled for each meta-batch.

    Args:
        episodes: The first meta-batch (its layouts are built here if the prefetch worker has not).
        stacked: Whether the meta-step stacks the tasks (one block-diagonal pass) or runs one task alone.
        max_rows: The encoder's ``max_rows`` (a stacked batch must be one row group of it).
        capacity: Per side, buffers at least this large (a recapture's grown capacities), else ``SLACK`` over the
            first batch's needs.

    Raises:
        ValueError: The layouts cannot be held statically (directed graph, sparse features, several row groups).
    """

    def __init__(self, episodes: Sequence[Episode], stacked: bool, max_rows: int,
                 capacity: dict[str, BallCapacity] | None = None) -> None:
        self.stacked, self.max_rows = stacked, max_rows
        self.static = [Episode(_fixed(ep.support_x), ep.support_y.clone(), _fixed(ep.query_x), ep.query_y.clone())
                       for ep in episodes]
        self.layouts: dict[str, dict[str, Any]] = {}
        for side in BALL_SIDES:
            lay = self.layout(episodes, side)
            if lay is None:
                raise ValueError(f"the meta-batch's {side} balls exceed one pass of {max_rows} rows")
            base = BallCapacity(0, 0, 0) if capacity is None else capacity[side]
            self.layouts[side] = static_layout(lay, base.grown(layout_size(lay)))
            self._install(side)

    def layout(self, episodes: Sequence[Episode], side: str) -> dict[str, Any] | None:
        """The (unpadded) layout of one side of ``episodes``, as the eager meta-step would use it; ``None`` when the
        stacked tasks split into several row groups (that step runs eagerly)."""
        items = [getattr(ep, side) for ep in episodes]
        if not self.stacked:
            return ball_layout(items, items[0].memo)
        memo = prepare_ball_batch(BallInput.stack_tasks(items), self.max_rows)
        return memo["layouts"][0] if len(memo["groups"]) == 1 else None

    def _install(self, side: str) -> None:
        items = [getattr(ep, side) for ep in self.static]
        lay = self.layouts[side]
        if not self.stacked:
            items[0].memo = lay
        else:  # what stack_tasks finds for these very inputs: one group, the static layout
            batch_memo = {"grouped_for": (self.max_rows, None), "groups": [(0, len(items))], "layouts": [lay]}
            items[0].memo = {STACK_KEY: (tuple(id(it) for it in items), batch_memo)}

    def capacity(self) -> dict[str, BallCapacity]:
        """Each side's buffer capacities."""
        return {side: lay["capacity"] for side, lay in self.layouts.items()}

    def signature(self, episodes: Sequence[Episode]) -> list[tuple[Any, ...]]:
        """What must match between these buffers and a meta-batch besides the layout sizes: the graph, the
        centre-node counts, the dropout switches and the targets' shapes."""
        return [tuple((id(x.index), tuple(x.nodes.shape), x.dropout) for x in (ep.support_x, ep.query_x))
                + (tuple(ep.support_y.shape), tuple(ep.query_y.shape)) for ep in episodes]

    def fits(self, episodes: Sequence[Episode]) -> bool | None:
        """Whether ``episodes`` fit these buffers (True), need larger ones (False) or cannot be held statically at
        all (``None``: several row groups, or another graph or shape: that step runs eagerly)."""
        if self.signature(episodes) != self.signature(self.static):
            return None
        fit = True
        for side, static in self.layouts.items():
            lay = self.layout(episodes, side)  # same graph (signature): as paddable as the first batch's
            if lay is None:
                return None
            fit = fit and static["capacity"].holds(layout_size(lay))
        return fit

    def needs(self, episodes: Sequence[Episode]) -> dict[str, BallCapacity]:
        """Capacities holding both these buffers' and ``episodes``' layouts."""
        return {side: self.layouts[side]["capacity"].grown(layout_size(self.layout(episodes, side)))
                for side in BALL_SIDES}

    def copy_in(self, episodes: Sequence[Episode]) -> None:
        """Refill the buffers with ``episodes`` (which :meth:`fits`), asynchronously."""
        for side in BALL_SIDES:
            fill_static(self.layouts[side], self.layout(episodes, side))
        for dst, src in zip(self.static, episodes, strict=True):
            for side in BALL_SIDES:
                getattr(dst, side).nodes.copy_(getattr(src, side).nodes, non_blocking=True)
        copy_targets(self.static, episodes)


def _fixed(x: BallInput) -> BallInput:
    """A fixed input of the same graph, centre-node count and dropout switch (its memo set by the buffers)."""
    return BallInput(x.index, x.nodes.clone(), x.dropout)


__all__ = ["BALL_SIDES", "BallBuffers"]
