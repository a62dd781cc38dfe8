"""Exact computation trees of GNN outputs on the full graph, per task and batched over a meta-batch's tasks.

Why: a k-layer GNN's output at an episode's nodes depends only on their k-hop neighbourhood, and only on a
shrinking part of it at each layer: layer ``i`` (counted from the input) is needed at the nodes within ``k - i - 1``
hops. A :class:`Plan` holds those nested node levels ``N_k ⊇ ... ⊇ N_1 ⊇ N_0`` (``N_0`` the requested nodes, each
level listing the previous one first) and, per layer, the rows ``N_{l-1}`` × columns ``N_l`` of the *full graph's*
aggregation matrix (GCN's ``D^-1/2 (A + I) D^-1/2``, SAGE's mean, GIN's sum). Reading the full graph's weights
makes the result exact with ``k`` hops (a k-hop subgraph renormalised on its own needs one more hop for GCN and SGC,
and computes every layer on every node of it).

Batching: the plans of several tasks are laid out block-diagonally, each task's level padded to the largest task's
size; per-task weights (``[T, out, in]``) multiply dense blocks with ``torch.bmm`` and sparse features through a
block-diagonal ``[T·rows, T·F]`` matrix times the stacked weights ``[T·F, out]``, so a meta-batch runs as one
chain of kernels and each task still gets its own weights and gradients. Padding rows are never read by real rows.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cmlgraph.backbones.gnn_ops import BLOCK_NNZ, is_sparse, sparse_matmul, transposable_csr
from cmlgraph.core.transfer import to_device, to_device_all
from cmlgraph.graphs.sparse import csr_row_entries, slice_rows

#: From this many tasks on, a batch's layout (block diagonals, dense constants) is built off the CPU with a fixed
#: number of ops (:func:`_block_diag`, :meth:`TaskLayout._dense_constant`); below it task by task, which launches
#: fewer ops for so few tasks (session 37, counted with :class:`cmlgraph.train.launch_counter.LaunchCounter`).
BATCH_LAYOUT_TASKS = 8


def layout_batches(device: torch.device) -> bool:
    """Whether a batch's layout on ``device`` is built at once (from :data:`BATCH_LAYOUT_TASKS` tasks on) rather
    than task by task: off the CPU only. On a GPU each op is a launch, and a chunk of 500 evaluation tasks built
    task by task launches about 9,000 of them (18 a task on the default k-hop path). On the CPU the task loop
    measured faster (session 37, one thread, 100 tasks' first aggregation and block diagonal on synthetic-10k:
    48 to 50 ms task by task against 171 to 179 ms at once through one gathered ``[entries, F]`` product) and
    keeps the CPU's results bit for bit."""
    return torch.device(device).type != "cpu"


@dataclass
class SparseBlock:
    """A sparse matrix as COO parts, cheap to place on a block diagonal with others."""

    rows: Tensor
    cols: Tensor
    vals: Tensor
    shape: tuple[int, int]


@dataclass
class Plan:
    """The computation tree of one set of target nodes for a ``layers``-deep GNN.

    Attributes:
        sizes: Rows at each level, input level first: ``sizes[0] = |N_k|`` (0 until :func:`complete_plan`),
            ``sizes[k] = |N_0|``.
        mats: Per layer (input layer first), the aggregation rows ``N_{l-1}`` × columns ``N_l`` (the first one
            ``None`` until :func:`complete_plan`).
        x: The full graph's features (rows are read through the plan).
        out: Positions of the requested nodes in ``N_0`` (``None``: they are ``N_0`` in order).
        memo: Constants derived from the plan (products with ``x``), built on first use.
    """

    sizes: list[int]
    mats: list[SparseBlock]
    x: Tensor
    out: Tensor | None
    memo: dict[str, Any] = field(default_factory=dict)


def _unique_in_order(ids: Tensor) -> tuple[Tensor, Tensor]:
    """``(uniq, inverse)``: distinct ids in order of first occurrence, and each entry's position in ``uniq``.

    On the CPU in numpy (``np.unique``'s first indices; equal to the torch path element for element), which
    halves a k-hop plan's host build (docs/gpu.md, "Host work per meta-batch")."""
    if ids.device.type == "cpu":
        uniq, first, inv = np.unique(ids.numpy(), return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size)
        return torch.from_numpy(uniq[order]), torch.from_numpy(rank[inv.reshape(-1)])  # rank: int64 already
    return _device_unique_in_order(ids)


def _device_unique_in_order(ids: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`_unique_in_order` in torch ops, on any device."""
    uniq, inv = torch.unique(ids, return_inverse=True)
    first = torch.full((uniq.numel(),), ids.numel(), dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inv, torch.arange(ids.numel(), device=ids.device), reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=ids.device)
    return uniq[order], rank[inv]


def build_plan(adj_rows: Tensor, x: Tensor, nodes: Tensor, layers: int) -> Plan:
    """The exact ``layers``-hop computation tree of ``nodes``.

    The input level ``N_k`` itself (the largest) is only listed when something reads its rows one by one (input
    dropout, SAGE/GIN roots); the first aggregation multiplies the full features directly (see
    :func:`complete_plan`).

    Args:
        adj_rows: The full graph's aggregation matrix as CSR ``adj_t`` (row = target, column = source).
        x: The full graph's node features (dense, or sparse: coalesced COO is fastest).
        nodes: ``LongTensor[n]`` target node ids (duplicates allowed).
        layers: GNN depth (SGC: its K).
    """
    crow, col, val = adj_rows.crow_indices(), adj_rows.col_indices(), adj_rows.values()
    level, inverse = _unique_in_order(nodes)
    out = None if level.numel() == nodes.numel() and bool((level == nodes).all()) else inverse
    mats: list[SparseBlock | None] = []
    sizes = [level.numel()]
    for _ in range(layers - 1):
        row_pos, pos = csr_row_entries(crow, level)
        nxt, local = _unique_in_order(torch.cat([level, col.index_select(0, pos)]))
        mats.append(SparseBlock(row_pos, local[level.numel():], val.index_select(0, pos),
                                (level.numel(), nxt.numel())))
        level = nxt
        sizes.append(level.numel())
    # The input layer's aggregation keeps global column ids: it multiplies the full features directly, so the
    # input level is listed (complete_plan) only when something reads it row by row.
    row_pos, pos = csr_row_entries(crow, level)
    first_global = SparseBlock(row_pos, col.index_select(0, pos), val.index_select(0, pos),
                               (level.numel(), int(x.shape[0])))
    mats.append(None)
    sizes.append(0)
    mats.reverse()
    sizes.reverse()
    plan = Plan(sizes=sizes, mats=mats, x=x, out=out)  # type: ignore[arg-type]
    plan.memo["prev_level"] = level
    plan.memo["first_global"] = first_global
    return plan


def complete_plan(plan: Plan) -> Plan:
    """List the input level ``N_k`` and the first layer's matrix over it (once)."""
    if plan.mats[0] is None:
        prev, fg = plan.memo["prev_level"], plan.memo["first_global"]
        level, local = _unique_in_order(torch.cat([prev, fg.cols]))
        plan.mats[0] = SparseBlock(fg.rows, local[prev.numel():], fg.vals, (prev.numel(), level.numel()))
        plan.sizes[0] = level.numel()
        plan.memo["level"] = level
    return plan


def plan_to(plan: Plan, x: Tensor) -> Plan:
    """A host-built plan (:func:`build_plan` on CPU tensors) moved to ``x``'s device, reading the features ``x``.

    Why (issue 18 item 2): building a plan needs its level sizes on the host (``unique``, CSR row expansion), i.e.
    about 9 host-device syncs per plan when built from device tensors. Built from the CPU copy of the graph those
    reads are free; only the finished index and value tensors travel, pinned and ``non_blocking``, all of a dtype
    in one copy (:func:`cmlgraph.core.transfer.to_device_all`: 2 copies a plan instead of about 11). On the CPU
    nothing is copied. Constants derived from the features (``memo["z"]`` and kin) are not moved: they are built
    on the device on first use.

    Args:
        plan: A plan whose index tensors live on the host (constants not built yet).
        x: The full graph's features on the run's device, in the form the plan's products read (coalesced COO
            when sparse).
    """
    tensors: list[Tensor] = []

    def take(t: Tensor) -> int:
        tensors.append(t)
        return len(tensors) - 1

    def block(b: SparseBlock | None) -> tuple[int, int, int, tuple[int, int]] | None:
        return None if b is None else (take(b.rows), take(b.cols), take(b.vals), b.shape)

    levels = {key: take(plan.memo[key]) for key in ("prev_level", "level") if key in plan.memo}
    first = block(plan.memo.get("first_global"))
    mats = [block(m) for m in plan.mats]
    host: dict[str, Any] = {}  # host-built CSR blocks and sparse constants (host_prepare)
    for key, value in plan.memo.items():
        if key.startswith(HOST_PREFIX):
            host[key] = (value, take(value.crow_indices()), take(value.col_indices()), take(value.values())) \
                if value.layout == torch.sparse_csr else (value, take(value))
    out = None if plan.out is None else take(plan.out)
    moved = to_device_all(tensors, x.device)

    def unblock(ids: tuple[int, int, int, tuple[int, int]] | None) -> SparseBlock | None:
        return None if ids is None else SparseBlock(moved[ids[0]], moved[ids[1]], moved[ids[2]], ids[3])

    memo: dict[str, Any] = {key: moved[i] for key, i in levels.items()}
    if first is not None:
        memo["first_global"] = unblock(first)
    for key, (value, *ids) in host.items():
        if all(moved[i] is tensors[i] for i in ids):  # on the device already: the host's own object
            memo[key] = value
        elif len(ids) == 3:
            memo[key] = torch.sparse_csr_tensor(moved[ids[0]], moved[ids[1]], moved[ids[2]], value.shape)
        else:
            memo[key] = moved[ids[0]]
    return Plan(sizes=list(plan.sizes), mats=[unblock(m) for m in mats],  # type: ignore[misc]
                x=x, out=None if out is None else moved[out], memo=memo)


#: ``Plan.memo`` prefix of what :func:`host_prepare` built on the host (``host/csr/<layer>``, ``host/<constant>``).
HOST_PREFIX = "host/"


def host_prepare(plan: Plan, host_x: Tensor, constants: tuple[str, ...] = (), layers: tuple[int, ...] = (),
                 run_sparse: bool | None = None) -> Plan:
    """Build on the host what a plan's device pass would otherwise build with host-device syncs (issue 18 item
    2): each layer's aggregation as CSR (coalescing sums duplicates: a data-dependent entry count) and, for sparse
    features, the ``constants`` (:func:`plan_constant`'s keys: sparse × sparse products, sparse row selections),
    as CSR. :func:`plan_to` then moves them with the plan; :class:`TaskLayout` and :func:`plan_constant` read
    them. Dense features' constants are left to the device (a gather and an ``index_add``, no sync; copying them
    would cost more).

    Args:
        plan: A plan built from host tensors (:func:`build_plan` on the CPU graph), its features ``plan.x`` the
            run's (maybe on the device).
        host_x: The same features on the CPU, in the form the products read (coalesced COO when sparse).
        constants: The constants to build when the features are sparse.
        layers: The layers whose aggregation the pass multiplies (:meth:`TaskLayout.agg`).
        run_sparse: Whether the run's features are sparse (``None``: ``plan.x`` is the run's, read it).
    """
    for i in layers:
        if plan.mats[i] is not None:
            plan.memo[f"{HOST_PREFIX}csr/{i}"] = _csr(plan.mats[i])
    if run_sparse is None:
        run_sparse = is_sparse(plan.x)
    if constants and run_sparse and is_sparse(host_x):  # the run's features sparse (not densified there)
        host = Plan(sizes=plan.sizes, mats=plan.mats, x=host_x, out=plan.out,
                    memo={k: v for k, v in plan.memo.items() if not k.startswith(HOST_PREFIX)})
        for key in constants:
            plan.memo[f"{HOST_PREFIX}{key}"] = _to_csr(plan_constant(host, key))
    return plan


def _layer_csr(plan: Plan, layer: int) -> Tensor:
    """A plan's aggregation of ``layer`` as CSR: the host-built one (:func:`host_prepare`), else built here."""
    built = plan.memo.get(f"{HOST_PREFIX}csr/{layer}")
    return built if built is not None else _csr(plan.mats[layer])


def _coo(block: SparseBlock) -> Tensor:
    """A block as a coalesced COO matrix (duplicates summed)."""
    return torch.sparse_coo_tensor(torch.stack([block.rows, block.cols]), block.vals, block.shape).coalesce()


def _csr(block: SparseBlock) -> Tensor:
    """A block as a CSR matrix, duplicates summed."""
    return _coo(block).to_sparse_csr()


def _segments(lengths: list[int], device: torch.device, within: bool = True) -> tuple[Tensor, Tensor | None]:
    """``(segment, position)`` of entries laid out segment after segment with ``lengths`` entries each: every
    entry's segment index and (``within``) its position inside its segment, with a fixed number of ops whatever
    the number of segments.

    ``lengths`` are host ints (tensor sizes, no read-back); they and the segments' starts travel in one pinned,
    ``non_blocking`` copy (:func:`~cmlgraph.core.transfer.to_device`) instead of one op a segment.
    """
    starts = [0, *itertools.accumulate(lengths)][:-1]
    host = to_device(torch.tensor([*lengths, *starts], dtype=torch.long), device)
    counts, first = host[:len(lengths)], host[len(lengths):]
    total = sum(lengths)
    segment = torch.repeat_interleave(torch.arange(len(lengths), device=device), counts, output_size=total)
    if not within:
        return segment, None
    return segment, torch.arange(total, device=device) - first.index_select(0, segment)


def _padded_rows(flat: Tensor, lengths: list[int], rows: int) -> Tensor:
    """Tasks' rows given one after another (``flat``: ``[Σ n_t, F]``, ``lengths`` the ``n_t``) stacked as
    ``[T, rows, F]``, each task's at the top of its zero-padded block, with a fixed number of ops whatever the
    number of tasks (one ``index_copy``; positions from :func:`_segments`)."""
    block, within = _segments(lengths, flat.device)
    assert within is not None
    out = flat.new_zeros(len(lengths) * rows, flat.shape[1])
    return out.index_copy(0, block * rows + within, flat).view(len(lengths), rows, -1)


def _block_diag(parts: list[Tensor], rows_per: int, cols_per: int, batched: bool | None = None) -> Tensor:
    """Place the CSR matrices ``parts`` on a diagonal with strides ``rows_per``/``cols_per`` (rows padded with
    empty rows), as a transposable CSR matrix; no sorting but the one that builds the transpose.

    ``batched`` (default: from :data:`BATCH_LAYOUT_TASKS` parts on, off the CPU, :func:`layout_batches`): a fixed
    number of ops whatever the number of parts (issue 18 item 3; 3 ops a part otherwise, i.e. a few thousand
    launches for an evaluation chunk of hundreds of tasks on a GPU). The parts' row pointers, columns and values
    are concatenated once, and each entry's block found by :func:`_segments`. A single part that fills its block
    is its own layout. Nothing is read back: the entry counts are the parts' sizes.
    """
    t, device = len(parts), parts[0].device
    nnz = [int(m.col_indices().numel()) for m in parts]  # nnz = crow[-1], from the shape (issue 18)
    rows = [int(m.crow_indices().numel()) - 1 for m in parts]
    if batched is None:
        batched = t >= BATCH_LAYOUT_TASKS and layout_batches(device)
    if t == 1 and rows[0] == rows_per and parts[0].shape[1] == cols_per:
        m = parts[0]
        crow, cols = m.crow_indices(), m.col_indices()
    elif not batched:
        crows, col_parts = [], []
        offset = 0
        for i, m in enumerate(parts):
            crow = m.crow_indices()
            pad = crow[-1:].expand(rows_per - (crow.numel() - 1))
            crows.append(torch.cat([crow[:-1], pad]) + offset if i else torch.cat([crow[:-1], pad]))
            col_parts.append(m.col_indices() + i * cols_per)
            offset += nnz[i]
        # a fill on the device: torch.tensor([offset], device=cuda) would copy host data over and wait for it
        crows.append(torch.full((1,), offset, dtype=torch.long, device=device))
        crow, cols = torch.cat(crows), torch.cat(col_parts)
    else:
        if max(rows) > rows_per:
            raise ValueError(f"a block of {max(rows)} rows does not fit the layout's {rows_per} rows a block")
        offsets = [0, *itertools.accumulate(nnz)]
        # a block's rows past its own are empty: they point at its end (the next block's start); its own rows
        # point at its entries shifted by the entries of the blocks before it
        ends = to_device(torch.tensor(offsets, dtype=torch.long), device)
        crow = torch.repeat_interleave(ends[1:], rows_per, output_size=t * rows_per)
        row_block, row_within = _segments(rows, device)
        assert row_within is not None
        body = torch.cat([m.crow_indices()[:-1] for m in parts]) + ends.index_select(0, row_block)
        crow = torch.cat([crow.index_copy(0, row_block * rows_per + row_within, body), ends[-1:]])
        col_block, _ = _segments(nnz, device, within=False)
        cols = torch.cat([m.col_indices() for m in parts]) + col_block * cols_per
    # Column order is not checked (a read-back): a stable sort of sorted columns is the identity anyway.
    out = transposable_csr(crow, cols, torch.cat([m.values() for m in parts]) if t > 1 else parts[0].values(),
                           (t * rows_per, t * cols_per), col_sorted=False)
    setattr(out, BLOCK_NNZ, nnz)  # metadata: no read-back
    return out


def _stacked_product(blocks: list[SparseBlock], x: Tensor, rows_per: int, cols_per: int | None) -> Tensor:
    """Every task's ``block @ x`` at once: ``[T·rows_per, F]``, task ``t``'s rows at ``t·rows_per`` (padding rows
    zero). ``x`` is the shared ``[N, F]`` (``cols_per`` ``None``: global columns) or the tasks' stacked rows
    ``[T·cols_per, F]`` (local columns). As :func:`_sparse_product` with a dense ``x``, task by task, through one
    CSR product of the stacked blocks (no ``[entries, F]`` temporary: hundreds of tasks' gathered rows would
    take gigabytes). The entries are sorted by row and column by one sort and the row pointers come from
    counting: no read-back. Each block's (row, column) pairs are distinct, as :func:`build_plan` makes them."""
    task, _ = _segments([int(b.rows.numel()) for b in blocks], x.device, within=False)
    n_rows, n_cols = len(blocks) * rows_per, x.shape[0]
    rows = torch.cat([b.rows for b in blocks]) + task * rows_per
    cols = torch.cat([b.cols for b in blocks])
    if cols_per is not None:
        cols = cols + task * cols_per
    order = torch.argsort(rows * n_cols + cols)
    counts = torch.zeros(n_rows + 1, dtype=torch.long, device=x.device).index_add_(0, rows + 1, torch.ones_like(rows))
    m = torch.sparse_csr_tensor(torch.cumsum(counts, 0), cols.index_select(0, order),
                                torch.cat([b.vals for b in blocks]).to(x.dtype).index_select(0, order),
                                (n_rows, n_cols))
    return torch.sparse.mm(m, x)


def _to_csr(x: Tensor) -> Tensor:
    return x if x.layout == torch.sparse_csr else x.to_sparse_coo().coalesce().to_sparse_csr()


def _sparse_product(a: SparseBlock, x: Tensor) -> Tensor:
    """``a @ x`` (constant): sparse COO when ``x`` is sparse (pass it as coalesced COO), dense otherwise.

    COO × COO, not CSR × CSR: ``torch.sparse.mm`` of two CSR matrices leaks memory on CPU in torch 2.13 (about
    0.2 MB per call, i.e. per episode). A dense ``x`` is read only at the rows ``a`` touches.
    """
    with torch.no_grad():
        if not is_sparse(x):
            out = x.new_zeros(a.shape[0], x.shape[1])
            return out.index_add_(0, a.rows, x.index_select(0, a.cols) * a.vals.unsqueeze(1))
        x = x if x.layout == torch.sparse_coo else x.to_sparse_coo().coalesce()
        return torch.sparse.mm(_coo(a), x)


def plan_constant(plan: Plan, key: str) -> Tensor:
    """Constants of one plan: ``"z"`` = first aggregation of the features, ``"r"`` = the features of ``N_{k-1}``
    (the root term of SAGE and GIN), ``"x"`` = the features of the input level ``N_k``, ``"sgc"`` = all
    aggregations of the features (SGC's ``(Â^K X)[N_0]``)."""
    if key not in plan.memo and f"{HOST_PREFIX}{key}" in plan.memo:  # built on the host (host_prepare)
        plan.memo[key] = plan.memo[f"{HOST_PREFIX}{key}"]
    if key not in plan.memo:
        if key == "z":
            plan.memo[key] = _sparse_product(plan.memo["first_global"], plan.x)
        elif key == "x":
            plan.memo[key] = slice_rows(plan.x, complete_plan(plan).memo["level"])
        elif key == "r":
            plan.memo[key] = slice_rows(plan.x, plan.memo["prev_level"])
        elif key == "sgc":
            z = plan_constant(plan, "z")
            for m in plan.mats[1:]:
                z = _sparse_product(m, z)
            plan.memo[key] = z
        else:
            raise KeyError(key)
    return plan.memo[key]


class TaskLayout:
    """The plans of ``T`` tasks laid out for batched kernels (``T = 1`` for a single task).

    Args:
        plans: One plan per task, all with the same number of levels and of requested nodes.
    """

    def __init__(self, plans: list[Plan]) -> None:
        self.plans = plans
        self.tasks = len(plans)
        self.sizes = [max(p.sizes[i] for p in plans) for i in range(len(plans[0].sizes))]
        self._memo: dict[str, Any] = {}

    def agg(self, layer: int) -> Tensor:
        """Block-diagonal aggregation of ``layer``: ``[T·sizes[layer+1], T·sizes[layer]]``."""
        if layer == 0:
            self._complete()
        return self._get(f"agg/{layer}", lambda: _block_diag([_layer_csr(p, layer) for p in self.plans],
                                                             self.sizes[layer + 1], self.sizes[layer]))

    def constant(self, key: str, level: int) -> Tensor:
        """A per-task constant (see :func:`plan_constant`) stacked over tasks with rows padded to ``level``.

        Dense constants come back as ``[T, rows, F]``; sparse ones as a block-diagonal ``[T·rows, T·F]`` matrix.
        """
        if level == 0:
            self._complete()
        return self._get(f"const/{key}/{level}", lambda: self._dense_constant(key, level) if self._batch_dense(key)
                         else self._stack([plan_constant(p, key) for p in self.plans], self.sizes[level]))

    def features(self) -> Tensor:
        """The input level's features, stacked like :meth:`constant`."""
        return self.constant("x", 0)

    def _complete(self) -> None:
        for p in self.plans:
            complete_plan(p)
        self.sizes[0] = max(p.sizes[0] for p in self.plans)

    def _batch_dense(self, key: str) -> bool:
        """Whether :meth:`constant` builds ``key`` for all tasks at once (:meth:`_dense_constant`): dense features,
        at least :data:`BATCH_LAYOUT_TASKS` tasks off the CPU (:func:`layout_batches`), and no plan holding its own
        (host-built or memoised) copy."""
        x = self.plans[0].x
        if self.tasks < BATCH_LAYOUT_TASKS or not layout_batches(x.device) or is_sparse(x):
            return False
        return key in ("z", "sgc", "r", "x") and all(
            p.x is x and key not in p.memo and f"{HOST_PREFIX}{key}" not in p.memo for p in self.plans)

    def _dense_constant(self, key: str, level: int) -> Tensor:
        """:func:`plan_constant` ``key`` of every task at once, stacked and padded as :meth:`_stack` pads them:
        ``[T, rows, F]``, with a fixed number of ops whatever the number of tasks (issue 18 item 3: one product
        or gather a task otherwise, about 5 launches a task on a GPU). Equal to the task-by-task constants: the
        gathered rows bit for bit, the products up to float rounding (one sparse product of the tasks' stacked
        blocks)."""
        x, rows, t = self.plans[0].x, self.sizes[level], self.tasks
        if key in ("r", "x"):  # the features of a level, each task's rows at the top of its block
            levels = [p.memo["prev_level"] if key == "r" else complete_plan(p).memo["level"] for p in self.plans]
            return _padded_rows(x.index_select(0, torch.cat(levels)), [int(v.numel()) for v in levels], rows)
        if level != (1 if key == "z" else len(self.sizes) - 1):
            raise ValueError(f"constant {key!r} lives at level {1 if key == 'z' else len(self.sizes) - 1}, "
                             f"not {level}")
        with torch.no_grad():
            h = _stacked_product([p.memo["first_global"] for p in self.plans], x, self.sizes[1], None)
            for j in range(1, len(self.plans[0].mats)) if key == "sgc" else ():
                h = _stacked_product([p.mats[j] for p in self.plans], h, self.sizes[j + 1], self.sizes[j])
        return h.view(t, rows, -1)

    def _stack(self, parts: list[Tensor], rows: int) -> Tensor:
        if is_sparse(parts[0]):
            return _block_diag([_to_csr(z) for z in parts], rows, int(parts[0].shape[1]))
        out = parts[0].new_zeros(self.tasks, rows, parts[0].shape[1])
        for i, z in enumerate(parts):
            out[i, : z.shape[0]] = z
        return out

    def select_output(self, h: Tensor) -> Tensor:
        """``[T·rows_0, d]`` last-level rows → ``[T, n, d]`` in the requested node order of each task."""
        h = h.view(self.tasks, self.sizes[-1], h.shape[-1])
        outs = [p.out for p in self.plans]
        if all(o is None for o in outs):
            return h[:, : self.plans[0].sizes[-1]]
        idx = torch.stack([o if o is not None else torch.arange(p.sizes[-1], device=h.device)
                           for o, p in zip(outs, self.plans, strict=True)])
        return torch.gather(h, 1, idx.unsqueeze(-1).expand(-1, -1, h.shape[-1]))

    def _get(self, key: str, build: Any) -> Any:
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]


def task_linear(h: Tensor, weight: Tensor, tasks: int, bias: Tensor | None = None) -> Tensor:
    """Per-task ``h @ weight[t].T (+ bias[t])``.

    Args:
        h: ``[T·rows, in]`` dense, ``[T, rows, in]`` dense, or a block-diagonal sparse ``[T·rows, T·in]``.
        weight: ``[T, out, in]``.
        tasks: ``T``.
        bias: ``[T, out]`` or None.

    Returns:
        ``[T·rows, out]``.
    """
    t, out_dim, in_dim = weight.shape
    if is_sparse(h):
        y = sparse_matmul(h, weight.transpose(1, 2).reshape(t * in_dim, out_dim)).view(t, -1, out_dim)
    else:
        y = torch.bmm(h.reshape(tasks, -1, in_dim), weight.transpose(1, 2))
    if bias is not None:
        y = y + bias.unsqueeze(1)
    return y.reshape(-1, out_dim)


def prefix_rows(h: Tensor, tasks: int, rows: int) -> Tensor:
    """The first ``rows`` rows of every task's block of a dense ``[T·R, d]`` (the previous level's nodes)."""
    return h.view(tasks, -1, h.shape[-1])[:, :rows].reshape(-1, h.shape[-1])


__all__ = ["HOST_PREFIX", "Plan", "SparseBlock", "TaskLayout", "build_plan", "complete_plan", "host_prepare",
           "plan_constant", "plan_to", "prefix_rows", "task_linear"]
