"""GNN feature extractors ψ for few-shot node classification: GCN, SGC, GraphSAGE, GAT and GIN from PyG.

Why this shape: the CML inner loop evaluates the backbone through ``torch.func.functional_call`` with
adapted, non-leaf weights and differentiates twice through it, several times per task. So the modules hold
weights only; everything that depends on the graph alone (normalised adjacency, SGC's propagated features)
lives in ``GraphInput.cache`` and is built once per graph; and sparse node features (bag-of-words) are
multiplied by the first layer's weight with ``torch.sparse.mm`` and never densified. Sparse features and
adjacencies are cached as CSR matrices together with their transposes, which the backward (and double
backward) passes need; torch would otherwise rebuild and re-sort them on every backward.

Layer semantics (PyG's convs, exact): ``layers`` message-passing layers of width ``hidden``; dropout on the
input of every layer (training mode only; sparse inputs drop stored values); ReLU between layers; **no
activation after the last layer** by default (``last_activation=True`` adds one), as in PyG's ``BasicGNN``.
SGC is one linear layer on ``Â^K X`` with ``K = layers``. GAT concatenates ``heads`` heads of width
``hidden // heads``. GIN uses the MLP ``Linear → ReLU → Linear`` in every layer. SAGE uses mean aggregation
and a root weight.

The first layer multiplies the features by its weight before aggregating (``Â (X W)`` rather than
``(Â X) W``; same values, by linearity), which is what lets a sparse ``X`` stay sparse and is cheaper when
``in_dim > hidden``.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, GINConv, SAGEConv, SGConv
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.utils import softmax as pyg_softmax

from cmlgraph.backbones.base import Backbone
from cmlgraph.backbones.gnn_ops import (
    FastSparseAggregation,
    SparseLinear,
    adjacency_rows,
    cached,
    feature_dropout,
    gcn_adj,
    is_sparse,
    mean_adj,
    propagate_sparse,
    select_rows,
    self_loop_edge_index,
    sparse_aware_linear,
    sparse_features,
    sparse_matmul,
    sparse_nnz,
    sum_adj,
    task_feature_dropout,
    with_values,
)
from cmlgraph.backbones.gnn_plan import (
    BATCH_LAYOUT_TASKS,
    Plan,
    TaskLayout,
    _block_diag,
    _padded_rows,
    _segments,
    _to_csr,
    build_plan,
    complete_plan,
    host_prepare,
    layout_batches,
    plan_to,
    prefix_rows,
    task_linear,
)
from cmlgraph.backbones.plan_static import PlanReads, StaticTaskLayout
from cmlgraph.backbones.pyg_templates import remove_template_files
from cmlgraph.core.dropout import draw_from, dropout_scale
from cmlgraph.core.streams import TaskStreams, current_streams, group_tasks
from cmlgraph.errors import CmlgraphError, ConfigError
from cmlgraph.graphs.types import GraphBatch, GraphInput

#: Kinds whose whole-graph ("full" mode) tasks run as one pass over the graph (SGC has its own batched path; GAT's
#: attention, which depends on each task's weights, is computed per edge for every task at once).
WHOLE_GRAPH_KINDS = ("gcn", "sage", "gin", "gat")
#: Values of one layer's node-major activations (``[N, T, hidden]``) a whole-graph task batch holds at most; more
#: tasks run in consecutive chunks (64M values: 256 MiB in float32).
WHOLE_GRAPH_VALUES = 1 << 26

#: Kinds with a computation-tree path (``GraphInput.local`` and batched tasks), and the aggregation they read.
PLAN_AGGREGATION = {"gcn": "gcn", "sgc": "gcn", "sage": "mean", "gin": "sum"}
#: Where a CUDA graph's fixed input holds its padded layout (:mod:`cmlgraph.train.cuda_graph_plans`): on a single
#: task's input, and on a stacked batch's first input as ``(ids of the batch's inputs, layout)``.
STATIC_LAYOUT_KEY = "_static_layout"
STATIC_BATCH_KEY = "_static_batch_layout"


def plan_features(inputs: GraphInput) -> Tensor:
    """The features a plan's products read: ``inputs.x``, or one coalesced COO copy of it per graph when sparse."""
    if is_sparse(inputs.x):
        return cached(inputs, "x/coo", lambda: inputs.x.to_sparse_coo().coalesce())
    return inputs.x


def prepare_plan(inputs: GraphInput, host: GraphInput, kind: str, hops: int, complete: bool = False) -> None:
    """Build the computation tree of ``inputs.nodes`` on the host and attach it to ``inputs`` (issue 18 item 2).

    The plan's sizes need host reads (distinct node levels, CSR row expansion): from CPU tensors they are free,
    from device tensors each is a host-device sync on the first forward of every episode. So the plan is built
    from ``host`` (the same graph and nodes on the CPU, whose cache keeps the CPU adjacency) and its index tensors
    are copied to ``inputs``' device pinned and ``non_blocking`` (:func:`cmlgraph.backbones.gnn_plan.plan_to`);
    :meth:`GNNBackbone.plan` then finds it. On the CPU ``host`` may be ``inputs`` itself: nothing is copied and
    the plan is the one the backbone would build.

    Args:
        inputs: The episode's computation-tree input on the run's device.
        host: The same graph and nodes with CPU tensors.
        kind: GNN kind with a plan path (``PLAN_AGGREGATION``).
        hops: The GNN's depth (its ``hops``).
        complete: Also list the input level (what input dropout of GCN, SAGE and GIN reads in training).
    """
    features = plan_features(inputs)
    attach_plan(inputs, kind, hops, host_plan(host, kind, hops, complete, is_sparse(features)))


def host_plan(host: GraphInput, kind: str, hops: int, complete: bool, run_sparse: bool) -> Plan:
    """The host part of :func:`prepare_plan`: the plan of ``host.nodes`` built from CPU tensors, with the CSR
    aggregations and (``run_sparse``) the sparse constants the device pass reads built too. Its ``x`` is the host's
    features; :func:`attach_plan` gives it the run's. Draws nothing and reads only ``host`` (and its cache): a
    prefetch build process runs it on its own copy of the graph (:class:`cmlgraph.domains.tree_builds.
    TreePlanBuilder`).

    Args:
        host: The graph and nodes as CPU tensors (its cache keeps the CPU adjacency).
        kind: GNN kind with a plan path (``PLAN_AGGREGATION``).
        hops: The GNN's depth.
        complete: Also list the input level (input dropout of GCN, SAGE and GIN in training).
        run_sparse: Whether the run's own features (the device's) are sparse: then the constants are built here.
    """
    features = plan_features(host)
    plan = build_plan(adjacency_rows(host, PLAN_AGGREGATION[kind]), features, host.nodes, hops)
    if complete:
        complete_plan(plan)
    # the aggregations as CSR and (sparse features) the constants the pass reads, built here, not on the device
    constants = ("sgc",) if kind == "sgc" else ("z", "r") if kind in ("sage", "gin") else ("z",)
    layers = () if kind == "sgc" else tuple(range(0 if complete else 1, hops))
    return host_prepare(plan, features, constants + (("x",) if complete else ()), layers, run_sparse=run_sparse)


def attach_plan(inputs: GraphInput, kind: str, hops: int, plan: Plan, moved: bool = False) -> None:
    """Attach a host-built plan (:func:`host_plan`) to ``inputs`` where :meth:`GNNBackbone.plan` finds it, moved to
    their device and reading their features (:func:`cmlgraph.backbones.gnn_plan.plan_to`); ``moved``: it is on
    their device, reading their features, already (a build process's, :mod:`cmlgraph.backbones.plan_payload`)."""
    inputs.__dict__.setdefault("_plans", {})[(PLAN_AGGREGATION[kind], hops)] = \
        plan if moved else plan_to(plan, plan_features(inputs))


class _GCNConv(FastSparseAggregation, GCNConv):
    """PyG's GCNConv aggregating with a cached adjacency transpose (see ``FastSparseAggregation``)."""


class _SGConv(FastSparseAggregation, SGConv):
    """PyG's SGConv aggregating with a cached adjacency transpose."""


class _SAGEConv(FastSparseAggregation, SAGEConv):
    """PyG's SAGEConv aggregating with a cached adjacency transpose."""


class _GINConv(FastSparseAggregation, GINConv):
    """PyG's GINConv aggregating with a cached adjacency transpose."""


@dataclass(frozen=True)
class GNNSpec:
    """What a CLI name stands for.

    Attributes:
        conv: The PyG convolution the layers are built from.
        description: One line for ``--help`` and error messages.
        degree_normalised: Whether the aggregation weights read the degree of the *source* node
            (symmetric normalisation), so a k-hop subgraph needs one extra hop to reproduce the full-graph
            output exactly.
    """

    conv: type[MessagePassing]
    description: str
    degree_normalised: bool = False


GNN_REGISTRY: dict[str, GNNSpec] = {
    "gcn": GNNSpec(GCNConv, "graph convolution (Kipf & Welling), symmetric normalisation", True),
    "sgc": GNNSpec(SGConv, "simplified graph convolution: one linear layer on Â^K X (K = layers)", True),
    "sage": GNNSpec(SAGEConv, "GraphSAGE with mean aggregation and a root weight"),
    "gat": GNNSpec(GATConv, "graph attention, heads concatenated to width hidden"),
    "gin": GNNSpec(GINConv, "graph isomorphism network, 2-layer MLP per layer"),
}


def _check_kind(kind: str) -> GNNSpec:
    if kind not in GNN_REGISTRY:
        raise ConfigError(f"unknown GNN kind {kind!r}; valid kinds: {', '.join(sorted(GNN_REGISTRY))}")
    return GNN_REGISTRY[kind]


class GNNBackbone(Backbone):
    """A stack of PyG message-passing layers returning the features of ``inputs.nodes``.

    Args:
        kind: One of ``GNN_REGISTRY`` (``gcn``, ``sgc``, ``sage``, ``gat``, ``gin``).
        in_dim: Node feature dimension F.
        hidden: Width of every layer; also ``feature_dim``.
        layers: Number of message-passing layers (SGC: the number of propagation hops K).
        dropout: Dropout on every layer's input, training mode only.
        heads: GAT attention heads; must divide ``hidden``.
        attn_dropout: GAT dropout on the attention coefficients.
        last_activation: Apply ReLU after the last layer too.
        train_eps: GIN: learn the ε of ``(1 + ε) x_i``.
        sgc_max_fill: SGC with sparse features: precompute a sparse ``Â^K X`` only while it holds at most this
            many times the stored values of ``X``; otherwise project first and propagate the dense hidden.
        bias: SGC: whether its linear layer has a bias. A PCA-initialised SGC (``model.init pca``) has none: on
            L2-normalised features of small norm the bias's inner-loop gradient is the reciprocal of that norm, so
            one inner step moved every feature by the same large vector (Cora 2-way: validation 0.89 → 0.52).

    Raises:
        ConfigError: For an unknown kind or an invalid size.
    """

    #: Draws its feature-dropout masks from each run's own stream inside a fused meta-step of several runs
    #: (:mod:`cmlgraph.core.streams`); GAT's attention dropout (PyG's) still draws from torch's global RNG, which
    #: the fused step detects and then steps those runs one by one.
    random_streams = True

    def __init__(
        self,
        kind: str,
        in_dim: int,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.0,
        heads: int = 4,
        attn_dropout: float = 0.0,
        last_activation: bool = False,
        train_eps: bool = False,
        sgc_max_fill: float = 16.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.spec = _check_kind(kind)
        if in_dim < 1 or hidden < 1 or layers < 1:
            raise ConfigError(f"GNN sizes must be positive, got in_dim={in_dim}, hidden={hidden}, layers={layers}")
        if not 0.0 <= dropout < 1.0 or not 0.0 <= attn_dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got dropout={dropout}, attn_dropout={attn_dropout}")
        if kind == "gat" and (heads < 1 or hidden % heads != 0):
            raise ConfigError(f"GAT heads={heads} must be >= 1 and divide hidden={hidden}; change either")
        self.kind = kind
        self.in_dim = in_dim
        self.hidden = hidden
        self.num_layers = layers
        self.dropout = dropout
        self.heads = heads
        self.last_activation = last_activation
        self.sgc_max_fill = sgc_max_fill
        self.feature_dim = hidden
        self.hops = layers
        if kind == "sgc":
            conv = _SGConv(in_dim, hidden, K=layers, cached=False, add_self_loops=True, bias=bias)
            conv.lin = SparseLinear.from_linear(conv.lin)
            self.convs = nn.ModuleList([conv])
            remove_template_files()  # PyG's generated propagate modules: imported, no longer needed on disk
            return
        convs: list[MessagePassing] = []
        for i in range(layers):
            d = in_dim if i == 0 else hidden
            if kind == "gcn":
                conv = _GCNConv(d, hidden, cached=False, normalize=False)
                if i == 0:
                    conv.lin = SparseLinear.from_linear(conv.lin)
            elif kind == "sage":
                # Sum over the row-normalised adjacency == mean aggregation (see gnn_ops).
                conv = _SAGEConv(d, hidden, aggr="sum")
            elif kind == "gat":
                conv = GATConv(d, hidden // heads, heads=heads, concat=True, dropout=attn_dropout, add_self_loops=False)
                if i == 0:
                    conv.lin = SparseLinear.from_linear(conv.lin)
            else:
                mlp = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
                conv = _GINConv(mlp, eps=0.0, train_eps=train_eps)
            convs.append(conv)
        self.convs = nn.ModuleList(convs)
        remove_template_files()

    def forward(self, inputs: GraphInput) -> Tensor:
        """Features ``Tensor[len(inputs.nodes), hidden]`` of the requested nodes."""
        if inputs.local and self.supports_plan:
            weights = {k: v.unsqueeze(0) for k, v in self._weights().items()}
            lay = inputs.__dict__.get(STATIC_LAYOUT_KEY) or TaskLayout([self.plan(inputs)])
            return self._forward_plan(weights, lay)[0]
        if self.kind == "sgc":
            return self._forward_sgc(inputs)
        graph = self._graph(inputs)
        h = sparse_features(inputs)
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            h = feature_dropout(h, self.dropout, self.training)
            h = self._first_layer(conv, h, graph) if i == 0 else conv(h, graph)
            if i < last or self.last_activation:
                h = F.relu(h)
        return h[inputs.nodes]

    @property
    def supports_plan(self) -> bool:
        """Whether this kind runs computation trees (``GraphInput.local``) and batched tasks."""
        return self.kind in PLAN_AGGREGATION

    def plan(self, inputs: GraphInput) -> Plan:
        """The exact computation tree of ``inputs.nodes`` for this GNN, built once per input and kept on it.

        An input whose plan was prepared on the host (:func:`prepare_plan`, the domain's ``materialize``) has it
        already; otherwise it is built here from the input's own (device) tensors.
        """
        store = inputs.__dict__.setdefault("_plans", {})
        key = (PLAN_AGGREGATION[self.kind], self.hops)
        if key not in store:
            adj = adjacency_rows(inputs, PLAN_AGGREGATION[self.kind])
            store[key] = build_plan(adj, plan_features(inputs), inputs.nodes.to(inputs.x.device), self.hops)
        return store[key]

    def pass_values(self, inputs: GraphInput) -> int | None:
        """Activation values of one task's pass over a whole graph or a k-hop subgraph: per layer ``hidden`` values a
        node, and for GAT ``hidden`` values an edge (its messages); in training with dropout also the task's masked
        dense features (``N × F``, kept for the first layer's weight gradient: on Amazon-Computers 767 values a
        node against the layers' 128); ``None`` for computation trees and SGC's gathered rows (a task's own nodes
        only)."""
        if not isinstance(inputs, GraphInput) or inputs.local or self.kind == "sgc":
            return None
        edges = int(self_loop_edge_index(inputs).shape[1]) if self.kind == "gat" else 0
        masked = int(inputs.x.numel()) if self.training and self.dropout > 0 and not is_sparse(inputs.x) else 0
        return len(self.convs) * self.hidden * (int(inputs.num_nodes) + edges) + masked

    def forward_tasks(self, params: dict[str, Tensor], batch: GraphBatch) -> Tensor:
        """Features ``Tensor[T, n, hidden]`` of ``T`` tasks' nodes, with per-task weights ``params[name][t]``.

        Computation-tree inputs of the plan kinds run as one block-diagonal pass; SGC's whole-graph inputs as one
        gather of the tasks' propagated rows and one batched product; GCN's, SAGE's, GIN's and GAT's whole-graph
        inputs as one pass over the graph for all tasks (:meth:`_whole_graph_tasks`); GAT's k-hop subgraphs as one
        pass over their disjoint union (:meth:`_subgraph_tasks`). Feature dropout in training draws each task's
        masks in the order its own pass would (:meth:`_task_scales`), so the batched passes equal the task loop
        with dropout too (whole-graph passes with dropout batch where :func:`dropout_passes_batch` says so: not on
        a CPU); anything else (GAT's attention dropout, drawn inside PyG's conv) runs task by task with the same
        results.
        """
        items = batch.items
        streams = current_streams() if self.training and self._draws_dropout else None
        if streams is not None and sum(streams.sizes) != len(items):
            raise CmlgraphError(f"the fused runs have {sum(streams.sizes)} tasks but this pass has {len(items)}")
        if self.kind == "sgc" and not any(g.local for g in items) and all(g.x is items[0].x for g in items):
            rows = batch.memo.get("sgc/rows")
            if rows is None:
                rows = self._sgc_task_rows(items)
                if rows is not None:
                    batch.memo["sgc/rows"] = rows
            if rows is not None:
                t, n = len(items), int(items[0].nodes.numel())
                z = self._task_dropout(rows, t, streams, lambda a, b: n)
                h = task_linear(z, params["convs.0.lin.weight"], t, params.get("convs.0.lin.bias"))
                return self._sgc_out(h).view(t, n, -1)
        # (k-hop subgraphs never: one task's subgraph is trivially "one graph", but a CUDA graph's padded union
        # buffers are read only by the subgraph path below)
        gens = [None] * len(items) if streams is None else \
            [streams.generators[run] for run, a, b in streams.spans(0, len(items)) for _ in range(a, b)]
        attends = self.training and self._draws_attention_dropout
        masks = self.training and self.dropout > 0
        if (self.kind in WHOLE_GRAPH_KINDS and not any(g.local or g.subgraph for g in items)
                and all(g.x is items[0].x for g in items) and not attends
                and (not masks or dropout_passes_batch(items[0].x.device))):
            return self._whole_graph_tasks(params, items, gens)
        if self.kind == "gat" and all(g.subgraph for g in items) and not attends:
            return self._subgraph_tasks(params, batch, gens)
        if self.supports_plan and all(g.local for g in items):
            key = f"layout/{PLAN_AGGREGATION[self.kind]}/{self.hops}"
            static = items[0].__dict__.get(STATIC_BATCH_KEY)
            if static is not None and static[0] == tuple(id(g) for g in items):
                batch.memo[key] = static[1]  # a CUDA graph's padded buffers (these very inputs)
            if key not in batch.memo:
                batch.memo[key] = TaskLayout([self.plan(g) for g in items])
            fixed = {n: v for n, v in self._weights().items() if n not in params}  # GIN's fixed ε
            return self._forward_plan({**fixed, **params}, batch.memo[key], streams)
        outs = []
        for t, g in enumerate(items):
            with draw_from(gens[t]):  # a fused step: each task's masks from its run's stream, in the run's order
                outs.append(torch.func.functional_call(self, {k: v[t] for k, v in params.items()}, (g,)))
        return torch.stack(outs)

    def _task_dropout(self, x: Tensor, tasks: int, streams: TaskStreams | None, own_rows: Any) -> Tensor:
        """Feature dropout of ``tasks`` tasks' stacked rows; in a fused meta-step (``streams``) each run's tasks
        ``[a, b)`` masked over their first ``own_rows(a, b)`` rows (the padding that run has alone) from its own
        stream (:func:`~cmlgraph.backbones.gnn_ops.task_feature_dropout`)."""
        if streams is None or not self.training or self.dropout == 0.0:
            return feature_dropout(x, self.dropout, self.training)
        draws = [(a, b, own_rows(a, b), streams.generators[run]) for run, a, b in streams.spans(0, tasks)]
        return task_feature_dropout(x, self.dropout, tasks, draws)

    def _whole_graph_tasks(self, w: dict[str, Tensor], items: list[GraphInput],
                           gens: list[torch.Generator | None] | None = None) -> Tensor:
        """``T`` tasks' whole-graph passes as one: features ``Tensor[T, n, hidden]`` of each task's nodes.

        Every layer keeps the tasks' activations node-major, ``[N, T, d]``, so each layer is one (sparse-aware)
        product for the tasks' projections and **one** sparse aggregation ``Â [N, T·d]`` for all tasks, instead of
        T whole-graph passes of T functional calls. The first layer projects the shared features once with the
        tasks' weights side by side (``X [W_1; …; W_T]ᵀ``), so sparse features stay sparse. Same values as the
        per-task pass (linearity of aggregation; PyG's layer semantics as in :meth:`forward`). GAT computes each
        edge's attention for every task at once (:meth:`_gat_attend`). Tasks run in chunks whose activations (GAT:
        per-edge messages; with input dropout also each task's masked features) hold at most
        :data:`WHOLE_GRAPH_VALUES` values.

        With feature dropout in training, each task's masks are drawn as its own pass draws them (task by task,
        layer by layer: :meth:`_task_scales`): the first layer then projects each task's masked features (one
        product a task on the CPU; off it one batched product of the node-major masked features, :func:`_mask_tasks`)
        instead of the shared ones once.

        Args:
            w: Per-task weights ``[T, ...]`` (GIN's ε among them when trained: ``[T, 1]``).
            items: The tasks' whole-graph inputs of one graph (same features, equally many nodes each).
            gens: Each task's random stream for its masks (``None``: torch's global RNG); default all ``None``.
        """
        fixed = {n: v for n, v in self._weights().items() if n not in w}  # GIN's fixed ε, shared by the tasks
        first = items[0]
        x, graph = sparse_features(first), self._graph(first)
        n_graph, t = int(first.num_nodes), len(items)
        nodes = torch.stack([g.nodes for g in items])  # [T, n]
        width = int(graph.shape[1]) if self.kind == "gat" else n_graph  # GAT: per-edge messages of every task
        drop = self.training and self.dropout > 0
        masked = 2 * int(x.numel()) if drop and not is_sparse(x) else 0  # a task's masked features and its mask
        per = max(1, WHOLE_GRAPH_VALUES // max(1, width * self.hidden + masked))
        gens = gens if gens is not None else [None] * t
        shapes = [tuple(x.shape) if not is_sparse(x) else (int(x.values().numel()),)] + \
            [(n_graph, self.hidden)] * (len(self.convs) - 1)
        outs = []
        for s in range(0, t, per):
            part = {**fixed, **{k: v[s:s + per] for k, v in w.items()}}
            scales = self._task_scales(shapes, gens[s:s + per], x) if drop else None
            h = self._whole_graph_chunk(part, x, graph, min(per, t - s), scales)
            rows = nodes[s:s + per]
            outs.append(h[rows, torch.arange(rows.shape[0], device=rows.device).unsqueeze(1)])
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _subgraph_tasks(self, w: dict[str, Tensor], batch: GraphBatch,
                        gens: list[torch.Generator | None] | None = None) -> Tensor:
        """GAT over ``T`` tasks' own k-hop subgraphs as one pass over their disjoint union: features
        ``Tensor[T, n, hidden]`` of each task's requested nodes.

        Each task's subgraph is padded to the largest one's ``R`` rows (task ``t``'s nodes at ``t·R …``; pad rows
        have zero features and no edges, so nothing reads them), its self-looped edges offset by ``t·R``; each layer
        projects with every task's weights at once (``bmm``, or a block-diagonal product for sparse features) and
        attends over the union's edges. Tasks run in groups whose edges' messages and padded feature blocks hold at
        most :data:`WHOLE_GRAPH_VALUES` values. The layout is built once per batch (its
        ``memo``) and reused by every inner step. Same values as the per-task pass; with feature dropout in
        training each task's masks are drawn as its own pass draws them (:meth:`_task_scales`), except on a CUDA
        graph's padded union, whose masks are drawn over its fixed padded shapes, layer by layer.

        Args:
            w: Per-task weights ``[T, ...]``.
            batch: The tasks' subgraph inputs.
            gens: Each task's random stream for its masks (``None``: torch's global RNG); default all ``None``.
        """
        items = batch.items
        groups = batch.memo.get("gat/groups")
        static = items[0].__dict__.get(STATIC_BATCH_KEY)
        padded = static is not None and static[0] == tuple(id(g) for g in items)
        if groups is None and padded:
            # a CUDA graph's padded union (these very inputs): one group (cmlgraph.backbones.union_static)
            groups = batch.memo["gat/groups"] = [(0, len(items), static[1].layout)]
        if groups is None:
            # a task's values in the union: its edges' messages, and its padded block of dense features (each task
            # padded to the largest subgraph of all, a bound on its group's); with feature dropout in training also
            # its padded dropout factors and masked features (two more such blocks)
            rows = max(g.num_nodes for g in items)
            width = 0 if is_sparse(items[0].x) else int(items[0].x.shape[1])
            masked = 2 * rows * width if self.training and self.dropout > 0 else 0
            weights = [max(int(self_loop_edge_index(g).shape[1]) * self.hidden,
                           rows * max(width, self.hidden) + masked) for g in items]
            spans = group_tasks(weights, WHOLE_GRAPH_VALUES)
            groups = batch.memo["gat/groups"] = [(a, b, _union_layout(items[a:b])) for a, b in spans]
        drop = self.training and self.dropout > 0
        gens = gens if gens is not None else [None] * len(items)
        outs = []
        for a, b, lay in groups:
            part = {k: v[a:b] for k, v in w.items()}
            scales = None
            if drop and not padded:  # each task's masks over its own rows, drawn as its own pass draws them
                x = sparse_features(items[a])
                first = [(int(sparse_features(g).values().numel()),) if is_sparse(x) else tuple(g.x.shape)
                         for g in items[a:b]]
                later = [[(int(g.num_nodes), self.hidden)] * (len(self.convs) - 1) for g in items[a:b]]
                scales = self._task_scales([[f, *rest] for f, rest in zip(first, later, strict=True)], gens[a:b], x)
            outs.append(self._union_pass(part, lay, b - a, scales))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _union_pass(self, w: dict[str, Tensor], lay: dict[str, Any], t: int,
                    scales: list[list[Tensor]] | None = None) -> Tensor:
        """The GAT layers over one group's disjoint union (:func:`_union_layout`): ``[t, n, hidden]``.

        ``scales`` (per layer, each task's dropout factors over its own rows: :meth:`_task_scales`) mask each
        layer's input; without them, training with dropout masks the padded union itself (a CUDA graph's fixed
        buffers: the same shapes at every replay)."""
        h = lay["x"]
        rows = int(lay["rows"])
        last = len(self.convs) - 1
        heads = self.heads
        for i in range(len(self.convs)):
            pre = f"convs.{i}."
            if scales is not None:
                h = _mask_union(h, scales[i], rows, t)
            elif self.training and self.dropout > 0:
                h = feature_dropout(h, self.dropout, True)
            p = task_linear(h, w[pre + "lin.weight"], t).view(t, -1, heads, self.hidden // heads)  # [t, R, H, C]
            a_src = (p * w[pre + "att_src"].view(t, 1, heads, -1)).sum(-1).flatten(0, 1)  # [t·R, H]
            a_dst = (p * w[pre + "att_dst"].view(t, 1, heads, -1)).sum(-1).flatten(0, 1)
            p = p.flatten(0, 1)  # [t·R, H, C]: task t's nodes at t·R …
            h = self._attention(p, a_src, a_dst, lay["edges"], i)
            h = _task_bias(h.view(p.shape[0], -1), w.get(pre + "bias"), t)
            if i < last or self.last_activation:
                h = F.relu(h)
        return h.index_select(0, lay["out"]).view(t, -1, h.shape[-1])

    def _whole_graph_chunk(self, w: dict[str, Tensor], x: Tensor, graph: Tensor, t: int,
                           scales: list[list[Tensor]] | None = None) -> Tensor:
        """The GNN over the whole graph for ``t`` tasks at once: node-major ``[N, t, hidden]`` (see
        :meth:`_whole_graph_tasks`); ``scales`` (per layer, each task's dropout factors) mask each layer's input."""

        def project(h: Any, weight: Tensor) -> Tensor:  # [N, in] shared, [N, t, in] or t [N, in] → [N, t, out]
            if isinstance(h, list):  # each task's own (masked) features: one (sparse-aware) product a task
                return torch.stack([sparse_aware_linear(hk, weight[k]) for k, hk in enumerate(h)], dim=1)
            if h.dim() == 2:
                out = sparse_aware_linear(h, weight.reshape(-1, weight.shape[-1]))
                return out.view(h.shape[0], t, weight.shape[1])
            return torch.einsum("nti,toi->nto", h, weight)

        def aggregate(h: Tensor) -> Tensor:  # one sparse product for every task
            return sparse_matmul(graph, h.reshape(h.shape[0], -1)).view_as(h)

        def bias(h: Tensor, b: Tensor | None) -> Tensor:
            return h if b is None else h + b

        last = len(self.convs) - 1
        h: Any = x
        for i in range(len(self.convs)):
            pre = f"convs.{i}."
            if scales is not None:
                h = _mask_tasks(h, scales[i])
            if self.kind == "gcn":
                h = bias(aggregate(project(h, w[pre + "lin.weight"])), w.get(pre + "bias"))
            elif self.kind == "sage":
                h = (bias(aggregate(project(h, w[pre + "lin_l.weight"])), w.get(pre + "lin_l.bias"))
                     + bias(project(h, w[pre + "lin_r.weight"]), w.get(pre + "lin_r.bias")))
            elif self.kind == "gat":
                h = bias(self._gat_attend(project(h, w[pre + "lin.weight"]), w, pre, graph, t, i), w.get(pre + "bias"))
            else:  # gin: MLP((1 + ε) h + Σ_neighbours h), its first linear layer moved before the aggregation
                p = project(h, w[pre + "nn.0.weight"])
                eps = w[pre + "eps"]
                scale = 1 + (eps.view(1, t, 1) if eps.dim() == 2 else eps)
                h = bias(aggregate(p) + scale * p, w.get(pre + "nn.0.bias"))
                h = bias(project(F.relu(h), w[pre + "nn.2.weight"]), w.get(pre + "nn.2.bias"))
            if i < last or self.last_activation:
                h = F.relu(h)
        return h

    @property
    def _draws_dropout(self) -> bool:
        """Whether a training pass draws random masks: feature dropout, or GAT's attention dropout."""
        return self.dropout > 0 or self._draws_attention_dropout

    @property
    def _draws_attention_dropout(self) -> bool:
        """Whether a training pass draws GAT attention-dropout masks (inside PyG's conv: task by task only)."""
        return self.kind == "gat" and any(float(c.dropout) > 0 for c in self.convs)

    def _task_scales(self, shapes: list[Any], gens: list[torch.Generator | None], like: Tensor
                     ) -> list[list[Tensor]]:
        """Each task's feature-dropout factors for every layer's input, drawn in the order the tasks' own passes
        draw them (task by task; within a task layer by layer; each from its stream), so a batched pass masks
        every task as its own functional call would (:func:`~cmlgraph.core.dropout.dropout_scale`).

        Args:
            shapes: Per layer the masked input's shape, shared (``[(N, F), (N, d), …]``), or per task (a list of
                such lists, one a task).
            gens: Each task's stream (``None``: torch's global RNG), as the task loop draws it (its
                :func:`~cmlgraph.core.dropout.draw_from` block sets the same one).
            like: A tensor of the features' dtype and device.

        Returns:
            Per layer, a list of the tasks' factors (``1 / (1 − p)`` or 0), each in its shape.
        """
        per_task = bool(shapes) and isinstance(shapes[0], list)
        layers = len(shapes[0]) if per_task else len(shapes)
        dtype = like.values().dtype if is_sparse(like) else like.dtype
        out: list[list[Tensor]] = [[] for _ in range(layers)]
        for k, gen in enumerate(gens):
            own = shapes[k] if per_task else shapes
            for i in range(layers):
                out[i].append(dropout_scale(own[i], self.dropout, gen, dtype=dtype, device=like.device))
        return out

    def _gat_attend(self, p: Tensor, w: dict[str, Tensor], pre: str, edge_index: Tensor, t: int, i: int) -> Tensor:
        """GATConv's attention and aggregation (PyG semantics: ``LeakyReLU(a_srcᵀ h_j + a_dstᵀ h_i)``, softmax over
        each target's incoming edges, heads concatenated) for ``t`` tasks at once, node-major.

        Args:
            p: The projected features ``[N, t, heads·C]`` (each task's ``lin`` weight).
            w: Per-task weights; ``att_src``/``att_dst`` are ``[t, 1, heads, C]``.
            pre: The layer's parameter prefix.
            edge_index: ``[2, E]`` with one self-loop per node (source row 0, target row 1).
            t: Tasks.
            i: The layer's index (its negative slope).

        Returns:
            ``[N, t, heads·C]`` before the bias.
        """
        n, heads = p.shape[0], self.heads
        p = p.view(n, t, heads, -1)
        a_src = (p * w[pre + "att_src"].view(1, t, heads, -1)).sum(-1)  # [N, t, heads]
        a_dst = (p * w[pre + "att_dst"].view(1, t, heads, -1)).sum(-1)
        return self._attention(p, a_src, a_dst, edge_index, i).view(n, t, -1)

    def _attention(self, p: Tensor, a_src: Tensor, a_dst: Tensor, edge_index: Tensor, i: int) -> Tensor:
        """Layer ``i``'s attention-weighted aggregation: ``LeakyReLU(a_src[j] + a_dst[i])``, softmax over each
        target's incoming edges, the weighted sum of the sources' ``p`` (rows ``[M, ..., heads, C]``, scores
        ``[M, ..., heads]``, ``edge_index`` over the ``M`` rows)."""
        src, dst = edge_index[0], edge_index[1]
        conv = self.convs[i]
        assert isinstance(conv, GATConv)
        logits = F.leaky_relu(a_src.index_select(0, src) + a_dst.index_select(0, dst), conv.negative_slope)
        alpha = pyg_softmax(logits, dst, num_nodes=p.shape[0])
        return p.new_zeros(p.shape).index_add(0, dst, p.index_select(0, src) * alpha.unsqueeze(-1))

    def _weights(self) -> dict[str, Tensor]:
        """The weights (and GIN's ε) currently in the modules: under ``functional_call``, the substituted ones."""
        if not hasattr(self, "_weight_names"):  # static: the module tree never changes after __init__
            names = [n for n, _ in self.named_parameters()]
            if self.kind == "gin":
                names += [f"convs.{i}.eps" for i in range(len(self.convs)) if f"convs.{i}.eps" not in names]
            self._weight_names = tuple(names)
        return {n: attrgetter(n)(self) for n in self._weight_names}

    def plan_reads(self) -> PlanReads:
        """What :meth:`_forward_plan` reads from a layout in the current mode: SGC its propagated rows; in training
        with dropout, the input level's features and every layer's aggregation (input dropout); otherwise the
        first layer's constants (``z``, and the root features ``r`` of SAGE and GIN) and the later layers'
        aggregations. A padded layout (:class:`~cmlgraph.backbones.plan_static.StaticTaskLayout`) holds these."""
        if self.kind == "sgc":
            return PlanReads((("sgc", self.hops),), ())
        layers = len(self.convs)
        if self.training and self.dropout > 0:
            return PlanReads((("x", 0),), tuple(range(layers)))
        roots = (("r", 1),) if self.kind in ("sage", "gin") else ()
        return PlanReads((("z", 1), *roots), tuple(range(1, layers)))

    def _forward_plan(self, w: dict[str, Any], lay: TaskLayout | StaticTaskLayout,
                      streams: TaskStreams | None = None) -> Tensor:
        """The GNN over computation trees with per-task weights ``w[name]: [T, ...]``; returns ``[T, n, hidden]``.

        ``streams`` (a fused meta-step of several runs, eager layouts only): each run's tasks masked over the rows
        of level ``l`` that run pads to alone (the largest of its own tasks' trees), from its own stream."""
        t = lay.tasks
        streams = streams if isinstance(lay, TaskLayout) else None

        def own_rows(level: int) -> Any:
            return lambda a, b: max(p.sizes[level] for p in lay.plans[a:b])

        if self.kind == "sgc":
            level = len(lay.sizes) - 1
            z = self._task_dropout(lay.constant("sgc", level), t, streams, own_rows(level))
            h = task_linear(z, w["convs.0.lin.weight"], t, w.get("convs.0.lin.bias"))
            return lay.select_output(self._sgc_out(h))
        drop_input = self.training and self.dropout > 0
        last = len(self.convs) - 1
        h = torch.empty(0)
        for i in range(len(self.convs)):
            n_out = lay.sizes[i + 1]
            pre = f"convs.{i}."
            if i == 0 and not drop_input:
                h = self._plan_first_layer(w, lay)
            else:
                x = lay.features() if i == 0 else h  # (the input level's sizes are known once it is built)
                x = self._task_dropout(x, t, streams, own_rows(i))
                h = self._plan_layer(w, pre, lay.agg(i), x, t, n_out, i)
            if i < last or self.last_activation:
                h = F.relu(h)
        return lay.select_output(h)

    def _plan_first_layer(self, w: dict[str, Any], lay: TaskLayout | StaticTaskLayout) -> Tensor:
        """First layer from constants: ``z = A x`` (aggregated features) and ``r`` (the root nodes' features)."""
        t = lay.tasks
        z = lay.constant("z", 1)
        if self.kind == "gcn":
            return task_linear(z, w["convs.0.lin.weight"], t, w.get("convs.0.bias"))
        r = lay.constant("r", 1)
        if self.kind == "sage":
            return (task_linear(z, w["convs.0.lin_l.weight"], t, w.get("convs.0.lin_l.bias"))
                    + task_linear(r, w["convs.0.lin_r.weight"], t, w.get("convs.0.lin_r.bias")))
        w1, b1 = w["convs.0.nn.0.weight"], w.get("convs.0.nn.0.bias")
        h = task_linear(z, w1, t) + _task_scale(1 + w["convs.0.eps"], task_linear(r, w1, t), t)
        if b1 is not None:
            h = (h.view(t, -1, h.shape[-1]) + b1.unsqueeze(1)).reshape(-1, h.shape[-1])
        return self._gin_rest(w, "convs.0.", h, t)

    def _plan_layer(self, w: dict[str, Any], pre: str, agg: Tensor, x: Tensor, t: int, n_out: int, i: int
                    ) -> Tensor:
        """One layer from the previous level's ``x`` (dense, or block-sparse features): project, aggregate."""
        if self.kind == "gcn":
            h = sparse_matmul(agg, task_linear(x, w[pre + "lin.weight"], t))
            return _task_bias(h, w.get(pre + "bias"), t)
        if self.kind == "sage":
            hl = sparse_matmul(agg, task_linear(x, w[pre + "lin_l.weight"], t))
            hr = prefix_rows(task_linear(x, w[pre + "lin_r.weight"], t, w.get(pre + "lin_r.bias")), t, n_out)
            return _task_bias(hl, w.get(pre + "lin_l.bias"), t) + hr
        w1, b1 = w[pre + "nn.0.weight"], w.get(pre + "nn.0.bias")
        p = task_linear(x, w1, t)
        h = sparse_matmul(agg, p) + _task_scale(1 + w[pre + "eps"], prefix_rows(p, t, n_out), t)
        return self._gin_rest(w, pre, _task_bias(h, b1, t), t)

    def _gin_rest(self, w: dict[str, Any], pre: str, h: Tensor, t: int) -> Tensor:
        """GIN's MLP after its first linear layer (ReLU, Linear)."""
        return task_linear(F.relu(h), w[pre + "nn.2.weight"], t, w.get(pre + "nn.2.bias"))

    def _graph(self, inputs: GraphInput) -> Tensor:
        """The cached graph structure this kind propagates over."""
        if self.kind == "gcn":
            return gcn_adj(inputs)
        if self.kind == "sage":
            return mean_adj(inputs)
        if self.kind == "gat":
            return self_loop_edge_index(inputs)
        return sum_adj(inputs)

    def _first_layer(self, conv: MessagePassing, x: Tensor, graph: Tensor) -> Tensor:
        """First layer with the weight applied before aggregation, so a sparse ``x`` is never densified."""
        if self.kind in ("gcn", "gat"):
            return conv(x, graph)  # their `lin` is a SparseLinear and runs before propagation
        if self.kind == "sage":
            assert isinstance(conv, SAGEConv)
            w = torch.cat([conv.lin_l.weight, conv.lin_r.weight], dim=0)
            h_l, h_r = sparse_aware_linear(x, w).split(self.hidden, dim=1)
            return conv.propagate(graph, x=(h_l, h_l)) + conv.lin_l.bias + h_r
        assert isinstance(conv, GINConv)
        first, *rest = list(conv.nn)
        h = sparse_aware_linear(x, first.weight)
        out = conv.propagate(graph, x=(h, h)) + (1 + conv.eps) * h + first.bias
        for module in rest:
            out = module(out)
        return out

    def _forward_sgc(self, inputs: GraphInput) -> Tensor:
        """SGC: ``(Â^K X)[nodes] W + b``, with ``Â^K X`` computed once per graph when ``X`` is fixed."""
        conv = self.convs[0]
        assert isinstance(conv, SGConv)
        x = sparse_features(inputs)
        if x.requires_grad:
            propagated: Tensor | None = self._propagate_dense(gcn_adj(inputs), x) if not is_sparse(x) else None
        else:
            propagated = cached(inputs, f"sgc/x/K={self.hops}", lambda: self._precompute_sgc(inputs))
        if propagated is not None:
            rows = select_rows(propagated, inputs.nodes)
            return self._sgc_out(conv.lin(feature_dropout(rows, self.dropout, self.training)))
        if not x.requires_grad:
            # Fill-in of Â^K X too large to hold: compute only the requested rows, (Â^K)[nodes] X, once per input.
            rows = self._sgc_local_rows(inputs, x)
            return self._sgc_out(conv.lin(feature_dropout(rows, self.dropout, self.training)))
        # Trainable features: project the sparse features first, then propagate the dense hidden.
        h = sparse_aware_linear(feature_dropout(x, self.dropout, self.training), conv.lin.weight)
        h = self._propagate_dense(gcn_adj(inputs), h)[inputs.nodes]
        return self._sgc_out(h if conv.lin.bias is None else h + conv.lin.bias)

    def _sgc_task_rows(self, items: list[GraphInput]) -> Tensor | None:
        """The propagated rows ``(Â^K X)[nodes]`` of ``T`` whole-graph inputs of one graph, stacked as
        :func:`task_linear` reads them: dense ``[T, n, F]``, or sparse as a block-diagonal ``[T·n, T·F]``;
        ``None`` where the features are trainable (no cached propagation)."""
        first = items[0]
        x = sparse_features(first)
        if x.requires_grad:
            return None
        propagated = cached(first, f"sgc/x/K={self.hops}", lambda: self._precompute_sgc(first))
        with torch.no_grad():
            if propagated is not None:
                parts = [select_rows(propagated, g.nodes) for g in items]
            else:  # fill-in too large to hold: each input's own rows, (Â^K)[nodes] X
                parts = [self._sgc_local_rows(g, sparse_features(g)) for g in items]
            if not is_sparse(parts[0]):
                return torch.stack(parts)
            n, f = int(first.nodes.numel()), int(parts[0].shape[1])
            return _block_diag([_to_csr(p) for p in parts], n, f)

    def _sgc_local_rows(self, inputs: GraphInput, x: Tensor) -> Tensor:
        """``(Â^K X)[nodes]`` as sparse row selections of ``Â`` (K sparse-sparse products), kept on the input.

        Stored on the :class:`GraphInput` itself (not in the graph-wide cache), so it lives as long as the
        episode: the inner steps and the query pass of one episode reuse it.
        """
        store = inputs.__dict__.setdefault("_sgc_rows", {})
        if self.hops not in store:
            adj = cached(inputs, "adj/gcn/coo", lambda: gcn_adj(inputs).to_sparse_coo().coalesce())
            with torch.no_grad():
                n = inputs.nodes.numel()
                sel = torch.sparse_coo_tensor(torch.stack([torch.arange(n, device=x.device), inputs.nodes]),
                                              torch.ones(n, dtype=x.dtype, device=x.device), (n, inputs.num_nodes))
                for _ in range(self.hops):
                    sel = torch.sparse.mm(sel, adj).coalesce()
                feats = x if x.layout == torch.sparse_coo else (x.to_sparse_coo() if is_sparse(x) else x)
                out = torch.sparse.mm(sel, feats)
                store[self.hops] = out.to_dense() if out.is_sparse else out
        return store[self.hops]

    def _sgc_out(self, h: Tensor) -> Tensor:
        return F.relu(h) if self.last_activation else h

    def _propagate_dense(self, adj_t: Tensor, h: Tensor) -> Tensor:
        for _ in range(self.hops):
            h = sparse_matmul(adj_t, h)
        return h

    def _precompute_sgc(self, inputs: GraphInput) -> Tensor | None:
        """``Â^K X``, dense or (for sparse ``X``) sparse COO; ``None`` when its fill-in is too large."""
        adj_t = gcn_adj(inputs)
        with torch.no_grad():
            x = inputs.x
            if not is_sparse(x):
                return self._propagate_dense(adj_t, x)
            return propagate_sparse(adj_t, x, self.hops, max_nnz=int(self.sgc_max_fill * sparse_nnz(x)))

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"kind={self.kind}, in_dim={self.in_dim}, hidden={self.hidden}, layers={self.num_layers}"


def _union_layout(items: list[GraphInput]) -> dict[str, Any]:
    """The disjoint union of ``items``' k-hop subgraphs, each padded to the largest one's ``R`` rows (see
    :meth:`GNNBackbone._subgraph_tasks`): ``x`` (dense ``[T, R, F]``, or a block-diagonal sparse ``[T·R, T·F]``),
    ``edges`` (``[2, E]``: each task's self-looped edges offset by ``t·R``), ``out`` (``[T·n]``: each task's
    requested nodes, offset) and ``rows`` (``R``). Sizes are read from shapes only (no host-device sync). Off the
    CPU, from ``BATCH_LAYOUT_TASKS`` tasks on, built with a fixed number of ops whatever the number of tasks
    (issue 18; a few ops a task otherwise), equal to the task loop's."""
    rows = max(g.num_nodes for g in items)
    feats = [sparse_features(g) for g in items]
    loops = [self_loop_edge_index(g) for g in items]
    device = loops[0].device
    if len(items) >= BATCH_LAYOUT_TASKS and layout_batches(device):
        # off the CPU, a fixed number of ops whatever the number of tasks (gnn_plan.layout_batches, issue 18)
        if is_sparse(feats[0]):
            x = _block_diag([_to_csr(f) for f in feats], rows, int(feats[0].shape[1]), batched=True)
        else:
            x = _padded_rows(torch.cat(feats), [int(f.shape[0]) for f in feats], rows)
        edge_task, _ = _segments([int(e.shape[1]) for e in loops], device, within=False)
        node_task, _ = _segments([int(g.nodes.numel()) for g in items], device, within=False)
        return {"x": x, "edges": torch.cat(loops, dim=1) + edge_task * rows,
                "out": torch.cat([g.nodes for g in items]) + node_task * rows, "rows": rows}
    if is_sparse(feats[0]):
        x = _block_diag([_to_csr(f) for f in feats], rows, int(feats[0].shape[1]))
    else:
        x = feats[0].new_zeros(len(items), rows, feats[0].shape[1])
        for t, f in enumerate(feats):
            x[t, : f.shape[0]] = f
    edges = torch.cat([e + t * rows for t, e in enumerate(loops)], dim=1)
    out = torch.cat([g.nodes + t * rows for t, g in enumerate(items)])
    return {"x": x, "edges": edges, "out": out, "rows": rows}


def dropout_passes_batch(device: torch.device) -> bool:
    """Whether whole-graph passes (GCN, GraphSAGE, GIN, GAT in ``full`` mode) with feature dropout run as one pass
    for the meta-batch on ``device`` (each task's masks drawn as its own pass draws them: the same results either
    way). On a GPU yes: fewer, larger kernels, and a CUDA graph can capture the step. On the CPU no: there the task
    loop measured faster (session 34, one thread, ``cmlgraph train --gnn gcn --subgraph full --dropout 0.5 --steps
    100 --test-tasks 100``: training wall time 21.4 s task by task against 23.9 s as one pass, test accuracy
    equal: its masked per-task activations cost more copies than the launches they save there). GAT's k-hop
    subgraph unions batch everywhere (level on the CPU: 55.9 s against 56.9 s, 50 steps)."""
    return device.type != "cpu"


def _mask_tasks(h: Any, scales: list[Tensor]) -> Any:
    """A whole-graph layer input masked per task: the shared features ``[N, F]`` (one masked matrix a task, each
    projected by its own product: on a CPU as fast as the per-task pass, where one batched product over a
    ``[N, t, F]`` copy cost a third more; off the CPU, :func:`~cmlgraph.backbones.gnn_plan.layout_batches`, all
    tasks' masked by one product, then projected by one, issue 18) or the tasks' node-major activations
    ``[N, t, d]``, times each task's ``scales`` (``[N, F]``/``[N, d]``, or the sparse features' stored values)."""
    if is_sparse(h):
        return [with_values(h, h.values() * s) for s in scales]
    if h.dim() == 2 and layout_batches(h.device):  # off the CPU: one product for every task, node-major
        return h.unsqueeze(1) * torch.stack(scales, dim=1)  # [N, t, F], then one projection
    if h.dim() == 2:
        return [h * s for s in scales]
    return h * torch.stack(scales, dim=1)  # [N, t, d]


def _mask_union(h: Tensor, scales: list[Tensor], rows: int, t: int) -> Tensor:
    """A union layer input (dense ``[t, R, F]`` or ``[t·R, d]``, or the block-diagonal sparse features) times
    each task's ``scales`` over its own first rows (its subgraph's; pad rows kept) or its block's stored values."""
    if is_sparse(h):
        return with_values(h, h.values() * torch.cat(scales))
    padded = torch.stack([F.pad(s, (0, 0, 0, rows - s.shape[0]), value=1.0) for s in scales])  # [t, R, d]
    return (h.view(t, rows, -1) * padded).view(h.shape)


def _task_bias(h: Tensor, bias: Tensor | None, t: int) -> Tensor:
    """``h`` (``[T·rows, d]``) plus the per-task ``bias`` (``[T, d]``)."""
    if bias is None:
        return h
    return (h.view(t, -1, h.shape[-1]) + bias.unsqueeze(1)).reshape(-1, h.shape[-1])


def _task_scale(scale: Tensor, h: Tensor, t: int) -> Tensor:
    """``h`` (``[T·rows, d]``) times a per-task (``[T, 1]``) or shared (``[1]``) scalar."""
    if scale.dim() < 2:
        return scale * h
    return (h.view(t, -1, h.shape[-1]) * scale.view(t, 1, 1)).reshape(-1, h.shape[-1])


def gnn_hops(backbone: nn.Module, *, exact: bool = False) -> int:
    """Receptive field of a GNN backbone, for choosing the k of k-hop episode subgraphs.

    Args:
        backbone: A :class:`GNNBackbone`.
        exact: With ``False``, the number of message-passing hops (layers; SGC: K). With ``True``, the k
            for which the output on the k-hop subgraph around the nodes equals the full-graph output
            exactly: one more for GCN and SGC, whose symmetric normalisation reads the degree of the
            outermost source nodes.

    Raises:
        ConfigError: If ``backbone`` is not a GNN backbone.
    """
    if not isinstance(backbone, GNNBackbone):
        raise ConfigError(f"gnn_hops needs a GNNBackbone, got {type(backbone).__name__}")
    return backbone.hops + int(exact and backbone.spec.degree_normalised)


__all__ = ["GNN_REGISTRY", "PLAN_AGGREGATION", "STATIC_BATCH_KEY", "STATIC_LAYOUT_KEY", "GNNBackbone", "GNNSpec",
           "attach_plan", "dropout_passes_batch", "gnn_hops", "host_plan", "plan_features", "prepare_plan"]
