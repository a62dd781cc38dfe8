"""GAT's k-hop subgraph unions padded to fixed capacities, so that a CUDA graph can replay a GAT k-hop meta-step
(issue 18 item 4).

Why: GAT in ``khop`` mode runs a meta-batch's tasks as one pass over the disjoint union of their own k-hop
subgraphs (:meth:`cmlgraph.backbones.gnn.GNNBackbone._subgraph_tasks`), whose node and edge counts change with
every batch. A captured CUDA graph needs every tensor at a fixed address and shape. A :class:`StaticUnion` holds the
union's buffers at capacities of ``R`` rows a task and ``E`` edges (:class:`UnionCapacity`), refilled in place for
each meta-batch (:meth:`StaticUnion.fill`: device copies, adds and fills, no host synchronisation: every size it
reads is a tensor's shape). It answers what :meth:`~cmlgraph.backbones.gnn.GNNBackbone._union_pass` reads from an
unpadded union layout (``x``, ``edges``, ``out``, ``rows``).

The padding is inert (the padded pass equals the unpadded one up to float summation order; test:
``tests/backbones/test_union_static.py``):

- task ``t``'s rows are ``t·R …``: its subgraph's nodes first, then pad rows of zero features;
- a pad edge joins a pad row to itself (pad edge ``k`` on pad row ``k mod P`` of the ``P`` pad rows: spread, so no
  one row takes every pad's atomic add on a GPU), so no real row's softmax or sum sees it, and a pad row never
  sends to a real one; every task keeps at least one pad row (:meth:`StaticUnion.holds`);
- the output rows are gathered through the ``out`` index buffer, so pad rows never reach the embeddings.

Sparse features (bag of words) densify into the feature buffer (at most
:data:`~cmlgraph.backbones.plan_static.MAX_FEATURE_BYTES`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cmlgraph.backbones import plan_static
from cmlgraph.backbones.gnn_ops import is_sparse, self_loop_edge_index, sparse_features
from cmlgraph.graphs.types import GraphInput


@dataclass(frozen=True)
class UnionCapacity:
    """Buffer capacities of a padded union: ``rows`` a task and ``edges`` in all (self-loops included)."""

    rows: int
    edges: int

    def grown(self, other: UnionCapacity) -> UnionCapacity:
        """Capacities holding both ``self`` and ``other``, with :data:`~cmlgraph.backbones.plan_static.SLACK`
        over whichever part grew."""
        def grow(a: int, b: int) -> int:
            return a if b <= a else math.ceil(b * plan_static.SLACK)

        return UnionCapacity(grow(self.rows, other.rows), grow(self.edges, other.edges))


def union_needs(items: Sequence[GraphInput]) -> UnionCapacity:
    """The least capacities that hold ``items``' union: one pad row a task over the largest subgraph, every
    self-looped edge."""
    return UnionCapacity(max(g.num_nodes for g in items) + 1,
                         sum(int(self_loop_edge_index(g).shape[1]) for g in items))


class StaticUnion:
    """The padded union of ``T`` tasks' k-hop subgraphs, refilled for each meta-batch.

    Args:
        items: The first batch's subgraph inputs (``GraphInput.subgraph``; one per task, equally many requested
            nodes each).
        capacity: Buffers at least this large (a recapture's grown capacities), else
            :data:`~cmlgraph.backbones.plan_static.SLACK` over ``items``' needs.

    Raises:
        ValueError: The dense feature buffer would exceed :data:`~cmlgraph.backbones.plan_static.MAX_FEATURE_BYTES`.
    """

    def __init__(self, items: Sequence[GraphInput], capacity: UnionCapacity | None = None) -> None:
        need = union_needs(items)
        base = UnionCapacity(math.ceil(need.rows * plan_static.SLACK), math.ceil(need.edges * plan_static.SLACK))
        self.capacity = base if capacity is None else capacity.grown(need)
        self.tasks = len(items)
        first = items[0].x
        width = int(first.shape[1])
        dtype = first.dtype
        size = self.tasks * self.capacity.rows * width * torch.empty((), dtype=dtype).element_size()
        if size > plan_static.MAX_FEATURE_BYTES:
            raise ValueError(f"the padded features of GAT's subgraph union ({size / 2**30:.1f} GiB) are too wide to "
                             f"pad (at most {plan_static.MAX_FEATURE_BYTES / 2**30:.1f} GiB)")
        device = first.device
        rows = self.capacity.rows
        self.layout: dict[str, Any] = {
            "x": torch.zeros(self.tasks, rows, width, dtype=dtype, device=device),
            "edges": torch.zeros(2, self.capacity.edges, dtype=torch.long, device=device),
            "out": torch.zeros(self.tasks * int(items[0].nodes.numel()), dtype=torch.long, device=device),
            "rows": rows,
        }
        self.fill(items)

    def holds(self, items: Sequence[GraphInput]) -> bool:
        """Whether ``items`` fit the buffers (their node counts per task and edges in all)."""
        need = union_needs(items)
        return len(items) == self.tasks and need.rows <= self.capacity.rows and need.edges <= self.capacity.edges

    def fill(self, items: Sequence[GraphInput]) -> None:
        """Refill the buffers with ``items``' union (which :meth:`holds`): device copies only, no sync."""
        lay, rows = self.layout, self.capacity.rows
        x, edges, out = lay["x"], lay["edges"], lay["out"]
        x.zero_()
        at, pads = 0, []
        n = int(items[0].nodes.numel())
        for t, g in enumerate(items):
            f = sparse_features(g)
            x[t, : g.num_nodes].copy_(f.to_dense() if is_sparse(f) else f, non_blocking=True)
            ei = self_loop_edge_index(g)
            e = int(ei.shape[1])
            edges[:, at:at + e].copy_(ei + t * rows)
            at += e
            out[t * n:(t + 1) * n].copy_(g.nodes + t * rows)
            pads.append(torch.arange(t * rows + g.num_nodes, (t + 1) * rows, device=x.device))
        spare = self.capacity.edges - at
        if spare:
            pad_rows = torch.cat(pads)
            loops = pad_rows.index_select(0, torch.arange(spare, device=x.device) % pad_rows.numel())
            edges[:, at:] = loops  # a pad row to itself, spread over the pad rows


__all__ = ["StaticUnion", "UnionCapacity", "union_needs"]
