"""G-Meta's encoder as TLP codes it: a 2-layer GCN on each node's closed 2-hop ball, mean readout over the ball.

Variant (PAPER.md §1.2; Tan et al., "Transductive Linear Probing", LoG 2022, ``Meta-learning/G-Meta``; the CML
paper's Table 3 uses this code): every support or query node ``v`` is embedded from its closed 2-hop ball ``S_v``
(no size cap). The GCN runs on ``S_v`` with the adjacency **sliced from the full graph's** ``D⁻¹(A + I)`` and not
renormalised: ``H₁ = ReLU(Â_S X_S W₁ᵀ + b₁)``, dropout 0.5 on ``H₁`` (support passes in training only),
``H₂ = Â_S H₁ W₂ᵀ + b₂``, and the embedding is the **mean of H₂ over all nodes of S_v** (not the centre node).
All weights and biases are initialised U(−1/√out, 1/√out), the head Linear(16 → N) too.

The original G-Meta (Huang & Zitnik, NeurIPS 2020) differs: a ProtoMAML loss (prototypes from the support
embeddings instead of a linear head), the centre node's embedding as readout, subgraphs capped at 1,000 nodes,
hidden size 64, and DGL. None of that is built here.

Batched, never a loop over nodes: the balls of all centre nodes of a task (and of all tasks of a meta-batch) form
one block-diagonal sparse matrix ``B`` (rows = (ball, member) pairs). The first layer projects each *distinct*
member's features once per task (``X_U W₁ᵀ``, U the union of the balls; with binary features through
subset-sum tables, :mod:`cmlgraph.backbones.binary_features`; on the CPU, where the tasks' balls barely overlap,
each task's own members only, as one block-diagonal product: :func:`task_blocks_win`), gathers the projected row
of every (ball, member) pair and aggregates with ``B`` (on an undirected graph B is a symmetric 0/1 pattern with
one value per row, :class:`~cmlgraph.backbones.gnn_ops.RowScaledSymmetric`, so its backward needs no stored
transpose; on a directed one B's columns point into the projection directly); the mean readout and the second
layer's aggregation fold into one constant sparse matrix ``P B`` (P averages the rows of a ball), and ``W₂`` applies
after pooling (by linearity). Per-task weights carry a leading task dimension, so every task still gets its own
weights and gradients.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmlgraph.backbones.ball_static import STATIC_KEY
from cmlgraph.backbones.base import Backbone, mlp_head
from cmlgraph.backbones.binary_features import CHUNK, MAX_TABLE_WIDTH, BinaryRows, binary_codes
from cmlgraph.backbones.gnn_ops import (
    RowScaledSymmetric,
    is_sparse,
    sparse_matmul,
    transposable,
    transposable_csr,
)
from cmlgraph.core.dropout import dropout as inverted_dropout  # (``dropout`` names a pass flag below)
from cmlgraph.core.streams import current_streams, group_tasks
from cmlgraph.core.transfer import to_device
from cmlgraph.errors import CmlgraphError
from cmlgraph.graphs.balls import BallBatch, BallIndex, BallInput
from cmlgraph.graphs.sparse import slice_rows


def tlp_init(module: nn.Module) -> nn.Module:
    """TLP's initialisation: every ``nn.Linear`` weight and bias U(−1/√out, 1/√out), out = output features."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.uniform_(m.bias, -bound, bound)
    return module


def _dropout_streams(h: Tensor, p: float, draws: list[tuple[int, torch.Generator]]) -> Tensor:
    """:func:`~cmlgraph.core.dropout.dropout` of consecutive row chunks, each from its own generator (``draws``:
    rows, generator): the runs of a fused meta-step (:mod:`cmlgraph.core.streams`), each chunk's mask as that run
    would draw it alone."""
    chunks = h.split([rows for rows, _ in draws])
    return torch.cat([inverted_dropout(c, p, g) for c, (_, g) in zip(chunks, draws, strict=True)])


#: ``BallIndex.memo`` key of the graph's binary feature codes (``None``: the features take the float products).
CODES_KEY = "binary_codes"


def binary_tables_win(device: torch.device | str) -> bool:
    """Whether the binary-feature subset-sum tables beat the dense feature product on ``device``: on the CPU (the
    bench's G-Meta case); not on a GPU, where the dense product is one large matmul and the table gathers are many
    small kernels (measured on an H200, issue 18: 96.8 ms per meta-iteration with the tables off, 118 ms on)."""
    return torch.device(device).type == "cpu"


def feature_codes(index: BallIndex) -> Tensor | None:
    """The graph's :func:`~cmlgraph.backbones.binary_features.binary_codes`, computed once per index and kept in
    its memo; ``None`` unless the features are dense 0/1 on a device where the tables win
    (:func:`binary_tables_win`), or the memo entry was set to ``None``."""
    with _CODES_LOCK:  # built once even when several prefetch build threads lay out their first tasks at once
        if CODES_KEY not in index.memo:
            index.memo[CODES_KEY] = binary_codes(index.x) if binary_tables_win(index.x.device) else None
        return index.memo[CODES_KEY]


_CODES_LOCK = threading.Lock()


#: Most ball rows of one block-diagonal pass (:class:`BallGCN`'s ``max_rows`` default).
MAX_ROWS = 400_000

#: How many times fewer projected rows the per-task feature blocks must give than the shared union
#: (``T · U / Σ_t U_t``) before a layout uses them (:func:`task_blocks_win`). The shared union projects each of
#: its ``U`` rows with every task's weights, so when the tasks' balls barely overlap (a fused meta-step's runs:
#: ``--parallel-runs``; a meta-batch on a large graph) it computes ``T`` times the needed rows; the blocks compute
#: each task's own rows once, but as a narrower product (``hidden`` columns instead of ``T · hidden``), which costs
#: more per row. CPU, one thread, CiteSeer and Amazon-Computer (session 32): see ``docs/performance.md``.
TASK_BLOCK_GAIN = 1.5

#: Fewest ball members a task (on average) for which per-task blocks of binary features go through the subset-sum
#: tables (:class:`BinaryTaskRows`): each task has tables of its own (``⌈F/8⌉ · 256`` rows, built every pass), which
#: pay only where its rows look them up often enough; tasks with fewer rows take their features as floats
#: (:class:`DenseTaskRows`): on a binary graph of small balls, 100 tasks of ~137 rows each run 25.7 ms a pass as
#: floats against 173.7 ms for the union (``scripts/time_gmeta_blocks.py random-binary``, docs/performance.md).
MIN_TABLE_ROWS = 256


def task_blocks_win(device: torch.device | str, tasks: int, union: int, task_rows: int) -> bool:
    """Whether a layout's first layer projects each task's own ball members (per-task feature blocks) instead of
    the tasks' shared union: on the CPU, for several tasks whose balls overlap so little that the union would
    project :data:`TASK_BLOCK_GAIN` times more rows (``tasks · union ≥ TASK_BLOCK_GAIN · task_rows``, ``task_rows``
    = Σ_t U_t). Not on a GPU, where the wide product's extra rows cost little next to its launches, and whose CUDA
    graphs pad the union layout (:mod:`cmlgraph.backbones.ball_static`)."""
    return (torch.device(device).type == "cpu" and tasks > 1
            and tasks * union >= TASK_BLOCK_GAIN * task_rows)


def ball_groups(items: list[BallInput], max_rows: int = MAX_ROWS,
                segments: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """Split tasks into consecutive groups ``[a, b)`` of at most ``max_rows`` ball rows (a task never split; a
    task larger than ``max_rows`` runs alone). Reads ball sizes on the host.

    ``segments`` (the tasks of each run of a fused meta-step, in order): each run's own groups stay whole
    (:func:`cmlgraph.core.streams.group_tasks`), so a pass draws each run's dropout masks as that run alone would.

    Raises:
        ValueError: ``segments`` that do not add up to the number of tasks.
    """
    return group_tasks([int(it.index.ball_sizes(it.nodes).sum()) for it in items], max_rows, segments)


def prepare_ball_batch(batch: BallBatch, max_rows: int = MAX_ROWS, build: bool = True,
                       segments: Sequence[int] | None = None) -> dict[str, Any]:
    """The task groups and (``build``) their layouts of a stacked batch, kept in ``batch.memo``.

    Called by :meth:`cmlgraph.domains.tlp_graph.TLPGraphDomain.prepare_batch` in the prefetch worker (issue 18):
    the meta-step then finds every layout built and does no host work; the encoder calls it with ``build=False``
    (groups only; each group's layout is built on its first pass if it is missing). Groups made for another
    ``max_rows`` or other ``segments`` (:func:`ball_groups`) are remade.
    """
    memo = batch.memo
    key = (max_rows, None if segments is None else tuple(segments))
    if memo.get("grouped_for") != key:
        memo["groups"] = ball_groups(batch.items, max_rows, segments)
        memo["layouts"] = [{} for _ in memo["groups"]]
        memo["grouped_for"] = key
    if build:
        for (a, b), lay in zip(memo["groups"], memo["layouts"], strict=True):
            ball_layout(batch.items[a:b], lay)
    return memo


def ball_layout(items: list[BallInput], memo: dict[str, Any]) -> dict[str, Any]:
    """The constant sparse matrices of these tasks' balls, in ``memo`` (built once, reused by every pass).

    Host work on the graph's CPU ball index (balls, block, union of members, CSR counts); only the finished
    matrices are copied to the features' device (pinned, ``non_blocking``:
    :func:`cmlgraph.core.transfer.to_device`). Built ahead by :func:`prepare_ball_batch` (the prefetch worker)
    or on a task group's first pass.

    Args:
        items: Tasks' inputs of one graph, each with ``n`` centre nodes (a group of :class:`BallBatch` items).
        memo: Where the layout is kept; returned.

    Returns:
        ``memo`` with ``B`` (ball rows × union), ``PB`` (mean readout of B), ``XU`` (the union's features or their
        binary codes), ``task_of_row``, ``task_rows`` (each task's row count, host ints), ``shape = (T, n, U)``
        and, on an undirected graph, ``gather``. Where :func:`task_blocks_win`, the "union" is each task's own
        members one task after another (``U = Σ_t U_t``), ``XU`` their block-diagonal features
        (:func:`_task_blocks`) and ``task_blocks`` the width ``F_b`` of a task's column block.
    """
    if "B" in memo:
        return memo
    index: BallIndex = items[0].index
    t, n = len(items), int(items[0].nodes.numel())
    blk = index.block(torch.cat([it.nodes.cpu() for it in items]))
    union, inv = torch.unique(blk.members, return_inverse=True)
    u = int(union.numel())
    task_of_row = blk.ball_of_row // n
    r = int(blk.members.numel())
    dev = index.x.device
    codes = feature_codes(index)
    blocks = None  # per-task feature blocks: (each task's members, their tasks), sorted by task then node
    if t > 1 and torch.device(dev).type == "cpu":  # (task_blocks_win: a CPU path; spare a GPU's host the work)
        task_union, task_inv = torch.unique(task_of_row * index.num_nodes + blk.members, return_inverse=True)
        if task_blocks_win(dev, t, u, int(task_union.numel())):
            blocks = (task_union % index.num_nodes, task_union // index.num_nodes)
            union, inv, u = blocks[0], task_inv, int(task_union.numel())
    # B's entries are already in CSR order (rows ascending, columns ascending within a row, no duplicates).
    crow = torch.zeros(r + 1, dtype=blk.rows.dtype)
    torch.cumsum(torch.bincount(blk.rows, minlength=r), 0, out=crow[1:])
    if index.symmetric:
        # Undirected graph: B in row space (R × R, block diagonal) has a symmetric pattern and one value per
        # row, so Bᵀ g = pattern · (dm ⊙ g) needs no stored transpose; each pass gathers the projected rows
        # of its members first (``gather``: row → task·U + union position).
        dm = index.dinv.index_select(0, blk.members)  # B = diag(dm) · (0/1 pattern): one value per row
        vals_t = dm.index_select(0, blk.cols)
        memo["B"] = RowScaledSymmetric(to_device(crow, dev), to_device(blk.cols, dev), to_device(dm, dev))
        memo["gather"] = to_device(inv if blocks is not None else task_of_row * u + inv, dev)
        # Column sums of B are the row sums of Bᵀ: one contiguous segment sum per row (float64, then cast).
        colsum = torch.segment_reduce(vals_t.double(), "sum", offsets=crow.long()).to(blk.vals.dtype)
    else:
        b_cols = inv.index_select(0, blk.cols)
        if blocks is None:
            b_cols = task_of_row.index_select(0, blk.rows) * u + b_cols
        memo["B"] = transposable_csr(to_device(crow.long(), dev), to_device(b_cols, dev), to_device(blk.vals, dev),
                                     (r, u if blocks is not None else t * u))
        colsum = torch.bincount(blk.cols, weights=blk.vals.double(), minlength=r).to(blk.vals.dtype)
    # P·B (mean over a ball of B's rows): B is block diagonal, so column c only meets its own ball's rows and
    # (P B)[ball(c), c] = (column sum of B at c) / |S_ball(c)|: one entry per column.
    pool = colsum / blk.sizes.index_select(0, blk.ball_of_row).to(blk.vals.dtype)
    crow = torch.zeros(t * n + 1, dtype=torch.long)
    torch.cumsum(blk.sizes, 0, out=crow[1:])
    memo["PB"] = transposable_csr(to_device(crow, dev), torch.arange(r, device=dev), to_device(pool, dev), (t * n, r),
                                  col_sorted=True)  # col = arange: no read-back (issue 18)
    union_dev = to_device(union, dev)
    if blocks is not None:  # each task's members in a column block of their own (see _task_blocks)
        memo["XU"], memo["task_blocks"] = _task_blocks(index, codes, union_dev, to_device(blocks[1], dev), t)
    elif codes is not None:  # binary features: the rows' codes, never their floats
        memo["XU"] = BinaryRows(codes.index_select(0, union_dev), int(index.x.shape[1]))
    elif is_sparse(index.x):  # rows of the host's copy, then copied over (a device selection would sync)
        memo["XU"] = transposable(to_device(slice_rows(index.host_x, union), dev))
    else:
        memo["XU"] = index.x.index_select(0, union_dev)
    memo["task_of_row"] = to_device(task_of_row, dev)
    memo["task_rows"] = blk.sizes.view(t, n).sum(1).tolist()  # host ints: each task's ball rows
    memo["shape"] = (t, n, u)
    return memo


def _per_task_products(xs: Iterable[Tensor], w: Tensor, tasks: int) -> Tensor:
    """``[Σ_t U_t, k]``: each task's rows ``xs[t]`` (``[U_t, F_b]``) times its block of ``w`` (``[T · F_b, k]``, the
    tasks' blocks stacked), one product a task. ``unbind``, not ``w[t]``: each index's backward would fill a zero
    tensor of all of ``w`` (T² work)."""
    ws = w.view(tasks, -1, w.shape[1]).unbind(0)
    return torch.cat([x @ wt for x, wt in zip(xs, ws, strict=True)])


class DenseTaskRows:
    """Dense features of each task's own ball members, one task after another (``x``: ``[Σ_t U_t, F]``; ``rows``:
    each task's ``U_t``, host ints): the block-diagonal matrix of :func:`_task_blocks` without its zeros."""

    def __init__(self, x: Tensor, rows: list[int]) -> None:
        self.x, self.rows = x, rows

    def matmul(self, w: Tensor) -> Tensor:
        """``[Σ_t U_t, k]``: each task's rows times its block of ``w`` (``[T · F, k]``, the tasks' blocks stacked),
        one product a task (CPU only: :func:`task_blocks_win`)."""
        return _per_task_products(self.x.split(self.rows), w, len(self.rows))


class BinaryTaskRows(BinaryRows):
    """Binary feature codes of each task's own ball members, one task after another, each row's codes shifted into
    its task's block of chunks (``num_features`` = T · F_b; ``rows``: each task's ``U_t``, host ints): the
    block-diagonal matrix of :func:`_task_blocks` as :class:`BinaryRows`, whose subset-sum tables are each task's.

    A product wider than :data:`~cmlgraph.backbones.binary_features.MAX_TABLE_WIDTH` (``--hidden`` above 256) decodes
    each task's rows on their own (``[U_t, F_b]``) and multiplies them with its block of the weight: decoding the
    block-diagonal matrix as one would take ``T`` times the rows' own floats (a fresh-user review, session 32:
    Amazon-Computer's 1-shot test groups at ``--hidden 300``, about 88 GB: docs/performance.md)."""

    def __init__(self, codes: Tensor, num_features: int, rows: list[int], block_features: int) -> None:
        super().__init__(codes, num_features)
        self.rows, self.block_features = rows, block_features

    def matmul(self, w: Tensor) -> Tensor:
        """``[Σ_t U_t, k]`` for ``w`` of shape ``[T · F_b, k]`` (the tasks' blocks stacked)."""
        if w.shape[1] <= MAX_TABLE_WIDTH:
            return super().matmul(w)
        if w.shape[0] != self.num_features:
            raise ValueError(f"weight has {w.shape[0]} rows; these features have {self.num_features}")
        per_task = (self.block_features // CHUNK) << CHUNK  # code offset of one task's block
        decoded = (BinaryRows(codes - i * per_task, self.block_features).dense(w.dtype)
                   for i, codes in enumerate(self.codes.split(self.rows)))
        return _per_task_products(decoded, w, len(self.rows))


def _task_blocks(index: BallIndex, codes: Tensor | None, members: Tensor, tasks: Tensor, t: int
                 ) -> tuple[Any, int]:
    """The features of each task's own ball members as one block-diagonal matrix ``[Σ_t U_t, T · F_b]``: row
    ``i`` (member ``members[i]`` of task ``tasks[i]``) holds its features in columns ``tasks[i]·F_b … +F_b``, so
    one product with the tasks' stacked weights ``[T · F_b, hidden]`` projects every row with its own task's
    weights (``Σ_t U_t`` rows instead of the shared union's ``U`` rows times ``T`` tasks' weights).

    Returns:
        The matrix (sparse CSR carrying its transpose; binary codes as :class:`BinaryTaskRows`, shifted: block
        ``t``'s chunks are chunks ``t · ⌈F/8⌉ …`` of ``T · F_b`` features, where the tasks have at least
        :data:`MIN_TABLE_ROWS` rows each on average; dense features otherwise, as :class:`DenseTaskRows`, the rows
        without the zeros) and ``F_b`` (F; for binary codes F padded to whole 8-bit chunks).
    """
    f = int(index.x.shape[1])
    if not is_sparse(index.x):
        rows = torch.bincount(tasks, minlength=t).tolist()
        if codes is not None and int(members.numel()) >= MIN_TABLE_ROWS * t:  # each task's tables pay
            chunks = int(codes.shape[1])
            shifted = codes.index_select(0, members) + (tasks * (chunks << CHUNK)).to(codes.dtype).unsqueeze(1)
            return BinaryTaskRows(shifted, t * chunks * CHUNK, rows, chunks * CHUNK), chunks * CHUNK
        # dense floats (binary ones too, where their tasks' tables would not pay): each task's rows, one product a
        # task
        return DenseTaskRows(index.x.index_select(0, members), rows), f
    xu = slice_rows(index.x, members)  # coalesced COO [Σ U_t, F]
    rows, cols = xu.indices()
    shifted = torch.sparse_coo_tensor(torch.stack([rows, cols + tasks.index_select(0, rows) * f]), xu.values(),
                                      (int(members.numel()), t * f), is_coalesced=True)
    return transposable(shifted), f


class BallGCN(Backbone):
    """G-Meta's subgraph GCN (TLP variant) returning one ``hidden``-wide embedding per centre node.

    Args:
        in_dim: Node feature dimension F.
        hidden: Width of both GCN layers (16 in the paper); also ``feature_dim``.
        dropout: Dropout on the first layer's output, in training mode on passes whose input asks for it.
        max_rows: Most ball rows run in one block-diagonal pass; larger task batches (evaluation) are split
            into groups of whole tasks, with the same results.
    """

    #: Draws its dropout masks from each run's own stream inside a fused meta-step (:mod:`cmlgraph.core.streams`).
    random_streams = True

    def __init__(self, in_dim: int, hidden: int = 16, dropout: float = 0.5, max_rows: int = MAX_ROWS) -> None:
        super().__init__()
        self.lin1 = nn.Linear(in_dim, hidden)
        self.lin2 = nn.Linear(hidden, hidden)
        tlp_init(self)
        self.in_dim, self.hidden, self.dropout, self.max_rows = in_dim, hidden, dropout, max_rows
        self.feature_dim = hidden

    def make_head(self, out_dim: int) -> nn.Module:
        """The meta-learner head Linear(hidden → N), TLP-initialised."""
        return tlp_init(mlp_head(self.feature_dim, out_dim, depth=0))

    def _weights(self) -> dict[str, Tensor]:
        return {"lin1.weight": self.lin1.weight, "lin1.bias": self.lin1.bias,
                "lin2.weight": self.lin2.weight, "lin2.bias": self.lin2.bias}

    def forward(self, inputs: BallInput) -> Tensor:
        """Embeddings ``Tensor[len(inputs.nodes), hidden]`` of the centre nodes."""
        w = {k: v.unsqueeze(0) for k, v in self._weights().items()}
        return self._forward_group(w, [inputs], inputs.dropout, inputs.memo)[0]

    def forward_tasks(self, params: dict[str, Tensor], batch: BallBatch) -> Tensor:
        """Embeddings ``Tensor[T, n, hidden]`` of ``T`` tasks, with per-task weights ``params[name][t]``.

        The tasks' layouts come from ``batch.memo`` when :func:`prepare_ball_batch` built them ahead (on the host,
        in the prefetch worker: issue 18), else they are built here on the first pass."""
        items = batch.items
        streams = current_streams() if self.training and items[0].dropout and self.dropout > 0 else None
        if streams is not None and sum(streams.sizes) != len(items):
            raise CmlgraphError(f"the fused runs have {sum(streams.sizes)} tasks but this pass has {len(items)}")
        memo = prepare_ball_batch(batch, self.max_rows, build=False,
                                  segments=None if streams is None else streams.sizes)
        outs = []
        for (a, b), lay in zip(memo["groups"], memo["layouts"], strict=True):
            draws = None
            if streams is not None:  # each run's rows masked from its own stream (a fused meta-step)
                rows = ball_layout(items[a:b], lay)["task_rows"]
                draws = [(sum(rows[x - a:y - a]), streams.generators[run]) for run, x, y in streams.spans(a, b)]
            outs.append(self._forward_group({k: v[a:b] for k, v in params.items()}, items[a:b], items[a].dropout,
                                            lay, draws))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _forward_group(self, w: dict[str, Tensor], items: list[BallInput], dropout: bool,
                       memo: dict[str, Any], draws: list[tuple[int, torch.Generator]] | None = None) -> Tensor:
        lay = ball_layout(items, memo)
        t, n, u = lay["shape"]
        w1, b1, w2, b2 = w["lin1.weight"], w["lin1.bias"], w["lin2.weight"], w["lin2.bias"]
        h = self.hidden
        xu = lay["XU"]
        if "task_blocks" in lay:  # each task's own members: one product with the tasks' weights stacked
            fb = lay["task_blocks"]
            w1_stack = w1.transpose(1, 2)  # [T, F, h]
            if fb > self.in_dim:  # binary codes: F padded to whole 8-bit chunks
                w1_stack = F.pad(w1_stack, (0, 0, 0, fb - self.in_dim))
            w1_stack = w1_stack.reshape(t * fb, h)  # [T·F_b, h]: the tasks' W₁ᵀ stacked
            xw = sparse_matmul(xu, w1_stack) if isinstance(xu, Tensor) else xu.matmul(w1_stack)  # [Σ U_t, h]
        else:
            w1_cat = w1.permute(2, 0, 1).reshape(self.in_dim, t * h)  # [F, T·h]: every task's W₁ᵀ side by side
            if isinstance(xu, BinaryRows):  # binary features: subset-sum tables instead of the dense product
                xw = xu.matmul(w1_cat)
            else:
                xw = sparse_matmul(xu, w1_cat) if is_sparse(xu) else xu @ w1_cat
            xw = xw.view(u, t, h).transpose(0, 1).reshape(t * u, h)
        # index_select, not b1[rows]: its backward is an index_add, 4-5x faster than advanced indexing's
        # accumulating index_put (about 15 % of a G-Meta meta-iteration on Amazon-Computer).
        if "gather" in lay:
            xw = xw.index_select(0, lay["gather"])
        static = lay.get(STATIC_KEY, False)  # padded buffers of a CUDA graph (:mod:`.ball_static`)
        # One task: its bias broadcasts (the per-row gather's backward would be a scatter over every ball row).
        bias = b1 if t == 1 and not static else b1.index_select(0, lay["task_of_row"])
        h1 = F.relu(sparse_matmul(lay["B"], xw) + bias)
        if self.training and dropout and self.dropout > 0:
            h1 = inverted_dropout(h1, self.dropout) if draws is None else _dropout_streams(h1, self.dropout, draws)
        if static:  # the readout P·B as a weighted index_add: its CSR row pointer would depend on the ball sizes
            z = h1.new_zeros(t * n, h).index_add(0, lay["ball_of_row"], h1 * lay["pool"].unsqueeze(1)).view(t, n, h)
        else:
            z = sparse_matmul(lay["PB"], h1).view(t, n, h)
        return torch.baddbmm(b2.unsqueeze(1), z, w2.transpose(1, 2))

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"in_dim={self.in_dim}, hidden={self.hidden}, dropout={self.dropout}, readout=ball mean"


__all__ = ["CODES_KEY", "MAX_ROWS", "MIN_TABLE_ROWS", "TASK_BLOCK_GAIN", "BallGCN", "BinaryTaskRows", "DenseTaskRows",
           "ball_groups", "ball_layout", "feature_codes", "prepare_ball_batch", "task_blocks_win", "tlp_init"]
