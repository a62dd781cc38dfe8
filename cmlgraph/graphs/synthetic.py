"""The embedded default graph ``synthetic``: a contextual stochastic block model generated from a seed.

Why: ``cmlgraph train`` must run anywhere without a download, and tests need a graph with many classes. Each node
gets one of ``num_classes`` balanced classes; its features are its class mean (random, in a ``signal_dim``
subspace of the ``num_features`` dimensions) plus isotropic Gaussian noise, so a raw node is only weakly
informative. Edges are homophilous: a fraction ``homophily`` of them joins two nodes of the same class, the rest
join uniformly random nodes. Aggregating over neighbours (a GNN) therefore denoises the features and 5-way 3-shot
episodes are learnable (well above the 20% chance) but not trivial. Everything is vectorised (edges are sampled,
never a dense adjacency), so millions of nodes and ~10M edges fit in memory, and ``numpy``'s PCG64 generator makes
the graph identical for a seed on every platform.
"""

from __future__ import annotations

import numpy as np
import torch

from cmlgraph.errors import ConfigError
from cmlgraph.graphs.assemble import assemble, undirected_edges
from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.spec import DatasetSpec, LoadRequest
from cmlgraph.graphs.splits import SplitSpec

DEFAULTS = {"num_nodes": 3000, "num_classes": 60, "num_features": 64, "avg_degree": 10.0, "homophily": 0.4,
            "signal_dim": 16, "mean_scale": 1.0, "noise": 3.0}


def _check(name: str, value: float, low: float, high: float | None = None) -> None:
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"synthetic graph: {name}={value!r} is invalid; use a value {rng}")


def make_synthetic(
    num_nodes: int = 3000,
    num_classes: int = 60,
    num_features: int = 64,
    *,
    num_edges: int | None = None,
    avg_degree: float = 10.0,
    homophily: float = 0.4,
    signal_dim: int = 16,
    mean_scale: float = 1.0,
    noise: float = 3.0,
    seed: int = 0,
    split: SplitSpec | None = None,
    split_seed: int | None = None,
) -> FewShotGraph:
    """Generate the contextual-SBM graph.

    Args:
        num_nodes: Number of nodes (up to millions).
        num_classes: Number of balanced classes.
        num_features: Feature dimension F.
        num_edges: Undirected edges to sample (before removing duplicates); default ``num_nodes*avg_degree/2``.
        avg_degree: Target average degree when ``num_edges`` is None.
        homophily: Fraction of sampled edges that join two nodes of the same class (``1/num_classes`` = none).
        signal_dim: Dimension of the subspace holding the class means (the rest is noise).
        mean_scale: Standard deviation of the class-mean coordinates.
        noise: Standard deviation of the per-node Gaussian noise.
        seed: Seed of the graph.
        split: Class split; default ``"a/b/c"`` = 60% / 20% / 20% of the classes (36/12/12 for 60 classes).
        split_seed: Seed of the split (default: ``seed``).

    Raises:
        ConfigError: A setting out of range.
    """
    for name, value, low, high in (("num_nodes", num_nodes, 2, None), ("num_classes", num_classes, 1, None),
                                   ("num_features", num_features, 1, None), ("homophily", homophily, 0.0, 1.0),
                                   ("avg_degree", avg_degree, 0.0, None), ("signal_dim", signal_dim, 1, None),
                                   ("noise", noise, 0.0, None), ("mean_scale", mean_scale, 0.0, None)):
        _check(name, value, low, high)
    if num_classes > num_nodes:
        raise ConfigError(f"synthetic graph: num_classes={num_classes} exceeds num_nodes={num_nodes}; "
                          "use fewer classes or more nodes")
    signal_dim = min(signal_dim, num_features)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(num_nodes, dtype=np.int64) % num_classes)

    means = rng.normal(0.0, mean_scale, size=(num_classes, signal_dim)).astype(np.float32)
    basis, _ = np.linalg.qr(rng.normal(size=(num_features, signal_dim)))
    class_feats = means @ basis.T.astype(np.float32)
    x = rng.standard_normal(size=(num_nodes, num_features), dtype=np.float32)
    x *= np.float32(noise)
    x += class_feats[y]

    m = int(num_edges) if num_edges is not None else int(round(num_nodes * avg_degree / 2))
    _check("num_edges", m, 0)
    src = rng.integers(0, num_nodes, size=m, dtype=np.int64)
    intra = rng.random(m) < homophily
    dst = rng.integers(0, num_nodes, size=m, dtype=np.int64)
    order = np.argsort(y, kind="stable")
    counts = np.bincount(y, minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cls = y[src[intra]]
    offs = (rng.random(int(intra.sum())) * counts[cls]).astype(np.int64)
    dst[intra] = order[starts[cls] + offs]
    edge_index = undirected_edges(torch.from_numpy(np.vstack([src, dst])), num_nodes)

    if split is None:
        val = max(1, round(0.2 * num_classes)) if num_classes >= 3 else 0
        split = f"{num_classes - 2 * val}/{val}/{val}" if num_classes >= 3 else f"{num_classes}/0/0"
    graph = assemble(
        "synthetic", torch.from_numpy(x), edge_index, torch.from_numpy(y), split=split,
        seed=seed if split_seed is None else split_seed,
        info={"generator": "contextual stochastic block model", "seed": seed,
              "params": {"num_nodes": num_nodes, "num_classes": num_classes, "num_features": num_features,
                         "num_edges": m, "homophily": homophily, "signal_dim": signal_dim,
                         "mean_scale": mean_scale, "noise": noise}},
    )
    graph.info["edge_homophily"] = graph.homophily()
    return graph


def load_synthetic(req: LoadRequest) -> FewShotGraph:
    """Registry loader: ``load_graph("synthetic", seed=..., num_nodes=..., ...)``; the seed drives graph and split.

    Options set to None take their defaults. Unknown options raise a :class:`ConfigError` listing the valid ones.
    """
    options = {k: v for k, v in req.options.items() if v is not None}
    valid = set(DEFAULTS) | {"num_edges", "split_seed"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"synthetic graph: unknown options {unknown}; valid: {sorted(valid)}")
    return make_synthetic(seed=req.seed, split=req.split, **options)


def synthetic_spec() -> DatasetSpec:
    """Registry entry of the embedded synthetic graph (no files)."""
    return DatasetSpec(
        name="synthetic", title="Synthetic contextual SBM", files=(),
        stats={"nodes": DEFAULTS["num_nodes"], "edges": 29226,  # seed 0; ~30,000 for any seed
               "features": DEFAULTS["num_features"],
               "classes": DEFAULTS["num_classes"]},
        citation="generated by cmlgraph (contextual stochastic block model; Deshpande et al., NeurIPS 2018)",
        default_split="36/12/12", split_doc="seeded 60%/20%/20% of the classes (36/12/12 for the default 60)",
        loader=load_synthetic,
    )


__all__ = ["DEFAULTS", "load_synthetic", "make_synthetic", "synthetic_spec"]
