"""``model.init pca`` (issue 17): SGC starts from the principal axes of ``Â^K X``; no labels; the global random stream
is untouched; settings that cannot use it are refused with the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmlgraph.api import make_config
from cmlgraph.backbones.gnn import GNNBackbone
from cmlgraph.backbones.pca_init import pca_init_, principal_axes
from cmlgraph.domains.registry import fill_defaults
from cmlgraph.errors import ConfigError
from cmlgraph.graphs import GraphInput, from_arrays
from cmlgraph.train.trainer import prepare

# A 5-node path 0-1-2-3-4 with a chord 1-3, both directions; 4 features.
EDGES = np.array([[0, 1, 1, 2, 2, 3, 3, 4, 1, 3], [1, 0, 2, 1, 3, 2, 4, 3, 3, 1]])
X = np.array([[1, 0, 0, 2], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 3, 1], [2, 0, 1, 0]], dtype=np.float64)


def _s2x() -> np.ndarray:
    """``S^2 X`` with ``S = D^-1/2 (A + I) D^-1/2``, by hand."""
    a = np.zeros((5, 5))
    a[EDGES[1], EDGES[0]] = 1.0
    a += np.eye(5)
    d = a.sum(1) ** -0.5
    s = d[:, None] * a * d[None, :]
    return s @ s @ X


def _sgc(hidden: int) -> GNNBackbone:
    torch.manual_seed(3)
    return GNNBackbone("sgc", 4, hidden=hidden, layers=2, bias=False)


def test_full_rank_start_keeps_every_inner_product():
    """hidden >= rank: the start's features M W^T have exactly the Gram matrix of M = S^2 X."""
    m = _s2x()
    sgc = _sgc(hidden=6)
    pca_init_(sgc, torch.tensor(X, dtype=torch.float32), torch.tensor(EDGES), 5)
    w = sgc.convs[0].lin.weight.detach().double().numpy()
    assert np.allclose(w[4:], 0.0)  # rows beyond min(N, F) = 4 are zero
    f = sgc(GraphInput(torch.tensor(X, dtype=torch.float32), torch.tensor(EDGES), torch.arange(5))).detach().double()
    assert np.allclose(f.numpy() @ f.numpy().T, m @ m.T, atol=1e-5)


def test_low_rank_start_is_the_top_principal_subspace():
    m = _s2x()
    sgc = _sgc(hidden=2)
    pca_init_(sgc, torch.tensor(X, dtype=torch.float32), torch.tensor(EDGES), 5)
    w = sgc.convs[0].lin.weight.detach().double().numpy()
    _, _, vt = np.linalg.svd(m)  # uncentred: the axes of M itself
    assert np.allclose(w @ w.T, np.eye(2), atol=1e-5)
    assert np.allclose(w.T @ w, vt[:2].T @ vt[:2], atol=1e-5)  # the same subspace (signs are free)


def test_axes_use_no_labels_and_leave_the_random_stream_alone():
    rng = np.random.default_rng(0)
    x = rng.random((60, 12))
    ei = np.stack([rng.integers(0, 60, 200), rng.integers(0, 60, 200)])
    y = np.arange(60) % 6
    axes = []
    for labels in (y, rng.permutation(y)):
        from cmlgraph.domains.graph import GraphDomain

        g = from_arrays(ei, x, labels, split="2/2/2")
        dom = GraphDomain(g, 2, 2, 2, gnn="sgc", hidden=8, bias=False)
        sgc = dom.build_extractor()
        state = torch.get_rng_state()
        dom.init_extractor(sgc)
        assert torch.equal(torch.get_rng_state(), state)
        axes.append(sgc.convs[0].lin.weight.detach().clone())
    assert torch.equal(axes[0], axes[1])


def test_principal_axes_are_deterministic():
    m = torch.randn(50, 9, generator=torch.Generator().manual_seed(1))
    assert torch.equal(principal_axes(m, 3), principal_axes(m, 3))


def test_defaults_and_refusals():
    cfg = fill_defaults(make_config(task="graph", graph="synthetic"))
    assert (cfg.model.init, cfg.model.normalize, cfg.algo.head_init) == ("pca", True, "proto")
    cfg = fill_defaults(make_config(task="graph", graph="synthetic", gnn="gcn"))
    assert (cfg.model.init, cfg.model.normalize, cfg.algo.head_init) == ("random", True, "proto")
    # ProtoNet starts as sgc-proto (PCA SGC, unit features; it has no head to start): session 27
    cfg = fill_defaults(make_config(task="graph", graph="synthetic", algo="protonet"))
    assert (cfg.model.init, cfg.model.normalize, cfg.algo.head_init) == ("pca", True, "learned")
    cfg = fill_defaults(make_config(task="graph", graph="synthetic", algo="protonet", gnn="gat"))
    assert (cfg.model.init, cfg.model.normalize) == ("random", True)
    for kw in (dict(algo="gmeta"), dict(algo="ammgnn"), dict(protocol="tlp", graph="citeseer"),
               dict(protocol="tlp", graph="citeseer", algo="protonet")):
        cfg = fill_defaults(make_config(task="graph", **{"graph": "synthetic", **kw}))
        assert (cfg.model.init, cfg.model.normalize, cfg.algo.head_init) == ("random", False, "learned"), kw
    cfg = fill_defaults(make_config(task="sinusoid"))
    assert (cfg.model.init, cfg.model.normalize, cfg.algo.head_init) == ("random", False, "learned")
    with pytest.raises(ConfigError, match="--init pca.*--gnn gcn.*use --gnn sgc or --init random"):
        prepare(make_config(task="graph", graph="synthetic", gnn="gcn", init="pca"))
    with pytest.raises(ConfigError, match="--head-init proto.*sinusoid.*--head-init learned"):
        prepare(make_config(task="sinusoid", head_init="proto"))
    with pytest.raises(ConfigError, match="--head-init proto.*--algo protonet"):
        prepare(make_config(task="graph", graph="synthetic", algo="protonet", head_init="proto"))


def test_an_old_run_folder_keeps_the_published_start():
    """A config.yaml written before issue 17 (no model.init, no algo.head_init) re-evaluates with its own model."""
    from cmlgraph.graphs.features import pin_legacy_features

    saved = {"data": {"features": "row"}, "model": {"gnn": "sgc"}, "algo": {"algo": "maml"}}
    cfg = pin_legacy_features(make_config(task="graph", graph="synthetic"), saved)
    cfg = fill_defaults(cfg)
    assert (cfg.model.init, cfg.model.normalize, cfg.algo.head_init) == ("random", False, "learned")


def test_the_pca_start_takes_a_smaller_meta_learning_rate():
    """Session 27: from the start (the training-free baseline) 1e-3 moved the model away from what transfers; 1e-4
    tested higher on 10 of 12 graph-seed pairs. Only the MAML family's PCA start; a user's value and old folders
    (which recorded theirs) win."""
    def lr(**kw):
        return fill_defaults(make_config(**{"task": "graph", "graph": "synthetic", **kw})).train.meta_lr

    assert lr() == 1e-4 and lr(algo="anil") == 1e-4 and lr(algo="maml++") == 1e-4
    assert lr(gnn="gcn") == 1e-3 and lr(init="random") == 1e-3  # features still to learn
    assert lr(algo="protonet") == 1e-3 and lr(algo="gmeta") == 1e-3 and lr(protocol="tlp", graph="citeseer") == 1e-3
    assert lr(meta_lr=3e-3) == 3e-3
    assert fill_defaults(make_config(task="sinusoid")).train.meta_lr == 1e-3
