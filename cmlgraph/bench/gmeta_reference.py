"""A per-node-subgraph G-Meta encoder in the style of the published code (TLP's ``G-Meta``): the reference that the
batched :class:`~cmlgraph.backbones.gmeta.BallGCN` is checked against (loss and meta-gradients, in the tests) and
timed against (``cmlgraph bench``).

For every centre node, one at a time: its ball's adjacency ``Â[S, S]`` (sliced with scipy from the full graph's
``D⁻¹(A + I)``, precomputed once per node, as the published code caches its subgraphs), the dense features
``X[S]``, a 2-layer GCN with torch sparse products, and the mean over the ball. Same parameter names and shapes as
``BallGCN``, so one state dict loads into both.
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
        index = inputs.index
        if "dense_x" not in index.memo:
            index.memo["dense_x"] = index.x if index.x.layout == torch.strided else index.x.to_dense()
        x = index.memo["dense_x"]
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


__all__ = ["PerNodeBallGCN"]
