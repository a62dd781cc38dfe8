"""The graph a GNN backbone sees for one episode: the full graph, or the k-hop subgraph around the episode nodes.

Why: on large graphs (ogbn-products, a synthetic graph with millions of nodes) a k-layer GNN only needs the nodes
within k hops of the support and query nodes. The expansion runs on the graph's cached CSR adjacency, so each hop
touches only the frontier's neighbour lists instead of scanning all E edges as
``torch_geometric.utils.k_hop_subgraph`` does; on small graphs both give the same subgraph (same sorted node order,
same induced edges). Sparse features stay sparse.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cmlgraph.errors import ConfigError
from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.sparse import csr_row_entries, slice_rows
from cmlgraph.graphs.types import GraphInput


def _neighbours(rowptr: Tensor, col: Tensor, nodes: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(source_position, neighbour)`` pairs of every edge out of ``nodes`` (CSR gather)."""
    src_pos, pos = csr_row_entries(rowptr, nodes)
    return src_pos, col[pos]


def k_hop_nodes(graph: FewShotGraph, nodes: Tensor, hops: int) -> tuple[Tensor, Tensor]:
    """Nodes within ``hops`` hops of ``nodes`` and the induced edges, via CSR expansion.

    Returns:
        ``(subset, edge_index)``: sorted global node ids, and the induced edges relabelled into ``subset``.
    """
    rowptr, col = graph.adjacency()
    n = graph.num_nodes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[nodes] = True
    frontier = torch.unique(nodes)
    for _ in range(hops):
        if frontier.numel() == 0:
            break
        _, nbr = _neighbours(rowptr, col, frontier)
        nbr = torch.unique(nbr)
        frontier = nbr[~mask[nbr]]
        mask[frontier] = True
    subset = mask.nonzero().view(-1)
    src_pos, dst = _neighbours(rowptr, col, subset)
    keep = mask[dst]
    local = torch.full((n,), -1, dtype=torch.long) if n <= 4 * subset.numel() else None
    if local is not None:
        local[subset] = torch.arange(subset.numel())
        dst_local = local[dst[keep]]
    else:
        dst_local = torch.searchsorted(subset, dst[keep])
    edge_index = torch.stack([src_pos[keep], dst_local])
    return subset, edge_index


def episode_input(graph: FewShotGraph, nodes: Tensor, hops: int | None) -> GraphInput:
    """Build the backbone input for an episode's nodes.

    Args:
        graph: The dataset graph.
        nodes: ``LongTensor[n]`` global node ids (support then query, in the order the caller wants features).
        hops: None for the full graph; ``k`` for the k-hop subgraph around ``nodes`` (use the GNN's depth).

    Returns:
        A :class:`GraphInput` whose ``nodes`` index into its own ``x`` (remapped for subgraphs). The cache holds
        ``"subset"``: the global ids of the subgraph's nodes (or None for the full graph). For the full graph the
        cache is ``graph.full_graph_cache``, shared by all episodes, so backbones can keep precomputations there;
        a subgraph gets a fresh cache.

    Raises:
        ConfigError: Negative ``hops`` or node ids out of range.
    """
    nodes = torch.as_tensor(nodes, dtype=torch.long).view(-1)
    if nodes.numel() and (int(nodes.min()) < 0 or int(nodes.max()) >= graph.num_nodes):
        raise ConfigError(
            f"episode node ids must lie in [0, {graph.num_nodes}); got min {int(nodes.min())}, "
            f"max {int(nodes.max())}. Draw episodes from this graph's labels"
        )
    if hops is None:
        graph.full_graph_cache.setdefault("subset", None)
        return GraphInput(x=graph.x, edge_index=graph.edge_index, nodes=nodes, cache=graph.full_graph_cache)
    if not isinstance(hops, int) or hops < 0:
        raise ConfigError(f"hops={hops!r} is invalid; use None (full graph) or an integer >= 0")
    subset, edge_index = k_hop_nodes(graph, nodes, hops)
    local_nodes = torch.searchsorted(subset, nodes)
    return GraphInput(
        x=slice_rows(graph.x, subset), edge_index=edge_index, nodes=local_nodes, cache={"subset": subset}
    )


__all__ = ["episode_input", "k_hop_nodes"]
