"""Node classification with the paper's graph base methods, G-Meta and AMM-GNN as TLP codes them (Table 3).

Why a domain of its own: both methods read the graph through their own encoder input, not a plain
:class:`GraphInput`: G-Meta embeds each node from its 2-hop ball (:class:`~cmlgraph.graphs.balls.BallInput`),
AMM-GNN needs the task's attribute-matching draws (:class:`~cmlgraph.backbones.ammgnn.MatchedInput`). Episodes,
class splits, samplers and evaluation are the graph domain's. Support inputs carry ``dropout=True`` (TLP applies
dropout on support passes only, in training).

AMM-GNN's two draws of ``k`` nodes come from a generator seeded by the episode's node ids, so a fixed episode
always gets the same draws (evaluation sets, resumed runs). A task with fewer than ``k`` nodes draws with
replacement.
"""

from __future__ import annotations

from typing import Any

import torch

from cmlgraph.backbones.ammgnn import MATCH_ROWS_KEY, MatchedGCN, MatchedInput, match_rows, prepare_rownorm_plan
from cmlgraph.backbones.base import Backbone
from cmlgraph.backbones.gmeta import BallGCN, ball_layout, prepare_ball_batch
from cmlgraph.config import Config
from cmlgraph.core.episode import Episode, can_stack
from cmlgraph.core.transfer import to_device
from cmlgraph.domains.graph import GRAPH_BUILD_LOCK, GraphDomain, compute_layout, graph_of
from cmlgraph.errors import ConfigError
from cmlgraph.graphs import FewShotGraph, GraphInput, NodeEpisode
from cmlgraph.graphs.balls import BallIndex, BallInput

KINDS = ("gmeta", "ammgnn")


def match_draws(nodes: torch.Tensor, k: int, draws: int = 2) -> torch.Tensor:
    """``draws`` independent draws of ``k`` of ``nodes`` (without replacement when there are enough), seeded by
    the node ids: ``LongTensor[draws, k]``."""
    seed = int((nodes.long().cpu() * 2_654_435_761 + 97).remainder(2**61 - 1).sum()) % (2**61 - 1)
    gen = torch.Generator().manual_seed(seed)
    n = nodes.numel()
    picks = [torch.randperm(n, generator=gen)[:k] if n >= k else torch.randint(n, (k,), generator=gen)
             for _ in range(draws)]
    return nodes.cpu()[torch.stack(picks)]


class TLPGraphDomain(GraphDomain):
    """The graph domain with G-Meta's or AMM-GNN's encoder (TLP variants).

    Args:
        graph: The few-shot graph.
        ways, shots, queries: Episode shape.
        kind: ``gmeta`` or ``ammgnn``.
        hidden: GCN width (16 in the paper).
        layers: GCN depth; must be 2 (the 2-hop ball / computation tree).
        dropout: Dropout after the first layer (0.5 in TLP), support passes only.
        test_queries: Query nodes per class of test tasks (TLP: 10).
        match_size: AMM-GNN's nodes per draw (10).
        episodes: Build the episode samplers (``False``: prediction on given episodes, as for the graph domain).

    Raises:
        ConfigError: Unknown kind or ``layers != 2``.
    """

    def __init__(self, graph: FewShotGraph, ways: int, shots: int, queries: int, *, kind: str, hidden: int = 16,
                 layers: int = 2, dropout: float = 0.5, test_queries: int | None = None,
                 match_size: int = 10, episodes: bool = True) -> None:
        if kind not in KINDS:
            raise ConfigError(f"unknown encoder kind {kind!r}; valid: {', '.join(KINDS)}")
        if layers != 2:
            raise ConfigError(f"--algo {kind} uses TLP's 2-layer GCN on 2-hop balls; got --layers {layers}; "
                              f"use --layers 2")
        self.kind, self.match_size = kind, match_size
        self._index: dict[str, BallIndex] = {}
        super().__init__(graph, ways, shots, queries, gnn="gcn", hidden=hidden, layers=layers, dropout=dropout,
                         subgraph="full", test_queries=test_queries, episodes=episodes)

    @classmethod
    def from_config(cls, cfg: Config) -> TLPGraphDomain:
        """Load ``data.graph`` with the config's (or protocol's) class split and build the domain."""
        d, m = cfg.data, cfg.model
        graph, features = graph_of(cfg)
        domain = cls(graph, d.ways, int(d.shots), int(d.queries), kind=cfg.algo.algo, hidden=int(m.hidden),
                     layers=m.layers, dropout=m.dropout, test_queries=d.test_queries)
        domain.features = features
        return domain

    def build_extractor(self) -> Backbone:  # type: ignore[override]
        """A fresh G-Meta or AMM-GNN encoder on the graph's features."""
        g = self.gnn
        if self.kind == "gmeta":
            return BallGCN(self.graph.num_features, hidden=g["hidden"], dropout=g["dropout"])
        return MatchedGCN(self.graph.num_features, hidden=g["hidden"], dropout=g["dropout"],
                          match_size=self.match_size)

    def ball_index(self, device: torch.device | str = "cpu") -> BallIndex:
        """The graph's ball index (features on ``device``), built once per device (under the lock of the whole
        graph's build: a second index built by another thread at once would hold other balls' caches, and inputs of
        two indexes do not stack)."""
        key = str(device)
        with GRAPH_BUILD_LOCK:
            if key not in self._index:
                x = compute_layout(self.graph.x)
                if x.layout == torch.sparse_coo:
                    x = x.coalesce().to_sparse_csr()
                # host_x: sparse rows are sliced on the host (a selection on the device reads its entry count back)
                self._index[key] = BallIndex(x.to(device), self.graph.edge_index, hops=2, host_x=x)
            return self._index[key]

    def materialize(self, raw: NodeEpisode, device: torch.device | str = "cpu") -> Episode:
        """Support and query inputs of the encoder; support passes use dropout in training."""
        sy, qy = to_device(raw.support_y, device), to_device(raw.query_y, device)
        if self.kind == "gmeta":
            index = self.ball_index(device)
            return Episode(BallInput(index, raw.support, dropout=True), sy, BallInput(index, raw.query), qy)
        x, ei, cache = self._full_graph(device)
        drawn = match_draws(torch.cat([raw.support, raw.query]), self.match_size)
        match = to_device(drawn, device)
        s = GraphInput(x, ei, to_device(raw.support, device), cache, local=True)
        q = GraphInput(x, ei, to_device(raw.query, device), cache, local=True)
        for g, nodes in ((s, raw.support), (q, raw.query)):  # plans built on the host (issue 18 item 2)
            prepare_rownorm_plan(g, self.host_input(g, nodes))
        # the drawn nodes' feature rows, gathered on the host too (a sparse row selection syncs on the device)
        rows = to_device(match_rows(self.host_input(s, raw.support), drawn), device)
        return Episode(MatchedInput(s, match, dropout=True, memo={MATCH_ROWS_KEY: rows}), sy,
                       MatchedInput(q, match, memo={MATCH_ROWS_KEY: rows}), qy)

    def prepare_batch(self, episodes: list[Episode], batched: bool | None = None) -> None:
        """G-Meta: the ball layouts of these episodes (ball members, block-diagonal matrices, union features),
        host work on the CPU ball index, built here in the prefetch worker instead of inside the meta-step
        (issue 18 item 2). Stacked as the step will stack them (the same inputs in the same order find this
        batch's memo again, :meth:`~cmlgraph.graphs.balls.BallInput.stack_tasks`), else per input. AMM-GNN's
        plans are built in :meth:`materialize` already."""
        if self.kind != "gmeta" or not episodes:
            return
        if batched is not False and len(episodes) > 1 and can_stack(episodes):
            for side in ("support_x", "query_x"):
                items = [getattr(ep, side) for ep in episodes]
                prepare_ball_batch(BallInput.stack_tasks(items))
        else:
            for ep in episodes:
                for inputs in (ep.support_x, ep.query_x):
                    ball_layout([inputs], inputs.memo)

    #: :func:`cmlgraph.embed` embeds this many nodes per pass (G-Meta's balls of all nodes at once can be huge).
    embed_chunk = 512

    def node_input(self, nodes: torch.Tensor, device: torch.device | str = "cpu") -> Any:
        """The encoder's input for ``nodes`` outside any task (:func:`cmlgraph.embed`): G-Meta's ball means; for
        AMM-GNN the attribute-matching draws are taken from ``nodes`` themselves (seeded by their ids), as a
        task's draws are taken from its own nodes."""
        if self.kind == "gmeta":
            return BallInput(self.ball_index(device), nodes)
        x, ei, cache = self._full_graph(device)
        g = GraphInput(x, ei, nodes.to(device), cache, local=True)
        return MatchedInput(g, match_draws(nodes, self.match_size).to(device))

    def describe(self) -> dict[str, Any]:
        """Facts for the summary."""
        return {**super().describe(), "encoder": self.kind, "mode": "balls" if self.kind == "gmeta" else "full"}


__all__ = ["KINDS", "TLPGraphDomain", "match_draws"]
