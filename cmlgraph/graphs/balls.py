"""Closed k-hop balls of nodes and their induced, *not renormalised* slices of the row-normalised adjacency.

Why: G-Meta as TLP codes it (Tan et al., LoG 2022; CML paper §4.3, PAPER.md §1.2) embeds every support and query
node from its own subgraph, the closed 2-hop ball ``S_v``, by running a GCN on the rows and columns ``S_v × S_v``
of the **full graph's** ``D⁻¹(A + I)``. Boundary rows keep their full-graph weights (they are not renormalised, so
they sum to less than 1), and an isolated node is its own one-node ball.

A :class:`BallIndex` holds that adjacency as CSR and each node's ball (computed once per graph, lazily, in one
vectorised CSR expansion for all missing nodes of a request). :meth:`BallIndex.block` lays the balls of many nodes
(a task, or a meta-batch of tasks) out block-diagonally in one sparse matrix, vectorised over all balls: nothing
here loops over nodes in Python except the look-up of cached member lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from cmlgraph.graphs.sparse import csr_row_entries, flat_nonzero
from cmlgraph.graphs.types import GraphBatch

#: ``BallInput.memo`` key of the last batch stacked with this input first: (ids of the stacked inputs, batch memo).
STACK_KEY = "stacked"

#: Keys, positions and counts below this run ``block()`` on int32 indices, others on int64.
INT32_LIMIT = 2**31


def row_normalised_adjacency(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
    """``D⁻¹(A + I)`` as CSR parts ``(crow, col, val)``, row = target node (TLP's GCN normalisation).

    Args:
        edge_index: ``LongTensor[2, E]`` (both directions of undirected edges); self loops and duplicates are
            dropped before ``I`` is added.
        num_nodes: N.

    Returns:
        ``crow[N+1]``, ``col[nnz]``, ``val[nnz]`` (float32): row ``i`` holds ``1/(d_i + 1)`` at ``i`` and at each
        neighbour of ``i``, ``d_i`` its number of distinct neighbours.
    """
    src, dst = edge_index[0].cpu(), edge_index[1].cpu()
    keep = src != dst
    loops = torch.arange(num_nodes)
    rows = torch.cat([dst[keep], loops])
    cols = torch.cat([src[keep], loops])
    key = torch.unique(rows * num_nodes + cols)  # sorted by row, then column; duplicates gone
    rows, cols = key // num_nodes, key % num_nodes
    counts = torch.bincount(rows, minlength=num_nodes)
    crow = torch.zeros(num_nodes + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=crow[1:])
    val = counts.to(torch.float32).reciprocal()[rows]
    return crow, cols, val


@dataclass
class BallBlock:
    """The balls of ``len(sizes)`` centre nodes laid out one after another (ball ``b``'s rows contiguous).

    Attributes:
        members: ``LongTensor[R]`` global node id of every row (ball by ball, each ball sorted).
        ball_of_row: ``LongTensor[R]`` which ball a row belongs to.
        sizes: ``LongTensor[B]`` ball sizes |S_b|.
        rows, cols, vals: The induced adjacency ``R × R`` (block diagonal, full-graph weights, not renormalised);
            ``rows``/``cols`` are ``int32`` when the layout's keys fit, else ``int64``.
    """

    members: Tensor
    ball_of_row: Tensor
    sizes: Tensor
    rows: Tensor
    cols: Tensor
    vals: Tensor


class BallIndex:
    """A graph's features, row-normalised adjacency and each node's closed ``hops``-hop ball (cached).

    Args:
        x: Node features ``[N, F]`` (dense, or sparse CSR/COO); kept as given.
        edge_index: ``LongTensor[2, E]``.
        hops: Ball radius (the GCN depth: 2 for G-Meta).
        host_x: The same features on the host where ``x`` is on a GPU (sparse ones: a selection of sparse rows has a
            data-dependent entry count, which the host would wait for on the device; issue 18). ``None``: ``x``.
    """

    def __init__(self, x: Tensor, edge_index: Tensor, hops: int = 2, host_x: Tensor | None = None) -> None:
        self.x = x
        self.host_x = x if host_x is None else host_x
        self.num_nodes = int(x.shape[0])
        self.hops = hops
        self.crow, self.col, self.val = row_normalised_adjacency(edge_index, self.num_nodes)
        #: ``1/(d_i + 1)`` per node: row i's value in ``D⁻¹(A + I)``.
        self.dinv = (self.crow[1:] - self.crow[:-1]).to(torch.float32).reciprocal()
        self._symmetric: bool | None = None
        self._balls: dict[int, Tensor] = {}
        self.memo: dict[str, Any] = {}
        self._col_as: dict[torch.dtype, Tensor] = {}  # the CSR columns in block()'s index type
        self.max_table = 50_000_000  # entries of the (ball, node) look-up table of block(); above: binary search

    @property
    def symmetric(self) -> bool:
        """Whether ``A + I`` is symmetric (an undirected graph), checked once: then the transpose of an induced
        block has the block's own sparsity pattern, with value ``dinv[column's node]`` at each entry."""
        if self._symmetric is None:
            n = self.num_nodes
            rows = torch.repeat_interleave(torch.arange(n), self.crow[1:] - self.crow[:-1])
            key = rows * n + self.col  # sorted: CSR order
            self._symmetric = bool(torch.equal(key, torch.sort(self.col * n + rows).values))
        return self._symmetric

    def expand(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """Closed balls of ``nodes`` by CSR expansion: ``(ball_position, member)`` sorted by ball then member."""
        n = self.num_nodes
        b = torch.arange(nodes.numel())
        u = nodes.cpu()
        for _ in range(self.hops):
            rp, pos = csr_row_entries(self.crow, u)  # A + I: each node is its own neighbour, so balls only grow
            key = torch.unique(b[rp] * n + self.col[pos])
            b, u = key // n, key % n
        return b, u

    def balls(self, nodes: Tensor, chunk: int = 64) -> list[Tensor]:
        """Member lists (sorted global ids) of the balls of ``nodes``; computed once per node and cached."""
        ids = [int(v) for v in nodes.view(-1).tolist()]
        missing = sorted({v for v in ids if v not in self._balls})
        for start in range(0, len(missing), chunk):
            part = torch.tensor(missing[start:start + chunk], dtype=torch.long)
            b, u = self.expand(part)
            counts = torch.bincount(b, minlength=part.numel()).tolist()
            for v, members in zip(part.tolist(), torch.split(u, counts), strict=True):
                self._balls[v] = members
        return [self._balls[v] for v in ids]

    def ball_sizes(self, nodes: Tensor) -> Tensor:
        """|S_v| of each node (computing missing balls)."""
        return torch.tensor([m.numel() for m in self.balls(nodes)], dtype=torch.long)

    def block(self, nodes: Tensor) -> BallBlock:
        """The balls of ``nodes`` (duplicates allowed) and their induced adjacency, block diagonal.

        Rows of ball ``b`` are its members in sorted order; entry ``(r, c)`` is the full graph's ``D⁻¹(A+I)`` at
        (member r, member c) for every pair inside the same ball, found with one table look-up (or binary search)
        over all balls. Entries come row by row with ascending columns and no duplicates (valid CSR order).

        Cost: this layout is rebuilt for every episode (tasks never repeat), so it works on ``int32`` indices
        whenever the (ball, node) keys fit (half the memory traffic of ``int64`` over the millions of candidate
        entries a task's balls have on a dense graph) and selects the kept entries with one ``nonzero``.
        """
        members_list = self.balls(nodes)
        sizes = torch.tensor([m.numel() for m in members_list], dtype=torch.long)
        n, nb = self.num_nodes, int(sizes.numel())
        members = torch.cat(members_list)
        r = int(members.numel())
        ball_of_row = torch.repeat_interleave(torch.arange(nb), sizes, output_size=r)
        # Every stored entry of the members' rows of D⁻¹(A + I): (row position rp, column node cnode).
        start = self.crow.index_select(0, members)
        counts = self.crow.index_select(0, members + 1) - start
        total = int(counts.sum())
        # int32 only when every key, entry position and candidate count fits (int32 cumsum/arange wrap silently).
        fits = max(nb * n, self.col.numel(), total, r) < INT32_LIMIT
        itype = torch.int32 if fits else torch.long
        if itype not in self._col_as:
            self._col_as[itype] = self.col.to(itype)
        col_i = self._col_as[itype]
        start, counts = start.to(itype), counts.to(itype)
        rp = torch.repeat_interleave(torch.arange(r, dtype=itype), counts, output_size=total)
        shift = start - (torch.cumsum(counts, 0, dtype=itype) - counts)
        cnode = col_i.index_select(0, shift.index_select(0, rp) + torch.arange(total, dtype=itype))
        rowkey = ball_of_row.to(itype) * n  # (ball, node) key = ball · N + node
        if nb * n <= self.max_table:
            # Position of (ball, node) by a dense look-up table: one gather instead of a binary search per entry.
            table = torch.full((nb * n,), -1, dtype=itype)
            table[ball_of_row * n + members] = torch.arange(r, dtype=itype)
            idx = table.index_select(0, rowkey.index_select(0, rp) + cnode)
            keep = idx >= 0
        else:
            key = rowkey + members.to(itype)  # strictly increasing: balls in order, members sorted
            ckey = rowkey.index_select(0, rp) + cnode
            idx = torch.searchsorted(key, ckey).clamp_max(r - 1)
            keep = key.index_select(0, idx) == ckey
        kept = flat_nonzero(keep)  # one nonzero for the selections below
        rows, cols = rp.index_select(0, kept), idx.index_select(0, kept)
        # D⁻¹(A + I) holds 1/(d+1) of the row's node at every entry of a row.
        vals = self.dinv.index_select(0, members).index_select(0, rows)
        return BallBlock(members, ball_of_row, sizes, rows, cols, vals)


@dataclass
class BallInput:
    """What the G-Meta encoder reads for one task's support or query set.

    Attributes:
        index: The graph's :class:`BallIndex`.
        nodes: ``LongTensor[n]`` global ids of the centre nodes, in output order.
        dropout: Whether this pass applies the encoder's dropout in training mode (TLP: support passes only).
        memo: The encoder's block layout of these balls, built on the first pass and reused by every inner step.
    """

    index: BallIndex
    nodes: Tensor
    dropout: bool = False
    memo: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def can_stack_tasks(items: list[BallInput]) -> bool:
        """Inputs of one graph with equally many centre nodes run batched."""
        first = items[0]
        return all(isinstance(g, BallInput) and g.index is first.index and g.nodes.shape == first.nodes.shape
                   and g.dropout == first.dropout for g in items)

    @staticmethod
    def stack_tasks(items: list[BallInput]) -> BallBatch:
        """A meta-batch's inputs, run as one block-diagonal pass.

        Stacking the same inputs again (the same objects, in the same order) gives a batch sharing the first
        one's ``memo``: the layouts that the prefetch worker built ahead
        (:meth:`cmlgraph.domains.tlp_graph.TLPGraphDomain.prepare_batch`, issue 18) are found by the meta-step's
        own stacking. The shared memo holds no reference to the inputs (no reference cycle).
        """
        key = tuple(id(it) for it in items)
        batch = BallBatch(list(items))
        hit = items[0].memo.get(STACK_KEY)
        if hit is not None and hit[0] == key:
            batch.memo = hit[1]
        else:
            items[0].memo[STACK_KEY] = (key, batch.memo)
        return batch


class BallBatch(GraphBatch):
    """Several tasks' :class:`BallInput` (``items``) run together by the encoder's ``forward_tasks``; the same
    container as :class:`~cmlgraph.graphs.types.GraphBatch`."""


__all__ = ["INT32_LIMIT", "STACK_KEY", "BallBatch", "BallBlock", "BallIndex", "BallInput", "row_normalised_adjacency"]
