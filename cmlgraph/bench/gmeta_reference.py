"""Per-node-subgraph G-Meta encoders: the references that the batched :class:`~cmlgraph.backbones.gmeta.BallGCN` is
checked against (loss and meta-gradients, in the tests) and timed against (``cmlgraph bench``).

- :class:`DensePerNodeBallGCN`, in the style of the published code (TLP's ``train_G-Meta.py``): the full graph's
  ``D⁻¹(A + I)`` is held as a dense ``N × N`` matrix; each episode extracts every support and query node's ball
  from it (non-zeros of its row, then of those rows' sum) with the dense sub-adjacency ``Â[S, S]`` and features
  ``X[S]``, and every inner step runs a dense 2-layer GCN per node, one node at a time, then the ball mean.
- :class:`PerNodeBallGCN`, a stronger per-node loop: the ball's ``Â[S, S]`` sliced with scipy as a sparse matrix,
  built once per node and cached, sparse products.

Both have the parameter names and shapes of ``BallGCN``, so one state dict loads into all three.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmlgraph.backbones.base import Backbone, mlp_head
from cmlgraph.backbones.gmeta import tlp_init
from cmlgraph.graphs.balls import BallIndex, BallInput


def _subgraph(index: BallIndex, v: int) -> tuple[Tensor, Tensor]:
    """``(Â[S, S] as torch sparse COO, S)`` of node v's closed 2-hop ball, cached on the index."""
    store = index.memo.setdefault("per_node", {})
    if v not in store:
        if "scipy" not in index.memo:
            n = index.num_nodes
            index.memo["scipy"] = sp.csr_matrix((index.val.numpy(), index.col.numpy(), index.crow.numpy()),
                                                shape=(n, n))
        a = index.memo["scipy"]
        ball = {v}
        for _ in range(index.hops):
            ball |= set(a[sorted(ball)].indices.tolist())
        members = np.array(sorted(ball))
        sub = a[members][:, members].tocoo()
        adj = torch.sparse_coo_tensor(np.vstack([sub.row, sub.col]), torch.from_numpy(sub.data).float(),
                                      sub.shape).coalesce().to(index.x.device)
        store[v] = (adj, torch.from_numpy(members).to(index.x.device))
    return store[v]


def _dense_features(index: BallIndex) -> Tensor:
    """The graph's node features as a dense matrix, made once per ball index (as the published code holds them)."""
    if "dense_x" not in index.memo:
        index.memo["dense_x"] = index.x if index.x.layout == torch.strided else index.x.to_dense()
    return index.memo["dense_x"]


class PerNodeBallGCN(Backbone):
    """G-Meta's encoder, one subgraph at a time (reference; see the module docstring)."""

    def __init__(self, in_dim: int, hidden: int = 16, dropout: float = 0.5) -> None:
        super().__init__()
        self.lin1 = nn.Linear(in_dim, hidden)
        self.lin2 = nn.Linear(hidden, hidden)
        tlp_init(self)
        self.dropout = dropout
        self.feature_dim = hidden

    def make_head(self, out_dim: int) -> nn.Module:
        """Linear(hidden → N), TLP-initialised."""
        return tlp_init(mlp_head(self.feature_dim, out_dim, depth=0))

    def forward(self, inputs: BallInput) -> Tensor:
        """One embedding per centre node, computed node by node."""
        x = _dense_features(inputs.index)
        outs = []
        for v in inputs.nodes.tolist():
            adj, members = _subgraph(inputs.index, int(v))
            xs = x.index_select(0, members)
            h = F.relu(torch.sparse.mm(adj, xs @ self.lin1.weight.t()) + self.lin1.bias)
            if self.training and inputs.dropout and self.dropout > 0:
                h = F.dropout(h, self.dropout, training=True)
            h = torch.sparse.mm(adj, h @ self.lin2.weight.t()) + self.lin2.bias
            outs.append(h.mean(0))
        return torch.stack(outs)


class DensePerNodeBallGCN(PerNodeBallGCN):
    """G-Meta's encoder as the published code runs it: dense adjacency, subgraphs extracted per episode, node loop."""

    def _balls(self, inputs: BallInput) -> list[tuple[Tensor, Tensor]]:
        if "dense" not in inputs.memo:  # once per episode input, reused by its inner steps, as the published code
            index = inputs.index
            if "dense_adj" not in index.memo:
                n = index.num_nodes
                index.memo["dense_adj"] = torch.sparse_csr_tensor(index.crow, index.col, index.val,
                                                                  (n, n)).to_dense().to(index.x.device)
            adj = index.memo["dense_adj"]
            subs = []
            for v in inputs.nodes.tolist():
                nbrs = torch.nonzero(adj[v]).view(-1)
                ball = torch.nonzero(adj[nbrs].sum(0)).view(-1)
                subs.append((adj[ball][:, ball], ball))
            inputs.memo["dense"] = subs
        return inputs.memo["dense"]

    def forward(self, inputs: BallInput) -> Tensor:
        """One embedding per centre node, dense, node by node."""
        x = _dense_features(inputs.index)
        outs = []
        for adj, ball in self._balls(inputs):
            h = F.relu(adj @ (x[ball] @ self.lin1.weight.t()) + self.lin1.bias)
            if self.training and inputs.dropout and self.dropout > 0:
                h = F.dropout(h, self.dropout, training=True)
            h = adj @ (h @ self.lin2.weight.t()) + self.lin2.bias
            outs.append(h.mean(0))
        return torch.stack(outs)


__all__ = ["DensePerNodeBallGCN", "PerNodeBallGCN"]
