"""The MAML family's randomly initialised GNNs (GCN, GraphSAGE, GIN, GAT) get unit-scale features by default.

Before this default they ran on the registered datasets' row-normalised bag-of-words, where a random GCN's
activations are about 0.01 and the first inner step's bias update swamps them: every GCN run started and stayed at
chance (session 26: step-0 predictions 0.50-0.51 on Cora, CiteSeer, Amazon-Computers and Coauthor-CS, 2-way 3-shot;
a 100-step Amazon-Photo run tested 0.53 against 0.88 with standard features).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cmlgraph.config import Config
from cmlgraph.domains.registry import GNN_FEATURES, fill_defaults
from cmlgraph.graphs.features import pin_legacy_features


def _cfg(graph: str = "cora", gnn: str = "gcn", algo: str = "maml", **data) -> Config:
    cfg = Config()
    cfg.data.task, cfg.data.graph, cfg.data.ways, cfg.algo.algo, cfg.model.gnn = "graph", graph, 2, algo, gnn
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


@pytest.mark.parametrize("graph,gnn,algo,expected", [
    ("cora", "gcn", "maml", "standard"), ("citeseer", "sage", "anil", "standard"),
    ("amazon-photo", "gin", "maml++", "standard"), ("amazon-computers", "gat", "sharp-maml", "standard"),
    ("coauthor-cs", "gcn", "maml", "raw"),  # standard would densify 0.5 GB
    ("amazon-clothing", "gcn", "boil", "raw"), ("dblp", "gin", "maml", "raw"),
    ("cora", "sgc", "maml", "auto"),  # SGC's PCA start: chosen on validation (tests/domains/test_feature_choice.py)
    ("cora", "gcn", "protonet", None), ("ogbn-arxiv", "gcn", "maml", None), ("synthetic", "gcn", "maml", None),
])
def test_the_default_per_graph_gnn_and_algorithm(graph, gnn, algo, expected):
    assert fill_defaults(_cfg(graph, gnn, algo)).data.features == expected


def test_a_users_choice_a_protocol_and_a_pca_start_win():
    assert fill_defaults(_cfg(features="row")).data.features == "row"
    assert fill_defaults(_cfg(graph="citeseer", protocol="tlp")).data.features == "raw"  # the protocol's own
    cfg = _cfg()
    cfg.model.init = "pca"  # an explicit PCA start (SGC only) is not a random GNN: nothing to fix here
    cfg.model.gnn = "sgc"
    assert fill_defaults(cfg).data.features == "auto"  # the PCA start chooses on validation, not the GNN rule


def test_runs_saved_before_the_default_keep_row_features():
    saved = {"data": {"task": "graph", "graph": "cora", "features": None}, "model": {"gnn": "gcn"},
             "algo": {"algo": "maml"}}
    cfg = pin_legacy_features(_cfg(), saved)
    assert cfg.data.features == "row"
    assert fill_defaults(cfg).data.features == "row"  # not replaced by today's default
    new = {"data": {"task": "graph", "graph": "cora", "features": "standard"}, "model": {"gnn": "gcn"},
           "algo": {"algo": "maml"}}
    assert fill_defaults(pin_legacy_features(_cfg(features="standard"), new)).data.features == "standard"
    assert set(GNN_FEATURES.values()) == {"standard"}


@pytest.mark.slow
@pytest.mark.skipif(not (Path(os.environ.get("CMLGRAPH_DATA", "datasets")) / "planetoid").exists(),
                    reason="needs Cora under CMLGRAPH_DATA (.ci/run points it at ../shared/datasets)")
def test_a_random_gcn_starts_above_chance_on_cora_only_with_the_new_default():
    """The run's own evaluation path (Proto-MAML head, two inner steps) on 30 validation tasks at step 0."""
    from cmlgraph.api import make_config
    from cmlgraph.core.model import parameters_of
    from cmlgraph.train.trainer import build_experiment, prepare

    def start_accuracy(**kw) -> float:
        e = build_experiment(prepare(make_config(task="graph", graph="cora", ways=2, shots=3, gnn="gcn", **kw)))
        params = parameters_of(e.model)
        accs = []
        for raw in e.domain.fixed("val", 30, 0):
            ep = e.domain.materialize(raw, "cpu")
            out, _ = e.algo.predict(e.model, params, ep, e.domain.loss_fn)
            accs.append((out.argmax(1) == ep.query_y).float().mean())
        return float(torch.stack(accs).mean())

    assert start_accuracy(features="row") < 0.6  # the old default: chance (2-way)
    assert start_accuracy() > 0.68  # today's default (standard)
