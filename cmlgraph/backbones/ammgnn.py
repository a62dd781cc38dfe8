"""AMM-GNN's encoder as TLP codes it: per-task feature modulation ("attribute matching") on a full-graph GCN.

Variant (PAPER.md §1.3; Tan et al., LoG 2022, ``Meta-learning/AMM-GNN``; no official code of the original AMM-GNN,
Wang et al. CIKM 2020, exists): per task, two independent draws of ``k = 10`` of the task's nodes. For draw j,
``α_j = Linear(k → 1)`` applied to every feature column of those k nodes (one value per feature, ``[F]``), and
``β_j`` likewise with a second Linear(k → 1). The input becomes ``X ⊙ (1 + 0.01·ᾱ)`` with ``ᾱ = (α₁ + α₂)/2``,
the same for every node; β only enters the regulariser ``−0.01·[cos(α₁, α₂) + cos(β₁, β₂)]`` added to the query
loss (:func:`match_regulariser`). α and β are fixed in the inner loop and trained by the outer step. The Linear(k→1)
weights and biases are initialised U(−1, 1).

The GCN is the same 2-layer F→16→16 as G-Meta's (ReLU + dropout after the first layer, none after the second,
TLP's U(−1/√out, 1/√out) initialisation) on the **full graph** with ``D⁻¹(A + I)``; the embedding of node v is
row v. It runs on v's exact 2-hop computation tree (:mod:`cmlgraph.backbones.gnn_plan`), which equals the
full-graph pass: the modulation is folded into the first weight, ``(X ⊙ m) W₁ᵀ = X (W₁ ⊙ m)ᵀ``, so the first
aggregation ``(Â X)`` stays a per-task constant and sparse features stay sparse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmlgraph.backbones.base import Backbone, mlp_head
from cmlgraph.backbones.gmeta import tlp_init
from cmlgraph.backbones.gnn import plan_features
from cmlgraph.backbones.gnn_ops import cached, is_sparse, sparse_matmul
from cmlgraph.backbones.gnn_plan import TaskLayout, build_plan, host_prepare, plan_to, task_linear
from cmlgraph.backbones.plan_static import PlanReads
from cmlgraph.core.dropout import dropout, dropout_task_rows
from cmlgraph.core.streams import current_streams, group_tasks
from cmlgraph.errors import CmlgraphError
from cmlgraph.graphs.balls import row_normalised_adjacency
from cmlgraph.graphs.sparse import slice_rows
from cmlgraph.graphs.types import GraphBatch, GraphInput

#: Weight of the modulation and of the regulariser in TLP's code.
MATCH_SCALE = 0.01
#: ``memo`` key under which a CUDA graph's fixed input holds ``(ids of the batch's inputs, batch memo)``: what
#: :meth:`MatchedInput.stack_tasks` finds for these very inputs (:mod:`cmlgraph.train.cuda_graph_matched`).
STATIC_STACK_KEY = "static_stack"
#: ``memo`` key of an input's drawn rows ``[2, k, F]`` kept in a fixed buffer (the regulariser reads them).
MATCH_ROWS_KEY = "match_rows"


@dataclass
class MatchedInput:
    """A task's support or query nodes for the AMM-GNN encoder, with the task's attribute-matching draws.

    Attributes:
        graph: The full graph and the nodes to embed (``local`` computation trees).
        match: ``LongTensor[2, k]`` the two draws of the task's nodes (global ids), shared by support and query.
        dropout: Whether this pass applies dropout in training mode (support passes).
        memo: The encoder's layout of this input, built once.
    """

    graph: GraphInput
    match: Tensor
    dropout: bool = False
    memo: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def can_stack_tasks(items: list[MatchedInput]) -> bool:
        """Inputs of one graph with equally many nodes and draws run batched."""
        first = items[0]
        return all(isinstance(g, MatchedInput) and g.graph.x is first.graph.x
                   and g.graph.nodes.shape == first.graph.nodes.shape and g.match.shape == first.match.shape
                   and g.dropout == first.dropout for g in items)

    @staticmethod
    def stack_tasks(items: list[MatchedInput]) -> MatchedBatch:
        """A meta-batch's inputs run together (with the padded layouts a CUDA graph's fixed inputs carry, when
        these are those very inputs)."""
        batch = MatchedBatch(list(items))
        hit = items[0].memo.get(STATIC_STACK_KEY)
        if hit is not None and hit[0] == tuple(id(it) for it in items):
            batch.memo = hit[1]
        return batch


class MatchedBatch(GraphBatch):
    """Several tasks' :class:`MatchedInput` (``items``) for ``forward_tasks``; the same container as
    :class:`~cmlgraph.graphs.types.GraphBatch`."""


def match_rows(graph: GraphInput, match: Tensor) -> Tensor:
    """Dense features of the drawn nodes: ``[2, k, F]``."""
    rows = slice_rows(graph.x, match.reshape(-1).to(graph.x.device))
    rows = rows.to_dense() if is_sparse(rows) else rows
    return rows.view(match.shape[0], match.shape[1], -1)


def match_values(weight: Tensor, bias: Tensor, rows: Tensor) -> Tensor:
    """Linear(k → 1) over each feature column: ``rows [..., 2, k, F]``, ``weight [..., 1, k]``, ``bias [..., 1]``
    → ``[..., 2, F]``."""
    return torch.einsum("...jif,...i->...jf", rows, weight[..., 0, :]) + bias[..., None, :]


def match_regulariser(params: dict[str, Tensor], inputs: MatchedInput) -> Tensor:
    """``−0.01·[cos(α₁, α₂) + cos(β₁, β₂)]`` of one task (``params``: the encoder's unbatched weights)."""
    return match_regulariser_tasks(params, [inputs])[0]


def match_regulariser_tasks(params: dict[str, Tensor], inputs: Sequence[MatchedInput]) -> Tensor:
    """:func:`match_regulariser` of ``T`` tasks at once: ``Tensor[T]``.

    One stacked pass over the tasks' drawn rows ``[T, 2, k, F]`` instead of one small pass a task: the
    regulariser and its (double) backward cost the same kernels for any meta-batch (issue 18 item 3; a task
    loop cost about 100 device ops a task, forward and backward).

    Args:
        params: The encoder's unbatched weights (``match_alpha.*``, ``match_beta.*``).
        inputs: The tasks' query inputs (each with its drawn ``match`` ids, or their rows in ``memo``).
    """
    rows = torch.stack([it.memo[MATCH_ROWS_KEY] if MATCH_ROWS_KEY in it.memo else match_rows(it.graph, it.match)
                        for it in inputs])  # [T, 2, k, F]
    a = match_values(params["match_alpha.weight"], params["match_alpha.bias"], rows)  # [T, 2, F]
    b = match_values(params["match_beta.weight"], params["match_beta.bias"], rows)
    return -MATCH_SCALE * (F.cosine_similarity(a[:, 0], a[:, 1], dim=-1)
                           + F.cosine_similarity(b[:, 0], b[:, 1], dim=-1))


def rownorm_rows(g: GraphInput) -> Tensor:
    """The graph's ``D^-1 (A + I)`` as CSR rows (TLP's aggregation), cached on the graph, on ``g.x``'s device."""
    def build() -> Tensor:
        crow, col, val = row_normalised_adjacency(g.edge_index, g.num_nodes)
        dev = g.x.device
        return torch.sparse_csr_tensor(crow.to(dev), col.to(dev), val.to(dev, g.x.dtype), (g.num_nodes, g.num_nodes))

    return cached(g, "adj/rownorm/rows", build)


def prepare_rownorm_plan(inputs: GraphInput, host: GraphInput) -> None:
    """Build the 2-hop computation tree of ``inputs.nodes`` over ``D^-1 (A + I)`` on the host (``host``: the same
    graph and nodes as CPU tensors) and attach it to ``inputs``, copied pinned and ``non_blocking`` (issue 18 item
    2; as :func:`cmlgraph.backbones.gnn.prepare_plan` does for the GNN backbones)."""
    plan = build_plan(rownorm_rows(host), plan_features(inputs), host.nodes, 2)
    host_prepare(plan, plan_features(host), ("z",), (1,))  # its 2nd aggregation as CSR, a sparse "z": no syncs
    inputs.__dict__.setdefault("_plans", {})["rownorm"] = plan_to(plan, plan.x)


class MatchedGCN(Backbone):
    """AMM-GNN's encoder (TLP variant): modulated input, 2-layer row-normalised GCN on the full graph.

    Args:
        in_dim: Node feature dimension F.
        hidden: GCN width (16 in the paper); also ``feature_dim``.
        dropout: Dropout on the first layer's output, training mode, passes whose input asks for it.
        match_size: Nodes per attribute-matching draw (k = 10).
        max_tasks: Most tasks run in one batched pass (evaluation batches are split), same results.
    """

    #: Draws its dropout masks from each run's own stream inside a fused meta-step (:mod:`cmlgraph.core.streams`).
    random_streams = True

    #: Parameter-name prefix of α and β, which the inner loop must not update.
    frozen_prefixes = ("match_alpha.", "match_beta.")

    def __init__(self, in_dim: int, hidden: int = 16, dropout: float = 0.5, match_size: int = 10,
                 max_tasks: int = 16) -> None:
        super().__init__()
        self.lin1 = nn.Linear(in_dim, hidden)
        self.lin2 = nn.Linear(hidden, hidden)
        tlp_init(self)
        self.match_alpha = nn.Linear(match_size, 1)
        self.match_beta = nn.Linear(match_size, 1)
        for m in (self.match_alpha, self.match_beta):
            nn.init.uniform_(m.weight, -1.0, 1.0)
            nn.init.uniform_(m.bias, -1.0, 1.0)
        self.in_dim, self.hidden, self.dropout = in_dim, hidden, dropout
        self.match_size, self.max_tasks = match_size, max_tasks
        self.feature_dim = hidden

    def make_head(self, out_dim: int) -> nn.Module:
        """The meta-learner head Linear(hidden → N), TLP-initialised."""
        return tlp_init(mlp_head(self.feature_dim, out_dim, depth=0))

    def _weights(self) -> dict[str, Tensor]:
        return {n: p for n, p in self.named_parameters()}

    def plan_reads(self) -> PlanReads:
        """What :meth:`_forward_group` reads from a layout: the first aggregation ``z`` and the second layer's
        aggregation (a padded layout, :class:`~cmlgraph.backbones.plan_static.StaticTaskLayout`, holds these)."""
        return PlanReads((("z", 1),), (1,))

    def forward(self, inputs: MatchedInput) -> Tensor:
        """Embeddings ``Tensor[len(nodes), hidden]``."""
        w = {k: v.unsqueeze(0) for k, v in self._weights().items()}
        return self._forward_group(w, [inputs], inputs.memo)[0]

    def forward_tasks(self, params: dict[str, Tensor], batch: MatchedBatch) -> Tensor:
        """Embeddings ``Tensor[T, n, hidden]`` with per-task weights ``params[name][t]``.

        Inside a fused meta-step of several runs (:mod:`cmlgraph.core.streams`) each run's tasks keep the groups
        they have alone, and each run's rows get the dropout mask that run draws alone (from its own stream, over
        its own group's padded rows)."""
        items = batch.items
        streams = current_streams() if self.training and items[0].dropout and self.dropout > 0 else None
        if streams is not None and sum(streams.sizes) != len(items):
            raise CmlgraphError(f"the fused runs have {sum(streams.sizes)} tasks but this pass has {len(items)}")
        segments = None if streams is None else streams.sizes
        groups = group_tasks([1] * len(items), self.max_tasks, segments)
        memos = batch.memo.setdefault(("groups", segments), [{} for _ in groups])
        outs = []
        for (a, b), memo in zip(groups, memos, strict=True):
            draws = None
            if streams is not None:  # (first task, end, the run's own padded rows, its generator) per run
                draws = [(x - a, y - a, max(self.plan(it.graph).sizes[1] for it in items[x:y]),
                          streams.generators[run]) for run, x, y in streams.spans(a, b)]
            outs.append(self._forward_group({k: v[a:b] for k, v in params.items()}, items[a:b], memo, draws))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def plan(self, g: GraphInput) -> Any:
        """The input's computation tree over ``D^-1 (A + I)``: prepared on the host by the domain
        (:func:`prepare_rownorm_plan`), else built here from the input's own tensors."""
        store = g.__dict__.setdefault("_plans", {})
        if "rownorm" not in store:
            store["rownorm"] = build_plan(rownorm_rows(g), plan_features(g), g.nodes.to(g.x.device), 2)
        return store["rownorm"]

    def _forward_group(self, w: dict[str, Tensor], items: list[MatchedInput], memo: dict[str, Any],
                       draws: list[tuple[int, int, int, torch.Generator]] | None = None) -> Tensor:
        if "layout" not in memo:
            memo["layout"] = TaskLayout([self.plan(it.graph) for it in items])
            memo["rows"] = torch.stack([it.memo[MATCH_ROWS_KEY] if MATCH_ROWS_KEY in it.memo  # host-gathered
                                        else match_rows(it.graph, it.match) for it in items])  # [T, 2, k, F]
        lay, t = memo["layout"], len(items)
        alpha = match_values(w["match_alpha.weight"], w["match_alpha.bias"], memo["rows"])  # [T, 2, F]
        scale = 1 + MATCH_SCALE * alpha.mean(1)  # [T, F]
        w1 = w["lin1.weight"] * scale.unsqueeze(1)
        h = F.relu(task_linear(lay.constant("z", 1), w1, t, w["lin1.bias"]))
        if self.training and items[0].dropout and self.dropout > 0:
            h = dropout(h, self.dropout) if draws is None else dropout_task_rows(h, self.dropout, t, draws)
        h = sparse_matmul(lay.agg(1), task_linear(h, w["lin2.weight"], t))
        h = (h.view(t, -1, self.hidden) + w["lin2.bias"].unsqueeze(1)).reshape(-1, self.hidden)
        return lay.select_output(h)

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"in_dim={self.in_dim}, hidden={self.hidden}, dropout={self.dropout}, match_size={self.match_size}"


__all__ = ["MATCH_ROWS_KEY", "MATCH_SCALE", "STATIC_STACK_KEY", "MatchedBatch", "MatchedGCN", "MatchedInput",
           "match_regulariser", "match_regulariser_tasks", "match_rows", "match_values", "prepare_rownorm_plan",
           "rownorm_rows"]
