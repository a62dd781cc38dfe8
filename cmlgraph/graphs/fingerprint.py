"""A graph's content fingerprint: whether a graph given again (resuming a run on an in-memory graph) is the run's.

Why: a ``cmlgraph.fit`` run on a user's FewShotGraph does not store the graph, so ``cmlgraph.resume(run_dir,
graph=...)`` must be given it again. A graph of the same name whose labels differ is caught by the run's saved test
tasks, but one whose edges or features differ was accepted and trained on silently (a new-user trial: a resumed run
finished at chance on constant features). The fingerprint covers the nodes, edges, features, labels and class split,
independent of the features' layout (dense, sparse COO or CSR) and of the edges' order, so the same graph saved with
``graph.save`` and loaded again matches.
"""

from __future__ import annotations

import hashlib

import torch

from cmlgraph.graphs.fewshot_graph import FewShotGraph


def graph_fingerprint(graph: FewShotGraph) -> str:
    """``sha256:<hex>`` over ``graph``'s node count, edges (sorted), features (non-zeros as float64), labels and
    split.

    Args:
        graph: The graph (as the run's domain holds it, after its settings were applied).

    Returns:
        The fingerprint; equal for equal content, whatever the feature layout or edge order.
    """
    h = hashlib.sha256()
    n = int(graph.num_nodes)
    h.update(f"nodes={n};features={int(graph.x.shape[1])};".encode())
    src, dst = graph.edge_index[0].long().cpu(), graph.edge_index[1].long().cpu()
    keys = torch.sort(src * n + dst).values
    h.update(keys.numpy().tobytes())
    x = graph.x.cpu()
    coo = (x.to_sparse_coo() if x.layout != torch.strided else x.to_sparse()).coalesce()
    h.update(coo.indices().long().numpy().tobytes())
    h.update(coo.values().double().numpy().tobytes())
    h.update(graph.y.long().cpu().numpy().tobytes())
    h.update(repr(sorted((k, sorted(int(c) for c in v)) for k, v in graph.splits.items())).encode())
    return f"sha256:{h.hexdigest()}"


__all__ = ["graph_fingerprint"]
