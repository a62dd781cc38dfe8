"""Reference implementations the benchmark compares cmlgraph against, kept small and honest.

Both run the same model and loss as cmlgraph's graph cases (2-layer GCN of width 64 without a last activation,
linear meta-learner head θ, linear co-learner φ, cross-entropy, second-order MAML with S inner steps on ψ and θ,
CML term γ·L(c_φ(g_ψ'(Q))) with the unadapted φ, Adam) and draw their tasks from the same sampler:

* **(a) published-code style**: the way MAML/Meta-GNN code is usually written. A Python loop over the tasks;
  at every inner step the *whole graph* goes through the GNN; node features are *dense* (``x.to_dense()``);
  the layers are plain PyG ``GCNConv(cached=False)``, so the symmetric normalisation (self-loops, degrees) is
  recomputed on every call; second order through ``torch.autograd.grad(create_graph=True)``; one backward per
  task (learn2learn style, which keeps only one task's graph alive).
* **(b) sparse per-task loop**: the same loop, but the extractor is cmlgraph's :class:`GNNBackbone` on the full
  graph: sparse features kept sparse, the normalised adjacency built once and cached.

:func:`reference_task_loss` is shared by both and is checked against cmlgraph's ``outer_objective`` in the tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch_geometric.nn import GCNConv

from cmlgraph.backbones.gnn import GNNBackbone
from cmlgraph.backbones.pyg_templates import remove_template_files
from cmlgraph.bench.workloads import GRAPH_SETTING, Workload
from cmlgraph.graphs import FewShotGraph, GraphInput, NodeEpisode

#: ``extract(params, nodes)``: features of ``nodes`` under the extractor weights ``params`` (names without prefix).
Extract = Callable[[dict[str, Tensor], Tensor], Tensor]


class PlainGCN(nn.Module):
    """Published-code GCN: PyG ``GCNConv`` layers with ``cached=False``, ReLU between layers, none after the last.

    Parameter names equal those of cmlgraph's GCN backbone (``convs.{i}.lin.weight``, ``convs.{i}.bias``).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([GCNConv(in_dim if i == 0 else hidden, hidden, cached=False)
                                    for i in range(layers)])
        remove_template_files()  # PyG's generated propagate module: imported, no longer needed on disk

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Features of every node."""
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x


class ReferenceModel(nn.Module):
    """ψ, θ and φ with cmlgraph's parameter names (``extractor.*``, ``head.0.*``, ``co.0.*``)."""

    def __init__(self, extractor: nn.Module, hidden: int, ways: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.head = nn.Sequential(nn.Linear(hidden, ways))
        self.co = nn.Sequential(nn.Linear(hidden, ways))


def _strip(params: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def reference_task_loss(model: ReferenceModel, extract: Extract, ep: NodeEpisode, steps: int, lr: float,
                        gamma: float, cml: bool = True) -> Tensor:
    """One task's outer loss: S second-order inner steps on (ψ, θ), then L(h_θ'(g_ψ'(Q))) + γ L(c_φ(g_ψ'(Q)))."""
    params = dict(model.named_parameters())
    fast = {k: v for k, v in params.items() if not k.startswith("co.")}
    for _ in range(steps):
        feats = extract(_strip(fast, "extractor."), ep.support)
        loss = F.cross_entropy(F.linear(feats, fast["head.0.weight"], fast["head.0.bias"]), ep.support_y)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
        fast = {k: v - lr * g for (k, v), g in zip(fast.items(), grads, strict=True)}
    feats = extract(_strip(fast, "extractor."), ep.query)
    loss = F.cross_entropy(F.linear(feats, fast["head.0.weight"], fast["head.0.bias"]), ep.query_y)
    if cml:
        loss = loss + gamma * F.cross_entropy(F.linear(feats, params["co.0.weight"], params["co.0.bias"]),
                                              ep.query_y)
    return loss


def plain_extract(model: ReferenceModel, x: Tensor, edge_index: Tensor) -> Extract:
    """Reference (a): the whole graph through the plain GCN, then the rows of the episode's nodes."""
    return lambda p, nodes: functional_call(model.extractor, p, (x, edge_index))[nodes]


def sparse_extract(model: ReferenceModel, x: Tensor, edge_index: Tensor) -> Extract:
    """Reference (b): cmlgraph's GCN on the full graph, its adjacency and sparse features cached across calls."""
    cache: dict = {}
    return lambda p, nodes: functional_call(model.extractor, p, (GraphInput(x, edge_index, nodes, cache),))


def reference_workload(graph: FewShotGraph, kind: str, device: str, sampler_seed: int = 0) -> Workload:
    """Reference (a) (``kind="a"``) or (b) (``kind="b"``) as one meta-iteration per call of ``step``."""
    from cmlgraph.domains.graph import GraphDomain

    s = GRAPH_SETTING
    # The domain only supplies the episode sampler (the same tasks as cmlgraph's cases).
    domain = GraphDomain(graph, s["ways"], s["shots"], s["queries"], hidden=s["hidden"], layers=s["layers"],
                         subgraph="full")
    torch.manual_seed(0)
    edge_index = graph.edge_index.to(device)
    if kind == "a":
        x = (graph.x.to_dense() if graph.x.layout != torch.strided else graph.x).to(device)
        model = ReferenceModel(PlainGCN(graph.num_features, s["hidden"], s["layers"]), s["hidden"], s["ways"])
        extract = plain_extract(model.to(device), x, edge_index)
    elif kind == "b":
        x = graph.x.to(device)
        backbone = GNNBackbone("gcn", graph.num_features, hidden=s["hidden"], layers=s["layers"])
        model = ReferenceModel(backbone, s["hidden"], s["ways"])
        extract = sparse_extract(model.to(device), x, edge_index)
    else:
        raise ValueError(f"unknown reference {kind!r}; use 'a' (published-code style) or 'b' (sparse loop)")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(sampler_seed)
    batch = int(s["meta_batch"])

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        for raw in domain.sample("train", batch, generator):
            ep = NodeEpisode(raw.support.to(device), raw.support_y.to(device), raw.query.to(device),
                             raw.query_y.to(device), raw.classes)
            loss = reference_task_loss(model, extract, ep, int(s["inner_steps"]), float(s["inner_lr"]), 1.0)
            (loss / batch).backward()
        optimizer.step()

    saved = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("co."))
    return Workload(step, batch, {"saved_params": int(saved), "mode": "full"})


__all__ = ["PlainGCN", "ReferenceModel", "plain_extract", "reference_task_loss", "reference_workload",
           "sparse_extract"]
