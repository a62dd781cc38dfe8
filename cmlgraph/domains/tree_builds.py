"""A graph domain's k-hop computation-tree plans built in prefetch worker processes (issue 18).

:class:`TreePlanBuilder` is what :class:`~cmlgraph.train.build_processes.ProcessBuilds` sends to each process
once: the graph's CPU aggregation matrix (and its features where they are sparse, which the plans' constants
read), nothing else. Each call builds the plans of a meta-batch's support and query sets exactly as
:func:`cmlgraph.backbones.gnn.prepare_plan` builds them in the prefetch thread (:func:`~cmlgraph.backbones.gnn.
host_plan`, the same code on equal inputs) and returns them packed, one flat buffer per dtype
(:mod:`cmlgraph.backbones.plan_payload`) in a shared-memory block the run gave with the node ids; the domain's
:meth:`~cmlgraph.domains.graph.GraphDomain.finish_trees` attaches them to the episodes on the run's device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from cmlgraph.backbones.gnn import PLAN_AGGREGATION, host_plan
from cmlgraph.backbones.gnn_ops import CACHE_PREFIX, is_sparse
from cmlgraph.backbones.plan_payload import pack_plans, write_block
from cmlgraph.graphs.types import GraphInput


class TreePlanBuilder:
    """Builds drawn episodes' plans in a worker process (picklable; CPU tensors only).

    Args:
        host: The graph as the prefetch thread's plans read it on the host (``GraphDomain.host_input``): its
            features and its cached CPU aggregation matrix of ``kind``.
        adjacency: That aggregation matrix, CSR (``adjacency_rows(host, ...)``).
        kind: The GNN kind (a plan path).
        hops: The GNN's depth.
        complete: Plans list the input level (input dropout in training).
        run_sparse: Whether the run's own features are sparse (then the plans carry the sparse constants).
    """

    def __init__(self, host: GraphInput, adjacency: Tensor, kind: str, hops: int, complete: bool,
                 run_sparse: bool) -> None:
        self.kind, self.hops, self.complete, self.run_sparse = kind, hops, complete, run_sparse
        self.num_nodes, self.dtype = host.num_nodes, host.x.dtype
        # the features travel only where the plans read them (sparse constants); else a placeholder of N rows
        self.x = host.x.to_sparse_coo().coalesce() if run_sparse and is_sparse(host.x) else None
        self.adjacency = adjacency
        self._cache: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        a = self.adjacency
        state["adjacency"] = (a.crow_indices(), a.col_indices(), a.values(), tuple(a.shape))
        state["x"] = None if self.x is None else (self.x.indices(), self.x.values(), tuple(self.x.shape))
        state["_cache"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        crow, col, val, shape = state["adjacency"]
        state["adjacency"] = torch.sparse_csr_tensor(crow, col, val, shape)
        if state["x"] is not None:
            idx, values, xshape = state["x"]
            state["x"] = torch.sparse_coo_tensor(idx, values, xshape, is_coalesced=True)
        self.__dict__.update(state)

    def _host(self, nodes: np.ndarray) -> GraphInput:
        x = self.x if self.x is not None else torch.empty((self.num_nodes, 0), dtype=self.dtype)
        if self._cache is None:  # the aggregation matrix where adjacency_rows looks first
            self._cache = {CACHE_PREFIX + f"adj/{PLAN_AGGREGATION[self.kind]}/rows": self.adjacency}
        return GraphInput(x, torch.empty((2, 0), dtype=torch.long), torch.from_numpy(nodes), self._cache, local=True)

    def __call__(self, sent: tuple[list[tuple[np.ndarray, np.ndarray]], tuple[int, str, int] | None]
                 ) -> tuple[int | None, dict[str, Any], list]:
        """The support and query plans of each episode's ``(support, query)`` node ids, in that order, packed
        (:func:`~cmlgraph.backbones.plan_payload.pack_plans`) and written into the run's shared block given with
        them (:func:`~cmlgraph.backbones.plan_payload.write_block`; ``None``: returned as buffers). Returns the
        block's index, the payload and the plans' structure."""
        node_sets, block = sent
        buffers, specs = pack_plans([host_plan(self._host(nodes), self.kind, self.hops, self.complete,
                                               self.run_sparse) for pair in node_sets for nodes in pair])
        if block is None:
            return None, {"buffers": buffers, "bytes": 0}, specs
        return block[0], write_block(block, buffers), specs


__all__ = ["TreePlanBuilder"]
