"""GRACE: contrastive self-supervised pretraining of a GCN encoder on the whole graph, with no labels (Zhu et al.,
"Deep Graph Contrastive Representation Learning", ICML 2020 GRL+ workshop), set up as TLP-FSNC runs it for
few-shot node classification (Tan et al., LoG 2022; github.com/Zhen-Tan-dmml/TLP-FSNC, ``GCL/grace``).

Each epoch draws two views of the graph (edges dropped with :func:`torch_geometric.utils.dropout_edge`, feature
columns masked), encodes both with a 2-layer GCN (``GCNConv``: F → 2h → h, activation after each layer), projects
them (h → p → h, ELU) and minimises the symmetric InfoNCE loss of GRACE (temperature τ; a node's other view is its
positive, every other node of both views a negative). Nothing here reads a label: the loss sees features and edges
only. TLP's code defaults several of its other encoders (e.g. GraphCL's ``"sup": "sup"``) to a label-using
supervised contrastive loss, and ships a supervised GRACE variant (``fs_train_supervised.py``); ours has none.

Settings (:data:`TLP_SETTINGS`) are TLP's ``fs_config.yaml`` per dataset; other graphs take their
Amazon-Computer / Coauthor-CS setting. Differences from TLP, on purpose: the number of epochs is an option (TLP
runs up to 10 000 with early stopping on validation classes; ``gcl-probe`` runs validate the probe every few
epochs on the run's validation tasks and keep the best encoder), and on graphs with more than
:attr:`GraceSettings.max_nodes` nodes each epoch's loss is computed on that many randomly drawn nodes (the full
``N × N`` similarity matrices of Coauthor-CS would take gigabytes per view pair).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import coalesce, contains_self_loops, dropout_edge, to_torch_csr_tensor

from cmlgraph.core.seeded import seeded
from cmlgraph.errors import ConfigError


@dataclass(frozen=True)
class GraceSettings:
    """GRACE's hyper-parameters (TLP-FSNC ``GCL/grace/fs_config.yaml`` names in brackets).

    Attributes:
        hidden: Encoder output width h [num_hidden]; the first layer has 2h.
        proj: Projection head width [num_proj_hidden].
        activation: ``relu`` or ``prelu`` [activation].
        lr: Adam learning rate [learning_rate].
        weight_decay: Adam weight decay [weight_decay].
        drop_edge: Edge drop rates of the two views [drop_edge_rate_1/2].
        drop_feature: Feature-column mask rates of the two views [drop_feature_rate_1/2].
        tau: Temperature τ [tau].
        max_nodes: Nodes per epoch in the contrastive loss (all of them on smaller graphs).
    """

    hidden: int = 256
    proj: int = 256
    activation: str = "relu"
    lr: float = 0.001
    weight_decay: float = 1e-5
    drop_edge: tuple[float, float] = (0.4, 0.1)
    drop_feature: tuple[float, float] = (0.0, 0.2)
    tau: float = 0.7
    max_nodes: int = 2048


#: TLP-FSNC's per-dataset GRACE settings, keyed by cmlgraph's graph names; any other graph gets the default
#: (TLP's Amazon-Computer, Coauthor-CS and CoraFull setting).
TLP_SETTINGS: dict[str, GraceSettings] = {
    "cora": GraceSettings(hidden=128, proj=128, lr=0.0005, drop_edge=(0.2, 0.4), drop_feature=(0.3, 0.4), tau=0.4),
    "citeseer": GraceSettings(activation="prelu", drop_edge=(0.2, 0.0), drop_feature=(0.3, 0.2), tau=0.9),
    "coauthor-cs": GraceSettings(),
    "amazon-computers": GraceSettings(),
}


def settings_for(graph_name: str) -> GraceSettings:
    """TLP's GRACE settings for a graph (by cmlgraph name), else the default ones."""
    return TLP_SETTINGS.get(graph_name.lower(), GraceSettings())


def as_csr(x: Tensor) -> Tensor:
    """Sparse features as CSR (the fast layout for ``X @ W``: about 12x a COO product on Coauthor-CS, the same
    values); dense features unchanged."""
    if x.layout == torch.sparse_coo:
        return x.coalesce().to_sparse_csr()
    return x


#: Graphs with at least this many nodes propagate with a sparse adjacency (:func:`graph_operand`).
ADJACENCY_MIN_NODES = 10_000


def use_adjacency(edge_index: Tensor, num_nodes: int) -> bool:
    """Whether ``GCNConv`` should propagate over this graph with a sparse adjacency (:func:`graph_operand`): at least
    :data:`ADJACENCY_MIN_NODES` nodes and no repeated edges or self-loops (``GCNConv`` counts those differently on
    the two paths). A subset of such edges (GRACE's dropped-edge views) is such too, so this is decided once."""
    return num_nodes >= ADJACENCY_MIN_NODES and not bool(contains_self_loops(edge_index)) \
        and coalesce(edge_index, num_nodes=num_nodes).shape[1] == edge_index.shape[1]


def graph_operand(edge_index: Tensor, num_nodes: int, adjacency: bool | None = None) -> Tensor:
    """What ``GCNConv`` propagates with: where :func:`use_adjacency` (or ``adjacency``, decided once for a graph)
    says so, the transposed sparse CSR adjacency (one sparse product per layer instead of edge-wise gathers and
    scatters: GRACE's epoch 3x faster on Coauthor-CS), else ``edge_index`` (no faster on Cora-sized graphs). The two
    are equal up to float rounding, which over a pretraining can pick another best epoch; the size rule keeps each
    graph on one path."""
    if not (use_adjacency(edge_index, num_nodes) if adjacency is None else adjacency):
        return edge_index
    return to_torch_csr_tensor(edge_index.flip(0), size=(num_nodes, num_nodes))


class GraceEncoder(nn.Module):
    """GRACE's encoder: ``GCNConv(F, 2h) → act → GCNConv(2h, h) → act``, plus the projection head.

    Args:
        in_dim: Node feature width F.
        hidden: Output width h.
        proj: Projection head width.
        activation: ``relu`` or ``prelu``.
    """

    def __init__(self, in_dim: int, hidden: int, proj: int, activation: str = "relu") -> None:
        super().__init__()
        if activation not in ("relu", "prelu"):
            raise ConfigError(f"GRACE activation {activation!r} is not valid; choose relu or prelu")
        self.conv1 = GCNConv(in_dim, 2 * hidden, cached=False)
        self.conv2 = GCNConv(2 * hidden, hidden, cached=False)
        self.act1 = nn.PReLU(2 * hidden) if activation == "prelu" else nn.ReLU()
        self.act2 = nn.PReLU(hidden) if activation == "prelu" else nn.ReLU()
        self.fc1 = nn.Linear(hidden, proj)
        self.fc2 = nn.Linear(proj, hidden)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Node embeddings ``[N, h]`` (what the probe reads)."""
        return self.act2(self.conv2(self.act1(self.conv1(x, edge_index)), edge_index))

    def project(self, z: Tensor) -> Tensor:
        """The projection head ``fc2(elu(fc1(z)))`` the contrastive loss compares."""
        return self.fc2(F.elu(self.fc1(z)))


def mask_columns(x: Tensor, rate: float) -> Tensor:
    """GRACE's feature masking: zero a random ``rate`` of the feature columns (the same for every node); a sparse
    ``x`` stays sparse (COO or CSR)."""
    if rate <= 0:
        return x
    keep = (torch.rand(x.shape[1], device=x.device) >= rate).to(x.dtype if x.is_floating_point() else torch.float)
    if x.layout == torch.sparse_csr:
        cols = x.col_indices()
        return torch.sparse_csr_tensor(x.crow_indices(), cols, x.values() * keep[cols], x.shape)
    if x.is_sparse:
        x = x.coalesce()
        return torch.sparse_coo_tensor(x.indices(), x.values() * keep[x.indices()[1]], x.shape).coalesce()
    return x * keep


def semi_loss(h1: Tensor, h2: Tensor, tau: float) -> Tensor:
    """GRACE's per-node InfoNCE of view 1 against view 2: ``-log(e^{s(i,i')/τ} / (Σ_j e^{s(i,j')/τ} +
    Σ_{j≠i} e^{s(i,j)/τ}))`` with cosine similarity ``s``."""
    a, b = F.normalize(h1, dim=1), F.normalize(h2, dim=1)
    refl = torch.exp(a @ a.T / tau)
    between = torch.exp(a @ b.T / tau)
    return -torch.log(between.diagonal() / (refl.sum(1) + between.sum(1) - refl.diagonal()))


def grace_loss(model: GraceEncoder, z1: Tensor, z2: Tensor, tau: float) -> Tensor:
    """The symmetric GRACE loss of two views' embeddings: the mean of :func:`semi_loss` both ways over nodes
    (the cross-view similarities are computed once and shared by both directions)."""
    a, b = F.normalize(model.project(z1), dim=1), F.normalize(model.project(z2), dim=1)
    between = torch.exp(a @ b.T / tau)
    pos = between.diagonal()
    losses = []
    for view, cross in ((a, between.sum(1)), (b, between.sum(0))):
        refl = torch.exp(view @ view.T / tau)
        losses.append(-torch.log(pos / (refl.sum(1) + cross - refl.diagonal())))
    return 0.5 * (losses[0] + losses[1]).mean()


def pretrain_grace(x: Tensor, edge_index: Tensor, settings: GraceSettings, epochs: int, seed: int = 0,
                   check_every: int = 0, score: Callable[[GraceEncoder], float] | None = None,
                   patience: int | None = None) -> tuple[GraceEncoder, dict[str, object]]:
    """Pretrain a GRACE encoder on a graph's features and edges (no labels anywhere).

    Args:
        x: ``[N, F]`` node features (dense, sparse COO or CSR; sparse ones run as CSR).
        edge_index: ``[2, E]`` edges.
        settings: Hyper-parameters.
        epochs: Training epochs (the most, with ``score``).
        seed: Seed of the initialisation, the views and the node sampling (the global RNG is left as it was).
        check_every: With ``score``: score the encoder after every this many epochs (and at the end) and return
            the best-scoring one (epoch 0, the untrained encoder, is scored too).
        score: Model selection on held-out data (e.g. a probe's accuracy on validation classes); higher is better.
        patience: Stop after this many checks without a better score.

    Returns:
        The encoder (in eval mode) and a record: ``epochs_run``, ``best_epoch``, ``checks`` (epoch, score), ``losses``
        (every 10th epoch's loss) and ``seconds`` (training time, scoring excluded).
    """
    import time

    if int(epochs) < 0:
        raise ConfigError(f"GRACE pretraining epochs must be >= 0, got {epochs}")
    x = as_csr(x.float() if x.layout != torch.sparse_csr else x.to(torch.float32))
    with seeded(seed, x.device):  # the CPU's and x's device's generators only, restored after
        model = GraceEncoder(x.shape[1], settings.hidden, settings.proj, settings.activation).to(x.device)
        opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        n = x.shape[0]
        adjacency = use_adjacency(edge_index, n)  # once: every dropped-edge view is a subset of these edges
        record: dict[str, object] = {"checks": [], "losses": [], "best_epoch": int(epochs)}
        best: tuple[float, int, dict[str, Tensor]] | None = None
        stale, seconds, epoch = 0, 0.0, 0

        def check(at: int) -> bool:
            nonlocal best, stale
            if score is None:
                return False
            model.eval()
            with torch.no_grad():
                value = float(score(model))
            record["checks"].append((at, value))  # type: ignore[union-attr]
            if best is None or value > best[0]:
                best, stale = (value, at, copy.deepcopy(model.state_dict())), 0
            else:
                stale += 1
            return patience is not None and stale >= patience

        stop = check(0) if check_every else False
        for epoch in range(1, int(epochs) + 1):
            if stop:
                epoch -= 1
                break
            t0 = time.perf_counter()
            model.train()
            opt.zero_grad()
            e1 = dropout_edge(edge_index, p=settings.drop_edge[0])[0]
            e2 = dropout_edge(edge_index, p=settings.drop_edge[1])[0]
            z1 = model(mask_columns(x, settings.drop_feature[0]), graph_operand(e1, n, adjacency))
            z2 = model(mask_columns(x, settings.drop_feature[1]), graph_operand(e2, n, adjacency))
            if n > settings.max_nodes:
                pick = torch.randperm(n, device=x.device)[: settings.max_nodes]
                z1, z2 = z1[pick], z2[pick]
            loss = grace_loss(model, z1, z2, settings.tau)
            loss.backward()
            opt.step()
            seconds += time.perf_counter() - t0
            if epoch % 10 == 0:
                record["losses"].append((epoch, float(loss.detach())))  # type: ignore[union-attr]
            if check_every and (epoch % check_every == 0 or epoch == int(epochs)):
                stop = check(epoch)
        record["epochs_run"] = epoch
        record["seconds"] = round(seconds, 3)
        if best is not None:
            model.load_state_dict(best[2])
            record["best_epoch"] = best[1]
        model.eval()
    return model, record


def embeddings(model: GraceEncoder, x: Tensor, edge_index: Tensor) -> Tensor:
    """The frozen encoder's node embeddings ``[N, h]`` on the full graph (no dropout, no masking)."""
    x = as_csr(x.float() if x.layout != torch.sparse_csr else x.to(torch.float32))
    model.eval()
    with torch.no_grad():
        return model(x, graph_operand(edge_index, int(x.shape[0])))


def min_max_scale(z: Tensor) -> Tensor:
    """Scale every column to ``[0, 1]`` over all nodes (TLP's ``MinMaxScaler`` before the probe); constant columns
    become 0."""
    lo, hi = z.min(0).values, z.max(0).values
    return (z - lo) / (hi - lo).where(hi > lo, torch.ones_like(hi))


__all__ = ["GraceEncoder", "GraceSettings", "TLP_SETTINGS", "embeddings", "grace_loss", "mask_columns",
           "min_max_scale", "pretrain_grace", "semi_loss", "settings_for"]
