"""Tests of the GNN backbones on a tiny literal graph: PyG equivalence, sparse features, functional calls,
second-order meta-gradients (autograd vs finite differences), caching and k-hop subgraph exactness."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch_geometric.nn import GATConv, GCNConv, GINConv, SAGEConv, SGConv
from torch_geometric.utils import k_hop_subgraph

import cmlgraph.backbones.gnn as gnn_module
from cmlgraph.backbones.gnn import GNN_REGISTRY, GNNBackbone, gnn_hops
from cmlgraph.errors import ConfigError
from cmlgraph.graphs.types import GraphInput

KINDS = ["gcn", "sgc", "sage", "gat", "gin"]
IN_DIM, HIDDEN, HEADS = 6, 8, 2

# A path 0-1-2-3 (undirected), a directed edge 3->4, a path 4-5-6, a self-loop on 2, an isolated node 7,
# and a tail 6-8-9 so that 2-hop neighbourhoods of node 4 have outer nodes with more in-neighbours.
_UNDIRECTED = [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 8), (8, 9)]
EDGE_INDEX = torch.tensor(
    [
        [a for a, b in _UNDIRECTED] + [b for a, b in _UNDIRECTED] + [3, 2],
        [b for a, b in _UNDIRECTED] + [a for a, b in _UNDIRECTED] + [4, 2],
    ]
)
NUM_NODES = 10
NODES = torch.tensor([0, 4, 7, 5])


def features(dtype: torch.dtype = torch.float32) -> Tensor:
    """Bag-of-words-like features: about half the entries are zero."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(NUM_NODES, IN_DIM, generator=g, dtype=dtype)
    return x * (torch.rand(NUM_NODES, IN_DIM, generator=g) < 0.5)


def graph(layout: str = "dense", nodes: Tensor = NODES, dtype: torch.dtype = torch.float32) -> GraphInput:
    x = features(dtype)
    if layout == "coo":
        x = x.to_sparse_coo()
    elif layout == "csr":
        x = x.to_sparse_csr()
    return GraphInput(x=x, edge_index=EDGE_INDEX, nodes=nodes)


def backbone(kind: str, seed: int = 0, **kwargs) -> GNNBackbone:
    torch.manual_seed(seed)
    return GNNBackbone(kind, IN_DIM, hidden=HIDDEN, layers=2, heads=HEADS, **kwargs).eval()


def params_of(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}


def task_loss(model: nn.Module, params: dict[str, Tensor], inputs: GraphInput, target: int) -> Tensor:
    """A fixed random linear head and cross-entropy; ``target`` picks a different label pattern."""
    feats = functional_call(model, params, (inputs,))
    g = torch.Generator().manual_seed(1)
    head = torch.randn(HIDDEN, 3, generator=g, dtype=feats.dtype)
    labels = (torch.arange(len(inputs.nodes)) + target) % 3
    return F.cross_entropy(feats @ head, labels)


def meta_loss(model: nn.Module, params: dict[str, Tensor], inputs: GraphInput) -> Tensor:
    """One second-order inner step on a support loss, then a query loss on the adapted weights."""
    names = list(params)
    grads = torch.autograd.grad(task_loss(model, params, inputs, 0), [params[k] for k in names], create_graph=True)
    adapted = {k: params[k] - 0.1 * g for k, g in zip(names, grads, strict=True)}
    return task_loss(model, adapted, inputs, 1)


# --- reference: plain PyG layers called the usual way (edge_index, their own normalisation) ----------------


def reference(model: GNNBackbone, inputs: GraphInput) -> Tensor:
    kind, x, ei = model.kind, inputs.x, inputs.edge_index
    if kind == "sgc":
        ref = SGConv(IN_DIM, HIDDEN, K=model.hops)
        ref.load_state_dict(model.convs[0].state_dict())
        return ref(x, ei)[inputs.nodes]
    h = x
    for i, conv in enumerate(model.convs):
        d = IN_DIM if i == 0 else HIDDEN
        if kind == "gcn":
            ref: nn.Module = GCNConv(d, HIDDEN)
        elif kind == "sage":
            ref = SAGEConv(d, HIDDEN, aggr="mean")
        elif kind == "gat":
            ref = GATConv(d, HIDDEN // HEADS, heads=HEADS)
        else:
            ref = GINConv(nn.Sequential(nn.Linear(d, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN)))
        ref.load_state_dict(conv.state_dict())
        h = ref(h, ei)
        if i < len(model.convs) - 1:
            h = h.relu()
    return h[inputs.nodes]


@pytest.mark.parametrize("kind", KINDS)
def test_matches_plain_pyg_layers(kind: str) -> None:
    model = backbone(kind)
    assert torch.allclose(model(graph()), reference(model, graph()), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_shape_and_sparse_features_match_dense(kind: str) -> None:
    model = backbone(kind)
    dense = model(graph("dense"))
    assert dense.shape == (len(NODES), model.feature_dim) == (4, HIDDEN)
    for layout in ("coo", "csr"):
        assert torch.allclose(model(graph(layout)), dense, atol=1e-6), layout


@pytest.mark.parametrize("kind", KINDS)
def test_functional_call_equals_loaded_copy(kind: str) -> None:
    model = backbone(kind)
    g = torch.Generator().manual_seed(2)
    perturbed = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in model.named_parameters()}
    out = functional_call(model, perturbed, (graph("coo"),))
    assert not torch.allclose(out, model(graph("coo")))
    twin = copy.deepcopy(model)
    twin.load_state_dict(perturbed, strict=False)
    assert torch.allclose(out, twin(graph("coo")), atol=1e-6)


@pytest.mark.parametrize("layout", ["dense", "coo", "csr"])
@pytest.mark.parametrize("kind", KINDS)
def test_second_order_meta_gradient_reaches_every_parameter(kind: str, layout: str) -> None:
    model = backbone(kind)
    params = params_of(model)
    grads = torch.autograd.grad(meta_loss(model, params, graph(layout)), list(params.values()))
    for name, g in zip(params, grads, strict=True):
        assert torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_second_order_meta_gradient_matches_finite_differences(kind: str) -> None:
    model = backbone(kind).double()
    inputs = graph("coo", dtype=torch.float64)
    params = params_of(model)
    grads = torch.autograd.grad(meta_loss(model, params, inputs), list(params.values()))
    g = torch.Generator().manual_seed(3)
    direction = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
    analytic = sum((gr * direction[k]).sum() for k, gr in zip(params, grads, strict=True))
    eps = 1e-5

    def at(sign: float) -> float:
        shifted = {k: (v + sign * eps * direction[k]).detach().requires_grad_(True) for k, v in params.items()}
        return float(meta_loss(model, shifted, inputs).detach())

    numeric = (at(1.0) - at(-1.0)) / (2 * eps)
    assert abs(float(analytic) - numeric) < 1e-6 * max(1.0, abs(numeric))


@pytest.mark.parametrize("kind", KINDS)
def test_graph_precomputations_are_cached_and_reused(kind: str) -> None:
    model = backbone(kind)
    inputs = graph("coo")
    first = model(inputs)
    entries = {k: v for k, v in inputs.cache.items() if k.startswith("gnn/")}
    assert entries
    second = model(inputs)
    assert torch.equal(first, second)
    assert all(inputs.cache[k] is v for k, v in entries.items())
    if kind == "sgc":
        assert inputs.cache["gnn/sgc/x/K=2"] is not None  # Â^K X precomputed, SGC is one linear layer
    else:
        # Sparse features and adjacencies carry a precomputed transpose for the backward passes.
        assert hasattr(inputs.cache["gnn/x/sparse"], "_cmlgraph_transpose")


@pytest.mark.parametrize("layout", ["dense", "coo"])
@pytest.mark.parametrize("kind", KINDS)
def test_k_hop_subgraph_reproduces_full_graph(kind: str, layout: str) -> None:
    model = backbone(kind)
    full = model(graph(layout))
    exact = gnn_hops(model, exact=True)
    assert exact == gnn_hops(model) + (kind in ("gcn", "sgc"))
    for k in (exact, exact + 1):
        subset, sub_ei, mapping, _ = k_hop_subgraph(NODES, k, EDGE_INDEX, relabel_nodes=True, num_nodes=NUM_NODES)
        x = graph(layout).x
        x = torch.index_select(x, 0, subset) if layout == "coo" else x[subset]
        sub = model(GraphInput(x=x, edge_index=sub_ei, nodes=mapping))
        assert torch.allclose(sub, full, atol=1e-5), k


def test_gcn_subgraph_of_only_message_passing_depth_is_approximate() -> None:
    """Why ``exact=True`` adds a hop for GCN: boundary nodes lose in-edges, so their degree changes."""
    model = backbone("gcn")
    k = gnn_hops(model)
    subset, sub_ei, mapping, _ = k_hop_subgraph(NODES, k, EDGE_INDEX, relabel_nodes=True, num_nodes=NUM_NODES)
    sub = model(GraphInput(x=features()[subset], edge_index=sub_ei, nodes=mapping))
    assert not torch.allclose(sub, model(graph()), atol=1e-5)


def test_sgc_sparse_falls_back_to_projecting_first_when_fill_in_is_large(monkeypatch) -> None:
    calls = []
    original = gnn_module.propagate_sparse
    monkeypatch.setattr(gnn_module, "propagate_sparse", lambda *a, **k: calls.append(1) or original(*a, **k))
    model = backbone("sgc", sgc_max_fill=0.0)
    inputs = graph("coo")
    out = model(inputs)
    assert inputs.cache["gnn/sgc/x/K=2"] is None
    assert torch.equal(model(inputs), out)
    assert len(calls) == 1  # the "fill-in too large" decision is cached too
    assert torch.allclose(out, model(graph("dense")), atol=1e-6)
    params = params_of(model)
    grads = torch.autograd.grad(meta_loss(model, params, inputs), list(params.values()))
    assert all(g.abs().sum() > 0 for g in grads)


def test_sgc_with_trainable_features_is_not_cached_and_differentiates_the_features() -> None:
    model = backbone("sgc")
    x = features().requires_grad_(True)
    inputs = GraphInput(x=x, edge_index=EDGE_INDEX, nodes=NODES)
    (gx,) = torch.autograd.grad(model(inputs).sum(), x)
    assert "gnn/sgc/x/K=2" not in inputs.cache
    assert gx.abs().sum() > 0


@pytest.mark.parametrize("layout", ["dense", "coo"])
@pytest.mark.parametrize("kind", KINDS)
def test_dropout_only_in_training_mode(kind: str, layout: str) -> None:
    model = backbone(kind, dropout=0.5)
    evaluated = model(graph(layout))
    assert torch.equal(evaluated, model(graph(layout)))
    torch.manual_seed(4)
    assert not torch.allclose(model.train()(graph(layout)), evaluated)


def test_hops_follow_layers() -> None:
    assert gnn_hops(GNNBackbone("gcn", 3, hidden=4, layers=3)) == 3
    assert gnn_hops(GNNBackbone("sgc", 3, hidden=4, layers=2)) == 2
    assert gnn_hops(GNNBackbone("sgc", 3, hidden=4, layers=2), exact=True) == 3
    assert gnn_hops(GNNBackbone("gin", 3, hidden=4, layers=1), exact=True) == 1
    with pytest.raises(ConfigError, match="needs a GNNBackbone, got Linear"):
        gnn_hops(nn.Linear(2, 2))


def test_last_activation_option() -> None:
    plain, activated = backbone("gcn"), backbone("gcn", last_activation=True)
    assert torch.allclose(activated(graph()), plain(graph()).relu())


def test_unknown_kind_lists_valid_names() -> None:
    assert sorted(GNN_REGISTRY) == sorted(KINDS)
    with pytest.raises(ConfigError, match=r"unknown GNN kind 'gcnn'; valid kinds: gat, gcn, gin, sage, sgc"):
        GNNBackbone("gcnn", IN_DIM)


def test_gat_heads_must_divide_hidden() -> None:
    with pytest.raises(ConfigError, match="heads=3 must be >= 1 and divide hidden=8"):
        GNNBackbone("gat", IN_DIM, hidden=8, heads=3)
