"""SGC's propagated features ``S^K X`` with ``S = D^-1/2 (A + I) D^-1/2`` (Wu et al., "Simplifying Graph
Convolutional Networks", ICML 2019).

No weights: ``S^K X`` is the input of the training-free baselines ``sgc-proto`` and ``sgc-logreg``, and APPNP-style
label propagation (:mod:`cmlgraph.baselines.label_prop`) multiplies by the same ``S``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cmlgraph.errors import ConfigError, DataError


def sym_norm_adj(edge_index: Tensor, num_nodes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``S = D^-1/2 (A + I) D^-1/2`` as a sparse COO matrix (``S[dst, src]``; symmetric for undirected graphs).

    Exactly one self-loop per node is used (existing self-loops are dropped first), and ``D`` counts the in-edges
    of ``A + I``, as PyG's ``gcn_norm`` does.

    Args:
        edge_index: ``[2, E]`` source → target node indices.
        num_nodes: Number of nodes ``N``.
        dtype: Floating dtype of the values.

    Returns:
        Coalesced sparse ``[N, N]`` tensor.

    Raises:
        DataError: If an edge names a node outside ``[0, num_nodes)``.
    """
    ei = edge_index.long()
    if ei.dim() != 2 or ei.shape[0] != 2:
        raise DataError(f"edge_index must have shape [2, E], got {tuple(ei.shape)}")
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= num_nodes):
        raise DataError(f"edge_index names node {int(ei.max()) if int(ei.max()) >= num_nodes else int(ei.min())} "
                        f"outside [0, {num_nodes}); pass the graph's num_nodes")
    ei = ei[:, ei[0] != ei[1]]
    loops = torch.arange(num_nodes, device=ei.device)
    ei = torch.cat([ei, torch.stack([loops, loops])], dim=1)
    w = torch.ones(ei.shape[1], dtype=dtype, device=ei.device)
    adj = torch.sparse_coo_tensor(ei.flip(0), w, (num_nodes, num_nodes)).coalesce()
    ei, w = adj.indices(), adj.values().clamp(max=1.0)  # duplicate edges count once
    deg = torch.zeros(num_nodes, dtype=dtype, device=ei.device).index_add_(0, ei[0], w)
    dinv = deg.pow(-0.5)
    return torch.sparse_coo_tensor(ei, dinv[ei[0]] * w * dinv[ei[1]], (num_nodes, num_nodes)).coalesce()


def propagate(adj: Tensor, x: Tensor, k: int) -> Tensor:
    """``adj^k @ x`` for a sparse ``adj`` and a dense ``x`` (dense result)."""
    out = x
    for _ in range(k):
        out = torch.sparse.mm(adj, out)
    return out


def sym_norm_propagate(x: Tensor, edge_index: Tensor, num_nodes: int, k: int) -> Tensor:
    """SGC's ``S^K X`` with ``S = D^-1/2 (A + I) D^-1/2`` (Wu et al., ICML 2019).

    Args:
        x: ``[N, F]`` node features, dense or sparse (a sparse ``x`` is densified: ``S X`` fills in anyway).
        edge_index: ``[2, E]`` source → target edges (give both directions for an undirected graph).
        num_nodes: Number of nodes ``N`` (rows of ``x``).
        k: Number of propagation steps ``K >= 0``; ``K = 0`` returns ``X`` (dense).

    Returns:
        Dense ``[N, F]`` float tensor ``S^K X``.

    Raises:
        ConfigError: If ``k`` is negative.
        DataError: If ``x`` does not have ``num_nodes`` rows or an edge is out of range.
    """
    if int(k) < 0:
        raise ConfigError(f"the number of propagation steps K must be >= 0, got {k}")
    if x.shape[0] != num_nodes:
        raise DataError(f"x has {x.shape[0]} rows but the graph has {num_nodes} nodes")
    dense = x.to_dense() if x.is_sparse or x.layout != torch.strided else x
    dense = dense if dense.is_floating_point() else dense.float()
    if int(k) == 0:
        return dense
    adj = sym_norm_adj(edge_index.to(dense.device), num_nodes, dtype=dense.dtype)
    return propagate(adj, dense, int(k))


__all__ = ["propagate", "sym_norm_adj", "sym_norm_propagate"]
