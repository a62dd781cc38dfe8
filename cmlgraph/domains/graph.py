"""Few-shot node classification on a graph with a GNN extractor.

Episodes run on the full graph (the normalised adjacency and other graph-only precomputations are cached once
for the whole run) or, in k-hop mode (the default above a size threshold), only on the nodes each output depends
on: for GCN, SGC, SAGE and GIN the exact L-hop computation tree of the support and of the query nodes on the full
graph (full-graph normalisation, layer by layer shrinking, a meta-batch's tasks batched into one block-diagonal
pass); for GAT the k-hop subgraph around the episode. Sparse features stay sparse.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cmlgraph.backbones.gnn import (
    PLAN_AGGREGATION,
    WHOLE_GRAPH_KINDS,
    GNNBackbone,
    attach_plan,
    gnn_hops,
    plan_features,
    prepare_plan,
)
from cmlgraph.backbones.gnn_ops import CACHE_PREFIX, SELF_LOOPS_KEY, adjacency_rows, is_sparse, self_loop_edge_index
from cmlgraph.backbones.gnn_plan import Plan
from cmlgraph.backbones.plan_payload import SharedBlocks, unpack_plans
from cmlgraph.config import Config
from cmlgraph.core.episode import Episode
from cmlgraph.core.transfer import to_device
from cmlgraph.domains.base import Domain
from cmlgraph.errors import ConfigError
from cmlgraph.graphs import (
    EpisodeSampler,
    FewShotGraph,
    GraphInput,
    NodeEpisode,
    episode_input,
    episodes_from_state,
    episodes_to_state,
    load_graph,
)
from cmlgraph.graphs.auto_mode import choose_mode
from cmlgraph.graphs.features import with_features
from cmlgraph.graphs.fit_classes import fit_graph
from cmlgraph.graphs.storage import is_graph_file

if TYPE_CHECKING:
    from cmlgraph.train.build_processes import HostBuild

#: Graphs registered in memory by the Python API (``cmlgraph.fit``), looked up by name before the registry.
CUSTOM_GRAPHS: dict[str, FewShotGraph] = {}


#: Suffix of the name under which a user's graph named like a registered dataset is registered.
IN_MEMORY_SUFFIX = "-in-memory"


def register_graph(graph: FewShotGraph) -> str:
    """Make a user's graph loadable by name (``data.graph``) in this process; returns the name.

    A graph named like a registered dataset (``make_synthetic`` names its graphs ``synthetic``) is registered as
    ``<name>-in-memory``: under the dataset's own name it would shadow that dataset for the rest of the process,
    and a later run asking for the dataset (``graph="synthetic"``), or re-evaluating or predicting with a run
    trained on it, would silently get the user's graph instead.
    """
    from cmlgraph.graphs.registry import REGISTRY

    name = graph.name
    if str(name).strip().lower().replace("_", "-") in REGISTRY:
        name = f"{name}{IN_MEMORY_SUFFIX}"
    CUSTOM_GRAPHS[name] = graph
    return name


def compute_layout(x: Tensor, min_density: float = 0.05, max_dense_bytes: int = 256 * 2**20) -> Tensor:
    """Features in the faster layout for computing: sparse bag-of-words stays sparse, but a sparse matrix
    dense enough that BLAS beats sparse kernels (≥ ``min_density`` non-zeros, ≤ ``max_dense_bytes`` dense) is
    densified once. Amazon-Computers' features are 35% non-zero; Amazon-Clothing's 0.1% stay sparse."""
    if not x.is_sparse and x.layout == torch.strided:
        return x
    nnz = x._nnz() if x.layout == torch.sparse_coo else x.values().numel()
    numel = x.shape[0] * x.shape[1]
    if nnz >= min_density * numel and numel * x.element_size() <= max_dense_bytes:
        return x.to_dense()
    return x


def split_of(cfg: Config) -> Any:
    """The class split to load: ``data.split`` if given, else the protocol's (``tlp``), else the dataset's default."""
    if cfg.data.split is None and cfg.data.protocol == "tlp":
        from cmlgraph.protocols import tlp_split_for

        return tlp_split_for(cfg.data.graph)
    return cfg.data.split


def graph_of(cfg: Config) -> tuple[FewShotGraph, str]:
    """The run's graph as training sees it, and its feature preprocessing (``data.features`` resolved).

    A registered dataset is loaded with the config's (or protocol's) class split; a user's graph, in memory or
    saved with ``graph.save(PATH)`` and given as ``--graph PATH``, meets the episode settings (``fit_graph``:
    small classes dropped by their labels, a default split that fits ``ways``), the same in Python and the CLI.
    """
    d = cfg.data
    if d.graph in CUSTOM_GRAPHS:  # a user's graph meets the episode settings here (issue 12)
        graph = fit_graph(CUSTOM_GRAPHS[d.graph], d.ways, int(d.shots), int(d.queries), split=d.split,
                          seed=cfg.train.seed)
    elif is_graph_file(d.graph) and (saved := load_graph(d.graph)).info.get("custom"):
        graph = fit_graph(saved, d.ways, int(d.shots), int(d.queries), split=d.split, seed=cfg.train.seed)
    else:
        options: dict[str, Any] = {}
        if d.graph == "synthetic":
            options = {"num_nodes": d.synthetic_nodes, "num_classes": d.synthetic_classes}
        graph = load_graph(d.graph, d.data_root, allow_partial=d.allow_partial, split=split_of(cfg),
                           seed=cfg.train.seed, **options)
    return with_features(graph, d.features)


#: Guards :meth:`GraphDomain._full_graph`'s one build per device (at module level: a lock does not pickle).
GRAPH_BUILD_LOCK = threading.RLock()


class GraphDomain(Domain):
    """N-way K-shot node classification over disjoint train/val/test classes of one graph.

    Args:
        graph: The few-shot graph.
        ways: Classes per task.
        shots: Support nodes per class.
        queries: Query nodes per class.
        gnn: GNN kind.
        hidden: GNN width.
        layers: GNN layers.
        dropout: GNN dropout.
        heads: GAT heads.
        subgraph: ``auto``, ``full`` or ``khop``.
        threshold: ``auto`` switches to k-hop subgraphs above this many nodes.
        episodes: Build the train/val/test episode samplers (``False``: materialize given episodes only).
        test_queries: Query nodes per class of test tasks (default: ``queries``).
        bias: SGC: a bias in its linear layer (``False`` with ``model.init pca``; see :class:`GNNBackbone`).
    """

    task = "graph"
    metric = "accuracy"
    features = "raw"

    def __init__(self, graph: FewShotGraph, ways: int, shots: int, queries: int, *, gnn: str = "gcn",
                 hidden: int = 64, layers: int = 2, dropout: float = 0.0, heads: int = 4, subgraph: str = "auto",
                 threshold: int = 20_000, test_queries: int | None = None, episodes: bool = True,
                 bias: bool = True) -> None:
        self.graph = graph
        self.name = graph.name
        self.out_dim = ways
        self.ways, self.shots, self.queries = ways, shots, queries
        self.gnn = dict(kind=gnn, hidden=hidden, layers=layers, dropout=dropout, heads=heads, bias=bias)
        self.partial = bool(graph.partial)
        self.notes = list(graph.notes)
        extractor = self.build_extractor()
        # Built now, so impossible settings (too few classes, classes too small) fail before a run folder exists.
        # ``episodes=False`` (prediction on a user's task, cmlgraph.predict) builds none: nothing is sampled.
        self.samplers = {}
        for split in ("train", "val", "test") if episodes else ():
            try:
                q = test_queries if split == "test" and test_queries else queries
                self.samplers[split] = EpisodeSampler(graph.y, graph.episode_classes(split), ways, shots, q,
                                                      torch.Generator())
            except ConfigError as exc:
                raise ConfigError(f"{graph.name}, {split} classes: {exc}") from None
        self.mode, self.mode_reason = subgraph, "data.subgraph"
        if subgraph == "auto" and not episodes:
            # A prediction task queries every node, so its neighbourhood is the whole graph.
            self.mode, self.mode_reason = "full", "prediction over every node of the graph"
        elif subgraph == "auto":
            self.mode, self.mode_reason = choose_mode(graph, self.samplers["train"], hops=gnn_hops(extractor),
                                                      trees=extractor.supports_plan, threshold=threshold,
                                                      kind=gnn)
            self.notes.append(f"subgraph auto: {self.mode} ({self.mode_reason})")
        # k-hop mode: exact computation trees on the full graph (L hops, batched over tasks) where the GNN kind
        # has that path; otherwise (GAT) the k-hop subgraph around the episode.
        self.trees = self.mode == "khop" and extractor.supports_plan
        self.hops = gnn_hops(extractor, exact=not self.trees) if self.mode == "khop" else None
        self._full: dict[str, tuple[Tensor, Tensor, dict[str, Any]]] = {}

    @classmethod
    def from_config(cls, cfg: Config) -> GraphDomain:
        """Load ``data.graph`` (a registered or in-memory graph) and build the domain."""
        d, m = cfg.data, cfg.model
        graph, features = graph_of(cfg)
        domain = cls(graph, d.ways, int(d.shots), int(d.queries), gnn=m.gnn, hidden=int(m.hidden), layers=m.layers,
                     dropout=m.dropout, heads=m.gat_heads, subgraph=d.subgraph, threshold=d.subgraph_threshold,
                     test_queries=d.test_queries, bias=m.init != "pca")
        domain.features = features
        return domain

    def build_extractor(self) -> GNNBackbone:
        """A fresh GNN on the graph's features."""
        g = self.gnn
        return GNNBackbone(g["kind"], self.graph.num_features, hidden=g["hidden"], layers=g["layers"],
                           dropout=g["dropout"], heads=g["heads"], bias=g["bias"])

    def init_extractor(self, extractor: GNNBackbone) -> None:
        """``model.init pca``: SGC's weight from the principal axes of this graph's ``Â^K X`` (no labels read;
        :mod:`cmlgraph.backbones.pca_init`). The axes are cached on the domain: loading a run folder's weights
        over a fresh model (eval, predict) computes them once."""
        from cmlgraph.backbones.pca_init import load_axes_, sgc_axes

        key = (extractor.hops, extractor.feature_dim)
        cache = self.__dict__.setdefault("_pca_axes", {})
        if key not in cache:
            cache[key] = sgc_axes(extractor, self.graph.x, self.graph.edge_index, self.graph.num_nodes)
        load_axes_(extractor, cache[key])

    def sample(self, split: str, n: int, generator: torch.Generator) -> list[NodeEpisode]:
        """``n`` node episodes of a split drawn from ``generator``."""
        sampler = self.samplers[split]
        return [sampler.sample(generator) for _ in range(n)]

    def distinct_tasks(self, split: str) -> int:
        """The number of distinct episodes of a split (exact: its classes' labelled-node counts)."""
        return self.samplers[split].num_distinct()

    def _full_graph(self, device: torch.device | str) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """The whole graph on ``device`` (features, edges, the per-graph cache every episode shares), built once.

        Built under a lock: a prefetch worker and the main thread (or two workers) materializing their first
        episodes at once would otherwise each build a copy, and episodes of different copies do not stack (their
        tasks then run one by one, to other float rounding: found in session 38)."""
        key = str(device)
        with GRAPH_BUILD_LOCK:
            if key not in self._full:
                x = compute_layout(self.graph.x)
                if x.layout == torch.sparse_coo:
                    x = x.coalesce().to_sparse_csr()  # fast row slicing for computation trees; same values
                self._full[key] = (x.to(device), self.graph.edge_index.to(device), {})
            return self._full[key]

    #: :func:`cmlgraph.embed` embeds this many nodes per pass (``None``: all in one whole-graph pass).
    embed_chunk: int | None = None

    def node_input(self, nodes: Tensor, device: torch.device | str = "cpu") -> GraphInput:
        """The extractor's input for ``nodes`` outside any task (:func:`cmlgraph.embed`): the whole graph."""
        x, ei, cache = self._full_graph(device)
        return GraphInput(x, ei, nodes.to(device), cache)

    def materialize(self, raw: NodeEpisode, device: torch.device | str = "cpu") -> Episode:
        """Support and query inputs over the full graph or the episode's k-hop subgraph."""
        ns = raw.support.numel()
        if self.trees:
            return Episode(self.tree_input(raw.support, device), to_device(raw.support_y, device),
                           self.tree_input(raw.query, device), to_device(raw.query_y, device))
        if self.mode == "full":
            x, ei, cache = self._full_graph(device)
            nodes = to_device(torch.cat([raw.support, raw.query]), device)
        else:
            inp = episode_input(self.graph, torch.cat([raw.support, raw.query]), self.hops)
            x, ei, cache = to_device(inp.x, device), to_device(inp.edge_index, device), inp.cache
            nodes = to_device(inp.nodes, device)
            if self.gnn["kind"] == "gat":  # its self-looped edges, built on the host (no device syncs, issue 18)
                host = GraphInput(inp.x, inp.edge_index, inp.nodes, {})
                cache[CACHE_PREFIX + SELF_LOOPS_KEY] = to_device(self_loop_edge_index(host), device)
        # whole-graph tasks batch: SGC's as gathered propagated rows, GCN's/SAGE's/GIN's/GAT's as one pass for all
        # tasks; GAT's k-hop subgraphs as one pass over their disjoint union
        whole = self.mode == "full" and self.gnn["kind"] in ("sgc", *WHOLE_GRAPH_KINDS)
        sub = self.mode == "khop"
        # every per-episode copy pinned and non_blocking (to_device): a plain .to("cuda") from pageable memory
        # synchronises the stream (cudaStreamSynchronize), so the prefetch worker would wait for the running step
        return Episode(GraphInput(x, ei, nodes[:ns], cache, batch_whole=whole, subgraph=sub),
                       to_device(raw.support_y, device),
                       GraphInput(x, ei, nodes[ns:], cache, batch_whole=whole, subgraph=sub),
                       to_device(raw.query_y, device))

    def tree_input(self, nodes: Tensor, device: torch.device | str = "cpu", plan: Plan | None = None) -> GraphInput:
        """A computation-tree input of ``nodes`` whose plan is built on the host now (issue 18 item 2).

        The plan's level sizes are read on the host: from CPU tensors (the graph's own ``x`` and ``edge_index``,
        with a CPU adjacency cached on the domain) that costs no device sync, and the finished plan travels to
        ``device`` pinned and ``non_blocking`` (:func:`cmlgraph.backbones.gnn.prepare_plan`). Run ahead by the
        prefetch worker (:mod:`cmlgraph.train.prefetch`), the device-side step then has no plan syncs. On the CPU
        the plan is the one the backbone would build on its first forward. ``plan``: the plan, built already
        by a prefetch build process and on the device (:meth:`finish_trees`).
        """
        x, ei, cache = self._full_graph(device)
        g = GraphInput(x, ei, to_device(nodes, device), cache, local=True)
        kind = self.gnn["kind"]
        if plan is not None:  # built by a prefetch build process (host_build), on the device already
            attach_plan(g, kind, self.gnn["layers"], plan, moved=True)
        else:
            prepare_plan(g, self.host_input(g, nodes), kind, self.gnn["layers"], complete=self._complete_plans())
        return g

    def _complete_plans(self) -> bool:
        """Whether plans list their input level (input dropout of GCN, SAGE and GIN in training)."""
        return self.gnn["kind"] != "sgc" and self.gnn["dropout"] > 0

    def host_build(self, device: torch.device | str, workers: int = 1) -> HostBuild | None:
        """How prefetch worker processes build this domain's episodes (``train.prefetch_workers`` > 1): the k-hop
        computation-tree plans, whose many small host ops gain nothing from threads (issue 18). ``None`` without
        plans (full graph, GAT subgraphs): their builds stay in threads.

        The processes get the graph's CPU aggregation matrix once (:class:`~cmlgraph.domains.tree_builds.
        TreePlanBuilder`), then each meta-batch's node ids with one of ``workers + 1`` shared-memory blocks of the
        run (:class:`~cmlgraph.backbones.plan_payload.SharedBlocks`: at most ``workers`` batches are in flight)
        to write its packed plans into; :meth:`finish_trees` attaches them on the run's device, equal to
        :meth:`tree_input`'s. The blocks are unlinked by the returned build's ``close``."""
        if not self.trees:
            return None
        from cmlgraph.domains.tree_builds import TreePlanBuilder
        from cmlgraph.train.build_processes import HostBuild

        x, ei, cache = self._full_graph(device)
        empty = torch.empty(0, dtype=torch.long)
        host = self.host_input(GraphInput(x, ei, to_device(empty, device), cache, local=True), empty)
        kind = self.gnn["kind"]
        builder = TreePlanBuilder(host, adjacency_rows(host, PLAN_AGGREGATION[kind]), kind, self.gnn["layers"],
                                  self._complete_plans(), is_sparse(plan_features(GraphInput(x, ei, empty, cache))))
        blocks = SharedBlocks(workers + 1)
        return HostBuild(builder,
                         send=lambda raws: ([(r.support.numpy(), r.query.numpy()) for r in raws], blocks.acquire()),
                         finish=lambda raws, built: self.finish_trees(raws, built, device, blocks),
                         close=blocks.close)

    def finish_trees(self, raws: list[NodeEpisode], built: tuple[int | None, dict[str, Any], list[dict[str, Any]]],
                     device: torch.device | str = "cpu", blocks: SharedBlocks | None = None) -> list[Episode]:
        """The episodes :meth:`materialize` gives, from their support and query plans built elsewhere and packed
        (:meth:`host_build`'s processes, in block ``built[0]`` of ``blocks``, which is read and freed here): each
        dtype's buffer copied to ``device`` once."""
        x, ei, cache = self._full_graph(device)
        index, payload, specs = built
        if index is not None and blocks is not None:
            buffers: dict[str, Any] = blocks.read(index, payload, x.device)
        else:
            buffers = payload["buffers"]
        features = plan_features(GraphInput(x, ei, x.new_empty(0, dtype=torch.long), cache))
        plans = iter(unpack_plans(buffers, specs, features))
        return [Episode(self.tree_input(r.support, device, next(plans)), to_device(r.support_y, device),
                        self.tree_input(r.query, device, next(plans)), to_device(r.query_y, device)) for r in raws]

    def host_input(self, g: GraphInput, nodes: Tensor) -> GraphInput:
        """``g`` itself when it is on the CPU; else the same graph and ``nodes`` as CPU tensors, for building
        layouts on the host (its per-graph caches, e.g. the CPU adjacency, are kept on the domain)."""
        if g.x.device.type == "cpu":
            return g
        return GraphInput(self.graph.x, self.graph.edge_index, nodes.cpu(), self.__dict__.setdefault("_host_cache", {}),
                          local=True)

    def to_state(self, raws: list[NodeEpisode]) -> dict[str, Tensor]:
        """Stacked node ids and labels of the episodes."""
        return episodes_to_state(raws)

    def from_state(self, state: dict[str, Tensor]) -> list[NodeEpisode]:
        """Inverse of :meth:`to_state`."""
        return episodes_from_state(state)

    def class_ids(self) -> dict[str, list[int]]:
        """The original class ids of each split (``summary.json``'s ``classes``)."""
        return {k: [int(c) for c in self.graph.splits.get(k, [])] for k in ("train", "val", "test")}

    def class_labels(self) -> dict[str, list[Any]] | None:
        """The user's labels of each split's classes for a custom graph (``summary.json``'s ``class_labels``).

        ``classes`` holds internal ids ``0..C-1`` (labels in sorted order); these are the labels the user gave,
        made JSON-safe (tuples become lists, other objects their ``str``). ``None`` for graphs without label names.
        """
        names = self.graph.info.get("class_names")
        if names is None:
            return None
        return {k: [_json_label(names[int(c)]) for c in self.graph.splits.get(k, [])]
                for k in ("train", "val", "test")}

    def describe(self) -> dict[str, Any]:
        """Facts for the summary."""
        return {**super().describe(), "ways": self.ways, "shots": self.shots, "queries": self.queries,
                "mode": self.mode, "mode_reason": self.mode_reason, "features": self.features,
                **({"feature_choice": self.feature_choice} if getattr(self, "feature_choice", None) else {}),
                "layers": self.gnn["layers"],
                **({"depth_choice": self.depth_choice} if getattr(self, "depth_choice", None) else {}),
                "computation_trees": self.trees, "hops": self.hops, "nodes": self.graph.num_nodes,
                "classes": {k: len(v) for k, v in self.graph.splits.items()}}


def _json_label(label: Any) -> Any:
    """A class label as JSON keeps it: str/int/float/bool as they are, tuples and lists item by item, else str."""
    if isinstance(label, (str, bool, int, float)) or label is None:
        return label.item() if hasattr(label, "item") else label
    if hasattr(label, "item") and getattr(label, "ndim", 1) == 0:  # numpy / torch scalars
        return label.item()
    if isinstance(label, (tuple, list)):
        return [_json_label(v) for v in label]
    return str(label)
