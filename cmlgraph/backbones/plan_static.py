"""Computation-tree layouts padded to fixed capacities, so that a CUDA graph can replay a k-hop meta-step (issue 18
item 4).

Why: a meta-batch's batched computation trees (:class:`~cmlgraph.backbones.gnn_plan.TaskLayout`) have
data-dependent sizes: every level's node count and every layer's aggregation entries change with the tasks. A
captured CUDA graph needs every tensor at a fixed address and shape. A :class:`StaticTaskLayout` holds buffers of
capacities ``R_l`` rows per task at each level and ``E_i`` entries per layer (:class:`PlanCapacity`), refilled in
place for each meta-batch (:meth:`StaticTaskLayout.fill`: device copies, adds and fills, no host synchronisation);
a meta-batch larger than the capacities needs larger buffers (the caller captures again,
:mod:`cmlgraph.train.cuda_graph_plans`). It answers what :meth:`cmlgraph.backbones.gnn.GNNBackbone._forward_plan`
asks a ``TaskLayout`` (``tasks``, ``sizes``, ``agg``, ``constant``, ``features``, ``select_output``).

The padding is inert (the padded pass equals the unpadded one up to float summation order; test:
``tests/backbones/test_plan_static.py``):

- each task's block of a level holds its real rows first, then pad rows; a pad row's features are zero and no
  real row reads it (no aggregation entry points at it; :func:`~cmlgraph.backbones.gnn_plan.prefix_rows` may copy
  a real row of the level below into it, which is never read either);
- pad entries of an aggregation have value 0, their rows and columns spread over the block (``arange`` modulo its
  size: no one row takes every pad's atomic add on a GPU); they add ``0 · h[col]``;
- the output rows are gathered through a ``[T, n]`` index buffer, so pad rows never reach the embeddings.

Aggregations run as gather-scale-scatter (:class:`IndexAggregation`: ``index_select``, ``index_add``) rather than
CSR products, whose row pointer depends on the entry counts. Sparse features (bag of words) densify into the
constants' buffers (at most :data:`MAX_FEATURE_BYTES` each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from cmlgraph.backbones.gnn_ops import IndexAggregation, is_sparse
from cmlgraph.backbones.gnn_plan import Plan, complete_plan, plan_constant

#: Capacity over the first meta-batch's needs (rows per level, entries per layer), and growth when a later one
#: needs more.
SLACK = 1.25
#: Most bytes of one padded constant (sparse features densify into it).
MAX_FEATURE_BYTES = 1 << 30


@dataclass(frozen=True)
class PlanReads:
    """What a GNN's pass over computation trees reads from its layout (:meth:`~cmlgraph.backbones.gnn.GNNBackbone.
    plan_reads`): ``constants`` as ``(key, level)`` pairs (:func:`~cmlgraph.backbones.gnn_plan.plan_constant`'s
    keys) and the ``layers`` whose aggregation it multiplies."""

    constants: tuple[tuple[str, int], ...]
    layers: tuple[int, ...]

    @property
    def complete(self) -> bool:
        """Whether the input level ``N_k`` is read (input dropout: the plans must be completed)."""
        return 0 in self.levels

    @property
    def levels(self) -> frozenset[int]:
        """The levels whose rows the pass reads (the last one, the outputs, always; counted from the input)."""
        read = {level for _, level in self.constants} | {i for i in self.layers} | {i + 1 for i in self.layers}
        return frozenset(read)


@dataclass(frozen=True)
class PlanCapacity:
    """Sizes of a static layout's buffers: ``rows`` per task at each level (input level first) and aggregation
    ``entries`` (all tasks together) per layer (0 for layers not read)."""

    rows: tuple[int, ...]
    entries: tuple[int, ...]

    def holds(self, need: PlanCapacity) -> bool:
        """Whether a meta-batch of sizes ``need`` (:func:`plan_needs`) fits these buffers."""
        return (all(n <= c for n, c in zip(need.rows, self.rows, strict=True))
                and all(n <= c for n, c in zip(need.entries, self.entries, strict=True)))

    def grown(self, need: PlanCapacity, slack: float = SLACK) -> PlanCapacity:
        """Capacities holding ``need`` and these ones, each with ``slack`` to spare (the next batches vary); each
        level at least as many rows as the next (a level's first rows are the next level's nodes)."""
        def up(a: int, b: int) -> int:
            return max(a, math.ceil(b * slack)) if b else a

        rows = [up(a, b) for a, b in zip(self.rows, need.rows, strict=True)]
        for i in range(len(rows) - 2, -1, -1):
            if rows[i]:
                rows[i] = max(rows[i], rows[i + 1])
        return PlanCapacity(tuple(rows), tuple(up(a, b) for a, b in zip(self.entries, need.entries, strict=True)))


def plan_needs(plans: list[Plan], reads: PlanReads) -> PlanCapacity:
    """The rows per level (most over the tasks) and entries per read layer (summed over the tasks) of ``plans``;
    host metadata only (sizes and tensor shapes), no read-back. Completes the plans when ``reads`` needs the
    input level (the prefetch worker has done it for the domain's inputs)."""
    if reads.complete:
        for p in plans:
            complete_plan(p)
    levels = len(plans[0].sizes)
    read = reads.levels | {levels - 1}
    rows = [max(p.sizes[i] for p in plans) if i in read else 0 for i in range(levels)]
    entries = [sum(int(p.mats[i].rows.numel()) for p in plans) if i in reads.layers else 0
               for i in range(levels - 1)]
    return PlanCapacity(tuple(rows), tuple(entries))


def _dense(x: Tensor) -> Tensor:
    return x.to_dense() if is_sparse(x) else x


class StaticTaskLayout:
    """Fixed buffers of a meta-batch's computation trees (see the module docstring), refilled per meta-batch.

    Args:
        plans: The first meta-batch's plans, one per task (on the run's device).
        reads: What the GNN's pass reads (:meth:`~cmlgraph.backbones.gnn.GNNBackbone.plan_reads`).
        capacity: Buffers at least this large (a recapture's grown capacities), else ``SLACK`` over the first
            batch's needs.

    Raises:
        ValueError: A padded constant would exceed :data:`MAX_FEATURE_BYTES`.
    """

    def __init__(self, plans: list[Plan], reads: PlanReads, capacity: PlanCapacity | None = None) -> None:
        need = plan_needs(plans, reads)
        base = PlanCapacity(tuple(0 for _ in need.rows), tuple(0 for _ in need.entries))
        self.capacity = (base if capacity is None else capacity).grown(need)
        self.reads, self.tasks = reads, len(plans)
        self.sizes = list(self.capacity.rows)
        self.outputs = int(plans[0].out.numel()) if plans[0].out is not None else plans[0].sizes[-1]
        first = plans[0]
        dev, t = first.x.device, self.tasks
        self.out = torch.zeros(t, self.outputs, dtype=torch.long, device=dev)
        self._arange = torch.arange(self.outputs, device=dev)
        self.aggs: dict[int, IndexAggregation] = {}
        self._pads: dict[int, tuple[Tensor, Tensor]] = {}
        for i in reads.layers:
            e = self.capacity.entries[i]
            vals = first.mats[i].vals
            self.aggs[i] = IndexAggregation(
                torch.zeros(e, dtype=torch.long, device=dev), torch.zeros(e, dtype=torch.long, device=dev),
                torch.zeros(e, dtype=vals.dtype, device=dev), (t * self.sizes[i + 1], t * self.sizes[i]))
            # pad entries spread over the rows and columns (zero values): no one row takes every pad's atomic add
            spread = torch.arange(e, device=dev)
            self._pads[i] = (spread % (t * self.sizes[i + 1]), spread % (t * self.sizes[i]))
        self.constants: dict[tuple[str, int], Tensor] = {}
        for key, level in reads.constants:
            c = plan_constant(first, key)
            size = t * self.sizes[level] * int(c.shape[1]) * c.element_size()
            if size > MAX_FEATURE_BYTES:
                raise ValueError(f"the padded {key!r} features would take {size / 2**20:.0f} MiB dense (> "
                                 f"{MAX_FEATURE_BYTES / 2**20:.0f} MiB): too wide to pad")
            self.constants[(key, level)] = torch.zeros(t, self.sizes[level], int(c.shape[1]), dtype=c.dtype,
                                                       device=dev)
        self.fill(plans)

    def holds(self, plans: list[Plan]) -> bool:
        """Whether ``plans`` (as many tasks, as many outputs each) fit these buffers."""
        out = int(plans[0].out.numel()) if plans[0].out is not None else plans[0].sizes[-1]
        return len(plans) == self.tasks and out == self.outputs and self.capacity.holds(plan_needs(plans,
                                                                                                   self.reads))

    def fill(self, plans: list[Plan]) -> None:
        """Refill the buffers in place with ``plans``, padded (device copies and fills, asynchronous: no host
        synchronisation once the plans' constants exist, which the prefetch worker may build ahead).

        Raises:
            ValueError: ``plans`` do not fit (:meth:`holds`).
        """
        if not self.holds(plans):
            raise ValueError(f"computation trees of {plan_needs(plans, self.reads)} for {len(plans)} tasks do not fit "
                             f"static buffers of {self.capacity} for {self.tasks} tasks")
        r = self.sizes
        for i, agg in self.aggs.items():
            start = 0
            for t, p in enumerate(plans):
                m = p.mats[i]
                e = int(m.rows.numel())
                torch.add(m.rows, t * r[i + 1], out=agg.rows[start:start + e])
                torch.add(m.cols, t * r[i], out=agg.cols[start:start + e])
                agg.vals[start:start + e].copy_(m.vals, non_blocking=True)
                start += e
            pad_rows, pad_cols = self._pads[i]  # pad entries: 0 · h[col] into row, spread over the block
            agg.rows[start:].copy_(pad_rows[start:])
            agg.cols[start:].copy_(pad_cols[start:])
            agg.vals[start:].zero_()
        for (key, _level), buf in self.constants.items():
            for t, p in enumerate(plans):
                c = _dense(plan_constant(p, key))
                buf[t, : c.shape[0]].copy_(c, non_blocking=True)
                buf[t, c.shape[0]:].zero_()
        for t, p in enumerate(plans):
            self.out[t].copy_(self._arange if p.out is None else p.out, non_blocking=True)

    # ---- what GNNBackbone._forward_plan reads (TaskLayout's interface) ----
    def agg(self, layer: int) -> IndexAggregation:
        """Block-diagonal aggregation of ``layer``: ``[T·R_{layer+1}, T·R_layer]``."""
        if layer not in self.aggs:
            raise KeyError(f"the static layout holds no aggregation of layer {layer} (built for {self.reads})")
        return self.aggs[layer]

    def constant(self, key: str, level: int) -> Tensor:
        """A per-task constant, ``[T, R_level, F]``."""
        if (key, level) not in self.constants:
            raise KeyError(f"the static layout holds no constant {key!r} at level {level} (built for {self.reads})")
        return self.constants[(key, level)]

    def features(self) -> Tensor:
        """The input level's features, ``[T, R_0, F]``."""
        return self.constant("x", 0)

    def select_output(self, h: Tensor) -> Tensor:
        """``[T·R_k, d]`` last-level rows → ``[T, n, d]`` in the requested node order of each task."""
        h = h.view(self.tasks, self.sizes[-1], h.shape[-1])
        return torch.gather(h, 1, self.out.unsqueeze(-1).expand(-1, -1, h.shape[-1]))


__all__ = ["MAX_FEATURE_BYTES", "SLACK", "PlanCapacity", "PlanReads", "StaticTaskLayout",
           "plan_needs"]
