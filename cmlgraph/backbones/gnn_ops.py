"""Graph-only precomputations and sparse-aware tensor ops shared by the GNN backbones.

Why a separate module: the GNN backbone is evaluated many times per task (S inner steps plus the query
pass) through ``torch.func.functional_call`` with adapted weights, so everything that depends only on the
graph (normalised adjacencies, self-looped edge lists) is built once and stored in ``GraphInput.cache``; and
the node features may be a torch sparse matrix that must never be densified. Every op here is differentiable
twice with respect to the weights (checked in ``tests/backbones/test_gnn.py``).

Adjacencies are stored as ``torch.sparse_csr`` matrices in PyG's ``adj_t`` convention (row = target node,
column = source node), so PyG convs aggregate them with ``torch.sparse.mm`` (sum reduction). The CSR
``reduce="mean"`` kernel of ``torch.sparse.mm`` has no double backward, so mean aggregation is expressed as a
sum over a row-normalised adjacency instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.utils import add_self_loops, degree, remove_self_loops

from cmlgraph.core.dropout import current_generator, dropout, dropout_task_rows
from cmlgraph.graphs.types import GraphInput

CACHE_PREFIX = "gnn/"


_TRANSPOSE = "_cmlgraph_transpose"
_PERM = "_cmlgraph_transpose_perm"
#: Attribute of a block-diagonal sparse matrix (``gnn_plan._block_diag``): its blocks' stored values, host-side.
BLOCK_NNZ = "_cmlgraph_block_nnz"


def is_sparse(x: Tensor) -> bool:
    """Whether ``x`` is a torch sparse tensor (COO, CSR or another sparse layout)."""
    return x.layout != torch.strided


class _ConstSparseMM(torch.autograd.Function):
    """``a @ b`` for a constant sparse ``a`` whose transpose is precomputed; differentiable to any order in b.

    torch's own backward of ``torch.sparse.mm`` transposes ``a`` and re-sorts it into CSR on every call (the
    dominant cost of an inner loop on a 25k-node graph); here the transpose is built once per graph.
    """

    @staticmethod
    def forward(ctx: Any, a: Tensor, a_t: Tensor, b: Tensor) -> Tensor:
        ctx.a, ctx.a_t = a, a_t
        return torch.sparse.mm(a, b)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor]:
        return None, None, _ConstSparseMM.apply(ctx.a_t, ctx.a, grad)


def transposable(a: Tensor) -> Tensor:
    """A CSR copy of the sparse matrix ``a`` carrying its CSR transpose, for fast :func:`sparse_matmul`."""
    coo = a.to_sparse_coo().coalesce()
    rows, cols = coo.indices()
    perm = torch.argsort(cols * a.shape[0] + rows)
    out = coo.to_sparse_csr()
    t_idx = torch.stack([cols.index_select(0, perm), rows.index_select(0, perm)])
    t = torch.sparse_coo_tensor(t_idx, coo.values().index_select(0, perm), (a.shape[1], a.shape[0]), is_coalesced=True)
    setattr(out, _TRANSPOSE, t.to_sparse_csr())
    setattr(out, _PERM, perm)
    return out


def transposable_csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int],
                     col_sorted: bool | None = None) -> Tensor:
    """Like :func:`transposable` for a valid CSR matrix given by its parts (sorted, no duplicates): no coalescing,
    one stable sort by column builds the transpose.

    No host-device sync when the caller says whether ``col`` is sorted (issue 18): the expansion of ``crow`` is
    told its size (``nnz``) and the columns are counted with ``index_add_``, not ``bincount`` (whose CUDA kernel
    reads the largest column back). ``col_sorted=None`` checks it (one read-back).
    """
    rows = torch.repeat_interleave(torch.arange(shape[0], device=col.device), crow[1:] - crow[:-1],
                                   output_size=col.numel())
    if col_sorted is None:
        col_sorted = col.numel() < 2 or bool((col[1:] >= col[:-1]).all())
    # A column-sorted CSR (e.g. the pooling matrix, col = arange) is its own order: skip the sort.
    perm = torch.arange(col.numel(), device=col.device) if col_sorted else torch.sort(col, stable=True).indices
    counts = torch.zeros(shape[1], dtype=torch.long, device=col.device).index_add_(
        0, col, torch.ones(col.numel(), dtype=torch.long, device=col.device))  # bincount without its read-back
    crow_t = torch.zeros(shape[1] + 1, dtype=crow.dtype, device=col.device)
    torch.cumsum(counts, 0, out=crow_t[1:])
    out = torch.sparse_csr_tensor(crow, col, values, shape)
    setattr(out, _TRANSPOSE, torch.sparse_csr_tensor(crow_t, rows.index_select(0, perm),
                                                       values.index_select(0, perm), (shape[1], shape[0])))
    setattr(out, _PERM, perm)
    return out


class _RowScaledSymmetricSum(torch.autograd.Function):
    """``D S y`` (``scale_first`` False) or ``S D y`` (True) for a 0/1 matrix ``S`` with a symmetric pattern given
    as CSR ``(offsets, cols)`` and ``D = diag(scale)``; each is the other's backward, since ``Sᵀ = S``."""

    @staticmethod
    def forward(ctx: Any, cols: Tensor, offsets: Tensor, scale: Tensor, y: Tensor, scale_first: bool) -> Tensor:
        ctx.parts, ctx.scale_first = (cols, offsets, scale), scale_first
        if scale_first:
            y = y * scale.unsqueeze(1)
        out = F.embedding_bag(cols, y, offsets, mode="sum")
        return out if scale_first else out * scale.unsqueeze(1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, None, Tensor, None]:
        cols, offsets, scale = ctx.parts
        return None, None, None, _RowScaledSymmetricSum.apply(cols, offsets, scale, grad, not ctx.scale_first), None


class RowScaledSymmetric:
    """A square sparse matrix ``B = D S``: a 0/1 pattern ``S`` that is symmetric, each row scaled by one value
    (``D⁻¹(A + I)`` restricted to a block of an undirected graph, as G-Meta's balls are).

    ``B @ y`` runs as one fused gather-and-sum per row (``embedding_bag``; forward and backward about 1.3x
    faster than ``torch.sparse.mm`` on a CSR matrix on a CPU at a million entries, ``scripts/profile_gmeta.py``)
    and its backward ``Bᵀ g = S D g`` reuses
    the same pattern, with no transpose stored. Differentiable to any order in ``y``.

    Args:
        crow: ``[n + 1]`` CSR row pointer of ``S``.
        cols: ``[nnz]`` column indices (same integer dtype as ``crow``).
        row_scale: ``[n]`` the value of every entry of row ``i``.
    """

    def __init__(self, crow: Tensor, cols: Tensor, row_scale: Tensor) -> None:
        self.offsets, self.cols, self.row_scale = crow[:-1].contiguous(), cols, row_scale
        self.shape = (int(row_scale.numel()), int(row_scale.numel()))

    @classmethod
    def from_offsets(cls, offsets: Tensor, cols: Tensor, row_scale: Tensor) -> RowScaledSymmetric:
        """The matrix whose row ``i`` holds ``cols[offsets[i]:offsets[i + 1]]`` (the last row: to the end), on
        these very tensors (no copy: a CUDA graph's fixed buffers, :mod:`cmlgraph.backbones.ball_static`)."""
        out = cls.__new__(cls)
        out.offsets, out.cols, out.row_scale = offsets, cols, row_scale
        out.shape = (int(row_scale.numel()), int(row_scale.numel()))
        return out

    def matmul(self, y: Tensor) -> Tensor:
        """``B @ y`` for ``y`` of shape ``[n, k]``."""
        return _RowScaledSymmetricSum.apply(self.cols, self.offsets, self.row_scale, y, False)


class IndexAggregation:
    """A constant sparse matrix ``A`` as ``(rows, cols, vals)`` whose product ``A @ y`` runs as
    ``zeros.index_add(rows, vals · y[cols])``: fixed shapes and no CSR row pointer, so a CUDA graph can replay it
    on refilled buffers. Differentiable to any order in ``y`` (autograd of ``index_select`` and ``index_add``).

    Args:
        rows: ``LongTensor[E]`` output rows.
        cols: ``LongTensor[E]`` input rows.
        vals: ``[E]`` values (0 for pad entries).
        shape: ``(rows, cols)`` of ``A``.
    """

    def __init__(self, rows: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int]) -> None:
        self.rows, self.cols, self.vals, self.shape = rows, cols, vals, shape

    def matmul(self, y: Tensor) -> Tensor:
        """``A @ y`` for ``y`` of shape ``[shape[1], d]``: ``[shape[0], d]``."""
        msg = y.index_select(0, self.cols) * self.vals.unsqueeze(1).to(y.dtype)
        return y.new_zeros(self.shape[0], y.shape[1]).index_add(0, self.rows, msg)


def stored_transpose(a: Tensor) -> Tensor | None:
    """The CSR transpose that :func:`transposable` or :func:`transposable_csr` stored with ``a``, else ``None``."""
    return getattr(a, _TRANSPOSE, None)


def with_values(a: Tensor, values: Tensor) -> Tensor:
    """The matrix ``a`` from :func:`transposable` with its stored values replaced (e.g. after dropout)."""
    out = torch.sparse_csr_tensor(a.crow_indices(), a.col_indices(), values, a.shape)
    a_t, perm = getattr(a, _TRANSPOSE), getattr(a, _PERM)
    values_t = values.index_select(0, perm)
    setattr(out, _TRANSPOSE, torch.sparse_csr_tensor(a_t.crow_indices(), a_t.col_indices(), values_t, a_t.shape))
    setattr(out, _PERM, perm)
    return out


def sparse_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for a sparse ``a`` and a dense ``b``, twice differentiable in ``b``.

    Uses the transpose carried by a :func:`transposable` matrix when there is one; otherwise (or when ``a``
    itself needs a gradient) plain ``torch.sparse.mm``.
    """
    if isinstance(a, (RowScaledSymmetric, IndexAggregation)):
        return a.matmul(b)
    a_t = getattr(a, _TRANSPOSE, None)
    if a_t is None or a.requires_grad:
        return torch.sparse.mm(a, b)
    return _ConstSparseMM.apply(a, a_t, b)


def sparse_aware_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias`` for a dense or sparse ``x`` without densifying it."""
    out = sparse_matmul(x, weight.t()) if is_sparse(x) else F.linear(x, weight)
    return out if bias is None else out + bias


class FastSparseAggregation:
    """Mixin for PyG convs: sum-aggregate over a torch sparse ``adj_t`` with :func:`sparse_matmul`.

    PyG's own path (``torch.sparse.mm``) is correct but re-transposes the adjacency in every backward.
    """

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor | tuple[Tensor, Tensor | None]) -> Tensor:
        """Sum over in-neighbours, weighted by the values of ``adj_t``."""
        return sparse_matmul(adj_t, x[0] if isinstance(x, tuple) else x)


class SparseLinear(Linear):
    """PyG's ``Linear`` that also accepts a sparse input; swapped into the first conv of a GNN.

    Same parameters (names, shapes, initialisation) as the layer it replaces, so state dicts are unchanged.
    """

    @classmethod
    def from_linear(cls, lin: Linear) -> SparseLinear:
        """Copy a PyG ``Linear`` (sizes, initialisers and current weights) into a ``SparseLinear``."""
        new = cls(
            lin.in_channels,
            lin.out_channels,
            bias=lin.bias is not None,
            weight_initializer=lin.weight_initializer,
            bias_initializer=lin.bias_initializer,
        )
        new.load_state_dict(lin.state_dict())
        return new

    def forward(self, x: Tensor) -> Tensor:
        """Apply the affine map to a dense or sparse ``x``."""
        return sparse_aware_linear(x, self.weight, self.bias)


def feature_dropout(x: Tensor, p: float, training: bool, generator: torch.Generator | None = None) -> Tensor:
    """Dropout that keeps a sparse ``x`` sparse (it drops stored values only), its mask from ``generator``, else
    the enclosing :func:`~cmlgraph.core.dropout.draw_from` block's generator, else torch's global RNG."""
    if not training or p == 0.0:
        return x
    gen = generator if generator is not None else current_generator()
    if not is_sparse(x):
        return dropout(x, p, gen)
    if hasattr(x, _TRANSPOSE):
        return with_values(x, dropout(x.values(), p, gen))
    if x.layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), dropout(x.values(), p, gen), x.shape)
    x = x.to_sparse_coo().coalesce()
    return torch.sparse_coo_tensor(x.indices(), dropout(x.values(), p, gen), x.shape, is_coalesced=True)


def task_feature_dropout(x: Tensor, p: float, tasks: int, draws: Sequence[tuple[int, int, int, torch.Generator]]
                         ) -> Tensor:
    """:func:`feature_dropout` of ``tasks`` tasks' stacked rows in a fused meta-step of several runs, each run's
    tasks masked from its own generator as that run masks them alone (:mod:`cmlgraph.core.streams`).

    Args:
        x: Dense ``[T·rows, d]`` or ``[T, rows, d]`` (each task's rows padded to ``rows``), or a block-diagonal
            sparse matrix of ``T`` blocks (``gnn_plan._block_diag``: its stored values in task order).
        p: Dropout rate.
        tasks: ``T``.
        draws: Per run, in task order, ``(a, b, own_rows, generator)``
            (:func:`~cmlgraph.core.dropout.dropout_task_rows`); sparse blocks need no ``own_rows`` (padding rows
            store no values).

    Raises:
        ValueError: A sparse ``x`` that does not say its blocks' sizes (``BLOCK_NNZ``).
    """
    if not is_sparse(x):
        return dropout_task_rows(x, p, tasks, draws)
    counts = getattr(x, BLOCK_NNZ, None)
    if counts is None or len(counts) != tasks or not hasattr(x, _TRANSPOSE):
        raise ValueError("task_feature_dropout needs a block-diagonal matrix that names its blocks' sizes "
                         "(gnn_plan._block_diag); got another sparse matrix")
    chunks = x.values().split([sum(counts[a:b]) for a, b, _, _ in draws])
    values = torch.cat([dropout(c, p, gen) for c, (_, _, _, gen) in zip(chunks, draws, strict=True)])
    return with_values(x, values)


def sparse_features(inputs: GraphInput) -> Tensor:
    """The node features: dense as given, or sparse as a cached :func:`transposable` CSR matrix."""
    x = inputs.x
    if not is_sparse(x) or x.requires_grad:
        return x
    return cached(inputs, "x/sparse", lambda: transposable(x))


def cached(inputs: GraphInput, key: str, build: Callable[[], Any]) -> Any:
    """Return ``inputs.cache[key]``, building it with ``build()`` on first use.

    An entry whose tensors no longer match the features' dtype or device (the graph was moved or cast) is
    rebuilt. Entries depend on the graph (and the fixed features) only, never on weights.
    """
    full_key = CACHE_PREFIX + key
    if full_key in inputs.cache and _matches(inputs.cache[full_key], inputs.x):
        return inputs.cache[full_key]
    value = build()
    with _CACHE_LOCK:  # two threads that built it at once (a prefetch worker and the main thread) keep one copy
        current = inputs.cache.get(full_key)
        if current is not None and _matches(current, inputs.x):
            return current
        inputs.cache[full_key] = value
    return value


#: Guards :func:`cached`'s check-and-store (not the build): every caller gets the one stored entry.
_CACHE_LOCK = threading.Lock()


def _matches(value: Any, x: Tensor) -> bool:
    tensors = value if isinstance(value, tuple) else (value,)
    for t in tensors:
        if isinstance(t, Tensor) and (t.device != x.device or (t.is_floating_point() and t.dtype != x.dtype)):
            return False
    return True


def _adj_t(edge_index: Tensor, weight: Tensor, num_nodes: int) -> Tensor:
    """CSR ``adj_t`` with ``adj_t[dst, src] = weight`` (what PyG convs aggregate over), with its transpose."""
    n = num_nodes
    return transposable(torch.sparse_coo_tensor(edge_index.flip(0), weight, (n, n)))


def _edge_weights(inputs: GraphInput, kind: str) -> tuple[Tensor, Tensor]:
    """``(edge_index, weight)`` of a kind's aggregation on the graph of ``inputs`` (PyG's source → target)."""
    n = inputs.num_nodes
    dev, dtype = inputs.x.device, inputs.x.dtype
    if kind == "gcn":
        ei, w = gcn_norm(inputs.edge_index, None, n, improved=False, add_self_loops=True, dtype=dtype)
        return ei.to(dev), w.to(dev)
    ei = inputs.edge_index.to(dev)
    if kind == "mean":
        deg = degree(ei[1], n, dtype=dtype)
        return ei, deg.reciprocal()[ei[1]]
    if kind == "sum":
        return ei, torch.ones(ei.shape[1], dtype=dtype, device=dev)
    raise ValueError(f"unknown aggregation {kind!r}")


def gcn_adj(inputs: GraphInput) -> Tensor:
    """Symmetrically normalised adjacency with self-loops, ``D^-1/2 (A + I) D^-1/2`` (GCN, SGC), cached."""
    return cached(inputs, "adj/gcn", lambda: _adj_t(*_edge_weights(inputs, "gcn"), inputs.num_nodes))


def mean_adj(inputs: GraphInput) -> Tensor:
    """In-degree normalised adjacency (mean over in-neighbours; isolated nodes get 0), cached (SAGE)."""
    return cached(inputs, "adj/mean", lambda: _adj_t(*_edge_weights(inputs, "mean"), inputs.num_nodes))


def sum_adj(inputs: GraphInput) -> Tensor:
    """Unweighted adjacency (sum over in-neighbours), cached (GIN)."""
    return cached(inputs, "adj/sum", lambda: _adj_t(*_edge_weights(inputs, "sum"), inputs.num_nodes))


def adjacency_rows(inputs: GraphInput, kind: str) -> Tensor:
    """The aggregation matrix of ``kind`` (``gcn``, ``mean``, ``sum``) as a plain CSR ``adj_t``, for reading rows.

    Reuses the full (transposable) adjacency when a full-graph pass already built it; otherwise builds only the
    CSR (no transpose), which is all a computation-tree plan needs, and caches it.
    """
    full = inputs.cache.get(CACHE_PREFIX + f"adj/{kind}")
    if full is not None and _matches(full, inputs.x):
        return full

    def build() -> Tensor:
        ei, w = _edge_weights(inputs, kind)
        n = inputs.num_nodes
        return torch.sparse_coo_tensor(ei.flip(0), w, (n, n)).coalesce().to_sparse_csr()

    return cached(inputs, f"adj/{kind}/rows", build)


#: :func:`cached` key of :func:`self_loop_edge_index` (the graph domain fills it on the host for k-hop subgraphs).
SELF_LOOPS_KEY = "edge_index/self_loops"


def self_loop_edge_index(inputs: GraphInput) -> Tensor:
    """``edge_index`` with exactly one self-loop per node (what GATConv adds itself), cached (GAT)."""

    def build() -> Tensor:
        ei, _ = remove_self_loops(inputs.edge_index.to(inputs.x.device))
        ei, _ = add_self_loops(ei, num_nodes=inputs.num_nodes)
        return ei

    return cached(inputs, SELF_LOOPS_KEY, build)


def propagate_sparse(adj_t: Tensor, x: Tensor, hops: int, max_nnz: int) -> Tensor | None:
    """``adj_t^hops @ x`` for a sparse ``x``, kept sparse; ``None`` once the result exceeds ``max_nnz``.

    The fill-in of ``Â^K X`` on bag-of-words features can be large, so the caller falls back to projecting
    first and propagating the dense hidden features when this returns ``None``.
    """
    adj = adj_t.to_sparse_coo()
    out = x.to_sparse_coo().coalesce()
    for _ in range(hops):
        out = torch.sparse.mm(adj, out).coalesce()
        if out._nnz() > max_nnz:
            return None
    return out


def sparse_nnz(x: Tensor) -> int:
    """Number of stored values of a sparse tensor (COO or compressed)."""
    return int(x._nnz()) if x.layout == torch.sparse_coo else int(x.values().numel())


def select_rows(x: Tensor, rows: Tensor) -> Tensor:
    """``x[rows]`` for a dense or sparse (COO) ``x``; a sparse result stays sparse."""
    if not is_sparse(x):
        return x[rows]
    if x.layout != torch.sparse_coo:
        x = x.to_sparse_coo()
    return torch.index_select(x, 0, rows)


__all__ = [
    "FastSparseAggregation",
    "IndexAggregation",
    "RowScaledSymmetric",
    "SELF_LOOPS_KEY",
    "BLOCK_NNZ",
    "adjacency_rows",
    "SparseLinear",
    "cached",
    "feature_dropout",
    "task_feature_dropout",
    "gcn_adj",
    "is_sparse",
    "mean_adj",
    "propagate_sparse",
    "select_rows",
    "self_loop_edge_index",
    "sparse_aware_linear",
    "sparse_features",
    "sparse_matmul",
    "sparse_nnz",
    "stored_transpose",
    "sum_adj",
    "transposable",
    "transposable_csr",
    "with_values",
]
