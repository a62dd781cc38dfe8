"""Feature preprocessing (``data.features``): ``raw``, ``row`` (L1 row-normalised) or ``standard`` (z-score).

Why: a GNN meta-learned with a fixed inner step size (α = 0.5 by default) only trains when the features are on a
scale of about 1. Bag-of-words citation and product graphs are row-normalised by GCN (Kipf & Welling 2017, their
``preprocess_features``) and by Meta-GNN (Zhou et al. 2019), which reuses that code; cmlgraph's MAML on Cora 2-way
matches Meta-GNN only with row-normalised features (issue 12). Features with values in the tens, unscaled, make
the first inner step overshoot and training stays at chance, so user graphs get a scale-safe default too.

Every mode keeps sparse features sparse except ``standard``, which centres each column and so densifies (refused
above :data:`MAX_DENSE_BYTES`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from cmlgraph.errors import ConfigError
from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.sparse import is_sparse, to_coo

FEATURE_MODES = ("raw", "row", "standard")

#: The literature's preprocessing of each registered dataset: row-normalised bag-of-words (GCN, Meta-GNN) for the
#: citation, co-authorship and product graphs; OGB's features (word2vec means, PCA) and the synthetic graph's
#: Gaussian features are already on a unit scale and are used as given.
DATASET_FEATURES: dict[str, str] = {
    "amazon-clothing": "row", "amazon-electronics": "row", "dblp": "row",
    "cora": "row", "citeseer": "row", "pubmed": "row",
    "coauthor-cs": "row", "amazon-computers": "row", "amazon-photo": "row", "cora-full": "row",
    "ogbn-arxiv": "raw", "ogbn-products": "raw", "synthetic": "raw",
}

#: ``standard`` on sparse features densifies them; refused above this size (bytes of the dense float32 matrix).
MAX_DENSE_BYTES = 1 << 30


def default_features(graph: FewShotGraph) -> str:
    """The preprocessing a graph gets when ``data.features`` is unset.

    Registered datasets: :data:`DATASET_FEATURES`. A user's graph: ``row`` for sparse features (bag-of-words
    counts), ``standard`` for dense ones (continuous measurements of any scale).
    """
    if graph.name in DATASET_FEATURES and not graph.info.get("custom"):
        return DATASET_FEATURES[graph.name]
    return "row" if graph.sparse_features else "standard"


def row_normalise(x: Tensor) -> Tensor:
    """Divide each row by the sum of its absolute values (rows of zeros stay zero); sparse stays sparse."""
    if is_sparse(x):
        x = to_coo(x).coalesce()
        idx, val = x.indices(), x.values()
        sums = torch.zeros(x.shape[0], dtype=val.dtype).index_add_(0, idx[0], val.abs())
        scale = torch.where(sums > 0, 1.0 / sums.clamp_min(1e-30), torch.zeros_like(sums))
        return torch.sparse_coo_tensor(idx, val * scale[idx[0]], x.shape).coalesce()
    sums = x.abs().sum(dim=1, keepdim=True)
    return torch.where(sums > 0, x / sums.clamp_min(1e-30), torch.zeros_like(x))


def standardise(x: Tensor) -> Tensor:
    """Per-column z-score ``(x - mean) / std`` over all nodes; constant columns become 0.

    Raises:
        ConfigError: Sparse features whose dense matrix would exceed :data:`MAX_DENSE_BYTES`.
    """
    if is_sparse(x):
        dense_bytes = x.shape[0] * x.shape[1] * 4
        if dense_bytes > MAX_DENSE_BYTES:
            raise ConfigError(f"features: standard would densify the {x.shape[0]} x {x.shape[1]} sparse features "
                              f"({dense_bytes / 2**30:.1f} GiB); use features row (or raw)")
        x = to_coo(x).to_dense()
    mean = x.mean(dim=0, keepdim=True)
    std = x.std(dim=0, unbiased=False, keepdim=True)
    return torch.where(std > 0, (x - mean) / std.clamp_min(1e-30), torch.zeros_like(x))


def preprocess(x: Tensor, mode: str) -> Tensor:
    """Features ``[N, F]`` preprocessed by ``mode`` (``raw``, ``row`` or ``standard``).

    Raises:
        ConfigError: An unknown mode (the valid ones are listed).
    """
    if mode not in FEATURE_MODES:
        raise ConfigError(f"data.features {mode!r} is unknown; use one of {', '.join(FEATURE_MODES)}")
    if mode == "row":
        return row_normalise(x)
    if mode == "standard":
        return standardise(x)
    return x


def with_features(graph: FewShotGraph, mode: str | None) -> tuple[FewShotGraph, str]:
    """The graph with preprocessed features (``mode`` None: :func:`default_features`) and the mode used.

    The returned graph shares edges, labels and split with ``graph`` (``graph`` itself is not changed); its
    per-graph cache starts empty because cached values may depend on the features.
    """
    mode = mode or default_features(graph)
    if mode == "auto":
        raise ConfigError("data.features auto is resolved when the run's domain is built (build_domain), not by "
                          "with_features; give row, standard or raw here")
    if mode == "raw":
        return graph, mode
    info = {**graph.info, "features": mode}
    return dataclasses.replace(graph, x=preprocess(graph.x, mode), info=info, full_graph_cache={}), mode


def pin_legacy_features(cfg: Any, saved: Any) -> Any:
    """A run folder's config written before a setting existed ran with that setting's old behaviour: say so.

    ``data.features`` (before it: raw features), and the start of issue 17 (before it: ``model.init random``,
    ``model.normalize false``, ``algo.head_init learned``). Without this a re-evaluated or resumed old run would get
    today's defaults (e.g. ``row`` on Cora, a PCA-initialised extractor) silently.

    Args:
        cfg: The :class:`~cmlgraph.config.Config` read from the folder's ``config.yaml`` (changed in place).
        saved: That file's parsed YAML mapping.
    """
    data = saved.get("data") if isinstance(saved, dict) else None
    if isinstance(data, dict) and "features" not in data:
        cfg.data.features = "raw"
    elif (isinstance(data, dict) and data.get("features") is None and cfg.data.features is None
          and cfg.data.protocol is None and str(cfg.data.graph) in DATASET_FEATURES and _default_changed(cfg)):
        cfg.data.features = DATASET_FEATURES[str(cfg.data.graph)]
    model = saved.get("model") if isinstance(saved, dict) else None
    if isinstance(model, dict) and "init" not in model:
        cfg.model.init, cfg.model.normalize = "random", False
    algo = saved.get("algo") if isinstance(saved, dict) else None
    if isinstance(algo, dict) and "head_init" not in algo:
        cfg.algo.head_init = "learned"
    return cfg


def _default_changed(cfg: Any) -> bool:
    """Whether a saved config with ``data.features`` unset ran on the dataset's default, which today's defaults no
    longer give it (:mod:`cmlgraph.domains.registry`): G-Meta and AMM-GNN (raw since issue 17), a MAML-family
    randomly initialised GNN (unit scale since session 26), ``sgc-proto`` and a MAML-family SGC on a graph of
    ``GNN_FEATURES`` (chosen on validation, ``auto``, since session 27)."""
    from cmlgraph.domains.registry import AUTO_FEATURE_BASELINES, GNN_FEATURES, MAML_FAMILY, TLP_ENCODERS

    algo, sgc = cfg.algo.algo, str(cfg.model.gnn or "sgc") == "sgc"
    if algo in TLP_ENCODERS or (algo in MAML_FAMILY and not sgc):
        return True
    return str(cfg.data.graph) in GNN_FEATURES and (algo in AUTO_FEATURE_BASELINES or algo in MAML_FAMILY)


def run_features(cfg: Any, run_dir: Any) -> Any:
    """``cfg`` with ``data.features`` set to the preprocessing the run folder's ``summary.json`` says the run used
    (``auto``: what it chose, :mod:`cmlgraph.domains.feature_choice`; unset: the graph's default it resolved), so
    that re-evaluating or predicting with a trained model reads the features it was trained on without choosing
    again; likewise an unset ``model.layers`` gets the propagation depth the run chose. A folder without a summary
    keeps its config's values. ``cfg`` is changed in place and returned."""
    import json
    from pathlib import Path

    summary = Path(run_dir) / "summary.json"
    if summary.is_file():
        record = json.loads(summary.read_text())
        used = record.get("features")
        if used in FEATURE_MODES:
            cfg.data.features = used
        depth = record.get("layers")  # model.layers unset: the depth the run chose (domains/depth_choice.py)
        if getattr(cfg.model, "layers", 0) is None and isinstance(depth, int) and depth >= 1:
            cfg.model.layers = depth
    return cfg


__all__ = ["DATASET_FEATURES", "FEATURE_MODES", "default_features", "pin_legacy_features",
           "preprocess", "row_normalise", "run_features", "standardise", "with_features"]
