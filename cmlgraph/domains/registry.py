"""Domain construction from a config, and the per-domain defaults of unset settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cmlgraph.config import TASKS, Config
from cmlgraph.errors import ConfigError

if TYPE_CHECKING:  # the defaults below are read by `cmlgraph train --help`, which must not import torch
    from cmlgraph.domains.base import Domain

#: Values used where the config leaves a setting ``None``; per domain, following each field's literature.
DOMAIN_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "sinusoid": {  # Finn et al. 2017
        "data": {"shots": 5, "queries": 10},
        "model": {"hidden": 40},
        "algo": {"inner_steps": 1, "inner_lr": 0.01, "co_depth": 0},
        "train": {"steps": 5000, "meta_batch": 25, "val_every": 250, "test_tasks": 600},
    },
    "graph": {
        "data": {"shots": 3, "queries": 10},
        "model": {"hidden": 64},
        "algo": {"inner_steps": 2, "inner_lr": 0.5, "co_depth": 0},
        "train": {"steps": 500, "meta_batch": 4, "val_every": 100, "test_tasks": 500},
    },
    "omniglot": {  # Finn et al. 2017, meta-batch reduced for CPUs
        "data": {"shots": 1, "queries": 5},
        "model": {"hidden": 64, "norm": "batch"},
        "algo": {"inner_steps": 1, "inner_lr": 0.4, "co_depth": 2},
        "train": {"steps": 1000, "meta_batch": 8, "val_every": 100, "test_tasks": 600},
    },
    "digits": {
        "data": {"shots": 1, "queries": 5},
        "model": {"hidden": 64, "norm": "batch"},
        "algo": {"inner_steps": 1, "inner_lr": 0.4, "co_depth": 2},
        "train": {"steps": 300, "meta_batch": 8, "val_every": 50, "test_tasks": 600},
    },
}


def fill_defaults(cfg: Config) -> Config:
    """Fill every ``None`` setting with the domain's default (in place) and return ``cfg``."""
    if cfg.data.task not in TASKS:
        raise ConfigError(f"unknown task {cfg.data.task!r}; valid tasks: {', '.join(TASKS)}")
    from cmlgraph.protocols import apply_protocol

    apply_protocol(cfg)  # a protocol preset fills unset settings before the domain's defaults do
    _tlp_encoder_defaults(cfg)
    if cfg.train.val_tasks is None:
        cfg.train.val_tasks = 100
    for section, values in DOMAIN_DEFAULTS[cfg.data.task].items():
        target = getattr(cfg, section)
        for key, value in values.items():
            if getattr(target, key) is None:
                setattr(target, key, value)
    if cfg.data.task == "sinusoid":
        cfg.data.ways = 1
    _start_defaults(cfg)
    _layers_default(cfg)
    _gnn_feature_defaults(cfg)
    _auto_feature_defaults(cfg)
    if cfg.train.meta_lr is None:
        cfg.train.meta_lr = META_LR
    return cfg


#: Adam's meta learning rate where nothing else sets it (MAML, Finn et al. 2017).
META_LR = 1e-3
#: The meta learning rate of a MAML-family graph run that starts at the training-free baseline (session 27).
START_META_LR = 1e-4


#: The graph methods whose encoder is TLP-FSNC's (G-Meta's ball GCN, AMM-GNN's matched GCN).
TLP_ENCODERS = ("gmeta", "ammgnn")

#: The published width of both TLP encoders (TLP-FSNC, the paper's Table 3 setting).
TLP_HIDDEN = 16


def _tlp_encoder_defaults(cfg: Config) -> None:
    """G-Meta and AMM-GNN without a protocol: the encoders' published input scale and width where unset.

    Their encoders (TLP's init, U(±1/√out) on weights *and* biases) were built for raw bag-of-words features. On
    the row-normalised features the MAML family gets by default, the biases swamp the features (Cora: embeddings of
    different nodes differ by 0.002 on a scale of 0.1) and every run scored exactly chance (Cora 2-way 1-shot,
    50 steps: G-Meta 50.4 %, AMM-GNN 53.7 %; with raw features and width 16: 58.6 %). So a registered dataset
    whose default is ``row`` gets ``raw`` here, as under ``--protocol tlp``, and the width is 16. A user's graph
    keeps its scale-safe default (:func:`cmlgraph.graphs.features.default_features`).
    """
    if cfg.data.task != "graph" or cfg.algo.algo not in TLP_ENCODERS or cfg.data.protocol is not None:
        return
    from cmlgraph.graphs.features import DATASET_FEATURES

    if cfg.data.features is None and DATASET_FEATURES.get(str(cfg.data.graph)) == "row":
        cfg.data.features = "raw"
    if cfg.model.hidden is None:
        cfg.model.hidden = TLP_HIDDEN


#: The algorithms whose graph runs start from the propagated features' geometry by default (issue 17).
MAML_FAMILY = ("maml", "anil", "boil", "maml++", "sharp-maml")
#: Metric-based methods whose graph runs get the same extractor start and feature scale (no head to start).
PROTO_START = ("protonet",)


def _start_defaults(cfg: Config) -> None:
    """Fill ``model.init``, ``model.normalize`` and ``algo.head_init`` (issue 17) and resolve ``init: auto``.

    A MAML-family graph run without a protocol starts where the training-free baselines are: a PCA-initialised SGC
    (``Â^K X`` projected on its principal axes), L2-normalised features and Proto-MAML heads (docs/baselines.md:
    measured on the five local graphs). ProtoNet on a graph gets the same extractor start and scale (it has no head):
    its prototypes then start near ``sgc-proto``'s class means (session 27: with the published random start it tested
    59.0 % on Cora 2-way 3-shot, below ``sgc-proto``'s 81.5 %; with this start 83.6 %). A protocol (the paper's
    settings), G-Meta, AMM-GNN and the other domains keep the published architecture: random init, raw features of
    the extractor, a learned head.
    """
    fresh = cfg.data.task == "graph" and cfg.algo.algo in MAML_FAMILY and cfg.data.protocol is None
    starts = fresh or (cfg.data.task == "graph" and cfg.algo.algo in PROTO_START and cfg.data.protocol is None)
    if cfg.model.init is None:
        cfg.model.init = "auto" if starts else "random"
    if cfg.model.init == "auto":
        cfg.model.init = "pca" if cfg.data.task == "graph" and cfg.model.gnn == "sgc" else "random"
    if cfg.model.normalize is None:
        cfg.model.normalize = starts
    if cfg.algo.head_init is None:
        cfg.algo.head_init = "proto" if fresh else "learned"
    if fresh and cfg.model.init == "pca" and cfg.train.meta_lr is None:
        # Session 27: from the start (sgc-proto's geometry) 1e-3 moved the model away from what transfers; 1e-4
        # tested higher on 10 of 12 graph-seed pairs (2 within 0.4 points below): docs/starting-at-the-baseline.md.
        # Only from the PCA start: a randomly initialised GNN has its features still to learn (not measured at 1e-4).
        cfg.train.meta_lr = START_META_LR


#: ``data.features`` of a MAML-family run with a randomly initialised GCN, GraphSAGE, GIN or GAT on a dataset whose
#: default is ``row``: ``standard`` where the densified features are small (at most 50 MB in float32), ``raw`` for
#: the large sparse bag-of-words (Coauthor-CS 0.5 GB, Cora-Full 0.7 GB, DBLP 1.2 GB, Amazon-Clothing 0.9 GB,
#: Amazon-Electronics 1.5 GB dense), where ``standard`` would densify them.
GNN_FEATURES = {"cora": "standard", "citeseer": "standard", "pubmed": "standard", "amazon-computers": "standard",
                "amazon-photo": "standard"}


def _gnn_feature_defaults(cfg: Config) -> None:
    """Unit-scale features for the MAML family's randomly initialised GNNs where ``data.features`` is unset.

    Why: on row-normalised bag-of-words (the registered datasets' default, right for SGC's PCA start) a random GCN's
    activations are about 0.01 while its biases start at 0; with L2-normalised features and Proto-MAML heads (the
    MAML family's start, issue 17) the first inner step moves the biases by far more than the features' signal
    (conv bias gradients about 9 against weights' 0.6 on Amazon-Photo), and every run starts and stays at chance:
    predictions at step 0 on 40 validation tasks of 2-way 3-shot were 0.50-0.51 for GCN on Cora, CiteSeer,
    Amazon-Computers and Coauthor-CS, 0.55-0.73 for SAGE and GIN, against 0.62-0.95 with unit-scale features
    (session 26; docs/algorithms-and-data.md). The same failure G-Meta's and AMM-GNN's encoders had
    (:func:`_tlp_encoder_defaults`). The resolved value is written into the run's config, so a run folder says
    which features it used; folders from before (``features: null`` with such a GNN) ran on ``row``
    (:func:`cmlgraph.graphs.features.pin_legacy_features`).
    """
    if (cfg.data.task != "graph" or cfg.data.features is not None or cfg.data.protocol is not None
            or cfg.algo.algo not in MAML_FAMILY or cfg.model.gnn == "sgc" or cfg.model.init != "random"):
        return  # (before importing the graph package: sinusoid and image runs never import PyG)
    from cmlgraph.graphs.features import DATASET_FEATURES

    if DATASET_FEATURES.get(str(cfg.data.graph)) == "row":
        cfg.data.features = GNN_FEATURES.get(str(cfg.data.graph), "raw")


#: Training-free methods whose graph runs choose their features on validation by default (``data.features auto``).
AUTO_FEATURE_BASELINES = ("sgc-proto",)


def _auto_feature_defaults(cfg: Config) -> None:
    """``data.features auto`` (:mod:`cmlgraph.domains.feature_choice`) where it is unset, for ``sgc-proto`` and the
    PCA-started SGC of the MAML family and ProtoNet (the issue-17 start: ``sgc-proto`` plus meta-learning), on the
    registered
    bag-of-words graphs whose standardised features are small (:data:`GNN_FEATURES`; Coauthor-CS and the large
    graphs keep ``row``: standardising them densifies 0.5-1.5 GB). No protocol (the paper's settings fix raw).

    Why: row-normalised and standardised features each win on some graphs, by up to 12 points for ``sgc-proto``
    (Cora 81.5 against 93.8), so the preprocessing is chosen on the run's validation tasks. Runs saved before this
    default (``features: null``) keep ``row`` (:func:`cmlgraph.graphs.features.pin_legacy_features`).
    """
    if cfg.data.task != "graph" or cfg.data.features is not None or cfg.data.protocol is not None:
        return
    start = cfg.algo.algo in (*MAML_FAMILY, *PROTO_START) and cfg.model.gnn == "sgc" and cfg.model.init == "pca"
    if (start or cfg.algo.algo in AUTO_FEATURE_BASELINES) and str(cfg.data.graph) in GNN_FEATURES:
        cfg.data.features = "auto"


def _layers_default(cfg: Config) -> None:
    """``model.layers`` where unset: left unset for the PCA-started SGC of a graph run, whose propagation depth is
    chosen on the run's validation tasks when its domain is built (:mod:`cmlgraph.domains.depth_choice`), else 2."""
    from cmlgraph.domains.depth_choice import DEFAULT_LAYERS, applies

    if cfg.model.layers is None and not applies(cfg):
        cfg.model.layers = DEFAULT_LAYERS


def build_domain(cfg: Config) -> Domain:
    """The domain a (defaults-filled) config asks for; data problems raise before any run folder exists.

    ``data.features auto`` on a graph: the domain of the features the run's validation tasks prefer
    (:func:`cmlgraph.domains.feature_choice.choose`); the record is ``domain.feature_choice`` and a note says it.
    ``model.layers`` unset (the PCA-started SGC): the depth they prefer (:func:`cmlgraph.domains.depth_choice.choose`,
    ``domain.depth_choice``), the config left unset.
    """
    if cfg.data.task == "graph" and cfg.model.layers is None:
        from cmlgraph.domains.depth_choice import choose as choose_depth

        return choose_depth(cfg, build_domain)
    if cfg.data.task == "graph" and cfg.data.features == "auto":
        from cmlgraph.domains.feature_choice import choose, note

        domain, record = choose(cfg, _build_domain)
        domain.feature_choice = record  # type: ignore[attr-defined]
        domain.notes.append(note(record))
        return domain
    return _build_domain(cfg)


def _build_domain(cfg: Config) -> Domain:
    task = cfg.data.task
    if task == "sinusoid":
        from cmlgraph.domains.sinusoid import SinusoidDomain

        hidden = tuple([int(cfg.model.hidden)] * cfg.model.layers)
        return SinusoidDomain(shots=int(cfg.data.shots), queries=int(cfg.data.queries), hidden=hidden)
    if task == "graph" and cfg.algo.algo in ("gmeta", "ammgnn"):
        from cmlgraph.domains.tlp_graph import TLPGraphDomain

        return TLPGraphDomain.from_config(cfg)
    if task == "graph":
        from cmlgraph.domains.graph import GraphDomain

        return GraphDomain.from_config(cfg)
    from cmlgraph.domains.images import ImageDomain

    return ImageDomain.from_config(cfg)
