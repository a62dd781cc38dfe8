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

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.utils import add_self_loops, degree, remove_self_loops, to_torch_csr_tensor

from cmlgraph.graphs.types import GraphInput

CACHE_PREFIX = "gnn/"


def is_sparse(x: Tensor) -> bool:
    """Whether ``x`` is a torch sparse tensor (COO, CSR or another sparse layout)."""
    return x.layout != torch.strided


def sparse_aware_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias`` for a dense or sparse ``x`` without densifying it.

    ``torch.sparse.mm(sparse, dense)`` is differentiable twice with respect to the dense operand, so adapted
    weights keep their second-order path.
    """
    out = torch.sparse.mm(x, weight.t()) if is_sparse(x) else F.linear(x, weight)
    return out if bias is None else out + bias


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


def feature_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout that keeps a sparse ``x`` sparse (it drops stored values only)."""
    if not training or p == 0.0:
        return x
    if not is_sparse(x):
        return F.dropout(x, p, training=True)
    if x.layout == torch.sparse_coo:
        x = x.coalesce()
        return torch.sparse_coo_tensor(
            x.indices(), F.dropout(x.values(), p, training=True), x.shape, is_coalesced=True
        )
    if x.layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(
            x.crow_indices(), x.col_indices(), F.dropout(x.values(), p, training=True), x.shape
        )
    return feature_dropout(x.to_sparse_coo(), p, training)


def cached(inputs: GraphInput, key: str, build: Callable[[], Any]) -> Any:
    """Return ``inputs.cache[key]``, building it with ``build()`` on first use.

    An entry whose tensors no longer match the features' dtype or device (the graph was moved or cast) is
    rebuilt. Entries depend on the graph (and the fixed features) only, never on weights.
    """
    full_key = CACHE_PREFIX + key
    value = inputs.cache.get(full_key)
    if value is None or not _matches(value, inputs.x):
        value = build()
        inputs.cache[full_key] = value
    return value


def _matches(value: Any, x: Tensor) -> bool:
    tensors = value if isinstance(value, tuple) else (value,)
    for t in tensors:
        if isinstance(t, Tensor) and (t.device != x.device or (t.is_floating_point() and t.dtype != x.dtype)):
            return False
    return True


def _adj_t(edge_index: Tensor, weight: Tensor, num_nodes: int) -> Tensor:
    """CSR ``adj_t`` with ``adj_t[dst, src] = weight``: what PyG convs aggregate over."""
    return to_torch_csr_tensor(edge_index.flip(0), weight, size=(num_nodes, num_nodes))


def gcn_adj(inputs: GraphInput) -> Tensor:
    """Symmetrically normalised adjacency with self-loops, ``D^-1/2 (A + I) D^-1/2`` (GCN, SGC), cached."""

    def build() -> Tensor:
        n = inputs.num_nodes
        ei, w = gcn_norm(
            inputs.edge_index, None, n, improved=False, add_self_loops=True, dtype=inputs.x.dtype
        )
        return _adj_t(ei.to(inputs.x.device), w.to(inputs.x.device), n)

    return cached(inputs, "adj/gcn", build)


def mean_adj(inputs: GraphInput) -> Tensor:
    """In-degree normalised adjacency (mean over in-neighbours; isolated nodes get 0), cached (SAGE)."""

    def build() -> Tensor:
        n = inputs.num_nodes
        ei = inputs.edge_index.to(inputs.x.device)
        deg = degree(ei[1], n, dtype=inputs.x.dtype)
        return _adj_t(ei, deg.reciprocal()[ei[1]], n)

    return cached(inputs, "adj/mean", build)


def sum_adj(inputs: GraphInput) -> Tensor:
    """Unweighted adjacency (sum over in-neighbours), cached (GIN)."""

    def build() -> Tensor:
        ei = inputs.edge_index.to(inputs.x.device)
        return _adj_t(ei, torch.ones(ei.shape[1], dtype=inputs.x.dtype, device=ei.device), inputs.num_nodes)

    return cached(inputs, "adj/sum", build)


def self_loop_edge_index(inputs: GraphInput) -> Tensor:
    """``edge_index`` with exactly one self-loop per node (what GATConv adds itself), cached (GAT)."""

    def build() -> Tensor:
        ei, _ = remove_self_loops(inputs.edge_index.to(inputs.x.device))
        ei, _ = add_self_loops(ei, num_nodes=inputs.num_nodes)
        return ei

    return cached(inputs, "edge_index/self_loops", build)


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
    "SparseLinear",
    "cached",
    "feature_dropout",
    "gcn_adj",
    "is_sparse",
    "mean_adj",
    "propagate_sparse",
    "select_rows",
    "self_loop_edge_index",
    "sparse_aware_linear",
    "sparse_nnz",
    "sum_adj",
]
