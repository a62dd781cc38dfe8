"""``model.layers`` unset: the PCA-started SGC propagates the depth ``sgc-proto`` picks on the run's validation tasks
(``cmlgraph/domains/depth_choice.py``); everything else keeps 2, and a finished run is read back at its depth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cmlgraph
from cmlgraph.domains.depth_choice import best_depth
from cmlgraph.domains.registry import build_domain
from cmlgraph.train.baseline_check import baseline_val
from cmlgraph.train.trainer import prepare

SMALL = dict(task="graph", graph="synthetic", synthetic_nodes=300, synthetic_classes=15, ways=3, shots=2, queries=3,
             val_tasks=12)


def test_best_depth_takes_the_best_k_of_at_least_one_and_the_smaller_on_a_tie():
    grid = [{"k": 0, "val": 0.9}, {"k": 1, "val": 0.5}, {"k": 2, "val": 0.7}, {"k": 3, "val": 0.7},
            {"k": 4, "val": 0.6}]
    assert best_depth({"grid": grid}) == 2  # K = 0 is no SGC; 2 and 3 tie
    assert best_depth({"grid": [{"k": 0, "val": 1.0}]}) is None and best_depth({}) is None


def test_the_pca_started_sgc_propagates_the_depth_sgc_proto_picks_on_the_runs_validation_tasks():
    cfg = prepare(cmlgraph.make_config(**SMALL))
    assert cfg.model.layers is None  # chosen when the domain is built; the config (config.yaml) keeps it unset
    domain = build_domain(cfg)
    fresh = baseline_val(domain, domain.fixed("val", 12, cfg.train.seed), "cpu", seed=cfg.train.seed)
    k = best_depth(fresh)
    assert domain.depth_choice["chosen"] == k == domain.gnn["layers"] and domain.describe()["layers"] == k
    assert domain.depth_choice["val"] == {int(r["k"]): pytest.approx(r["val"]) for r in fresh["grid"] if r["k"]}
    assert any(n.startswith(f"layers auto: K = {k}") for n in domain.notes)
    assert build_domain(cfg).gnn["layers"] == k  # no random draw: the same again (a resume, eval)


@pytest.mark.parametrize("settings, layers", [(dict(layers=3), 3), (dict(gnn="gcn"), 2), (dict(algo="gmeta"), 2),
                                              (dict(init="random"), 2), (dict(protocol="tlp"), 2)])
def test_a_given_depth_and_every_other_model_keep_theirs(settings, layers):
    cfg = prepare(cmlgraph.make_config(**{**SMALL, **settings}))
    assert cfg.model.layers == layers
    if settings.get("algo") != "gmeta" and "protocol" not in settings:
        domain = build_domain(cfg)
        assert domain.gnn["layers"] == layers and not hasattr(domain, "depth_choice")


def test_a_graph_too_large_for_the_baseline_keeps_two_and_says_why(monkeypatch):
    import cmlgraph.train.baseline_check as check

    monkeypatch.setattr(check, "MAX_DENSE_BYTES", 0)  # as a graph whose dense S^K X would not fit
    domain = build_domain(prepare(cmlgraph.make_config(**SMALL)))
    assert domain.gnn["layers"] == 2 and "S^K X" in domain.depth_choice["kept"]
    assert any(n.startswith("layers: K = 2 (") for n in domain.notes)


def test_a_finished_run_records_its_depth_and_is_read_back_at_it(tmp_path: Path):
    run, summary = cmlgraph.fit(**{k: v for k, v in SMALL.items() if k != "task"}, steps=2, val_every=2,
                                test_tasks=6, runs_dir=str(tmp_path))
    assert summary["layers"] == summary["depth_choice"]["chosen"] >= 1
    from cmlgraph.train.reeval import reevaluate

    assert reevaluate(run)["mean"] == pytest.approx(summary["mean"], abs=1e-6)
    assert "layers: null" in (run / "config.yaml").read_text()  # compare's reuse keys see the unset setting
    emb = cmlgraph.embed(run)  # predict/embed read the recorded depth, not the unset config
    assert emb.shape == (300, 64)
    record = json.loads((run / "summary.json").read_text())
    del record["layers"]
    (run / "summary.json").write_text(json.dumps(record))
    with pytest.raises(cmlgraph.CmlgraphError, match="does not record the propagation depth"):
        cmlgraph.embed(run)
