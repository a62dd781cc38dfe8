"""The paper's graph setting: TLP's class splits and preset, γ = 0 = base, frozen co-learner, Table-3 configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmlgraph.algorithms.registry import get_algorithm
from cmlgraph.config import AlgoConfig, Config, apply_overrides, from_yaml
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.domains.graph import register_graph
from cmlgraph.domains.registry import fill_defaults
from cmlgraph.domains.tlp_graph import TLPGraphDomain
from cmlgraph.errors import ConfigError
from cmlgraph.graphs import make_synthetic
from cmlgraph.protocols import TLP_COUNTS, tlp_split, tlp_split_for
from cmlgraph.train.trainer import Trainer, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "paper"


def test_tlp_splits_reproduce_the_published_class_ids():
    assert tlp_split_for("citeseer") == {"train": [3, 5], "val": [0, 4], "test": [1, 2]}
    assert tlp_split_for("amazon-computers") == {"train": [1, 3, 4, 6], "val": [0, 5, 8], "test": [2, 7, 9]}
    for name, (a, b, c) in TLP_COUNTS.items():
        # TLP's procedure on numpy's global legacy RNG: seed, draw test, draw val from the sorted rest.
        np.random.seed(1234)
        classes = list(range(a + b + c))
        test = np.random.choice(classes, c, replace=False)
        rest = sorted(set(classes) - set(test.tolist()))
        val = np.random.choice(rest, b, replace=False)
        got = tlp_split_for(name)
        assert got["test"] == sorted(test.tolist()) and got["val"] == sorted(val.tolist()), name
        assert sorted(got["train"] + got["val"] + got["test"]) == classes
        assert [len(got["train"]), len(got["val"]), len(got["test"])] == [a, b, c]
    assert tlp_split((40, 15, 15)) == tlp_split_for("cora-full")
    with pytest.raises(ConfigError, match="no class split for 'synthetic'"):
        tlp_split_for("synthetic")


def test_tlp_preset_fills_unset_settings_and_user_values_win():
    cfg = apply_overrides(Config(), {"data": {"graph": "citeseer", "protocol": "tlp", "queries": 7},
                                     "train": {"val_every": 3}}, "test")
    fill_defaults(cfg)
    assert (cfg.data.queries, cfg.data.test_queries, cfg.data.features) == (7, 10, "raw")
    assert (cfg.train.meta_batch, cfg.train.val_every, cfg.train.val_tasks, cfg.train.patience) == (1, 3, 20, 10)
    assert cfg.algo.inner_lr == 0.5  # maml: the protocol has no inner step for it; the graph default applies


@pytest.mark.parametrize(("graph", "lr"), [("citeseer", 0.1), ("amazon-computers", 0.05)])
def test_ammgnn_config_follows_the_papers_text_the_protocol_tlps_code_and_a_flag_wins(graph, lr):
    cfg = from_yaml(CONFIGS / "table3-ammgnn.yaml")
    cfg.data.graph = graph
    assert fill_defaults(cfg).algo.inner_lr == 0.05  # the paper's text: 20 steps of 0.05 in every cell
    bare = apply_overrides(Config(), {"data": {"graph": graph, "protocol": "tlp"}, "algo": {"algo": "ammgnn"}}, "t")
    assert fill_defaults(bare).algo.inner_lr == lr  # --protocol tlp alone: TLP's code (0.1 off Amazon-Computer)
    cfg = apply_overrides(from_yaml(CONFIGS / "table3-ammgnn.yaml"), {"data": {"graph": graph},
                                                                     "algo": {"inner_lr": 0.3}}, "flags")
    assert fill_defaults(cfg).algo.inner_lr == 0.3
    assert fill_defaults(from_yaml(CONFIGS / "table3-gmeta.yaml")).algo.inner_lr == 0.05


def test_plain_config_is_untouched_by_protocol_defaults():
    plain = fill_defaults(Config())
    assert plain.train.val_tasks == 100 and plain.train.patience is None and plain.data.test_queries is None


def _domain(kind: str) -> TLPGraphDomain:
    graph = make_synthetic(num_nodes=240, num_classes=6, seed=0, split="2/2/2")
    return TLPGraphDomain(graph, 2, 2, 3, kind=kind, hidden=8, dropout=0.0, test_queries=4)


@pytest.mark.parametrize("kind", ["gmeta", "ammgnn"])
def test_gamma_zero_equals_the_base_method(kind):
    dom = _domain(kind)
    eps = [dom.materialize(r) for r in dom.sample("train", 2, torch.Generator().manual_seed(3))]
    torch.manual_seed(0)
    base = MetaModel(dom.build_extractor(), 2, None)
    torch.manual_seed(0)
    cml = MetaModel(dom.build_extractor(), 2, 1, co_hidden=5)
    cml.load_state_dict(base.state_dict(), strict=False)
    common = dict(algo=kind, inner_steps=2, inner_lr=0.05, first_order=True)
    g0 = get_algorithm(AlgoConfig(cml=False, **common)).meta_gradients(base, parameters_of(base), eps,
                                                                       F.cross_entropy, 0)
    g1 = get_algorithm(AlgoConfig(cml=True, gamma=0.0, **common)).meta_gradients(cml, parameters_of(cml), eps,
                                                                                 F.cross_entropy, 0)
    torch.testing.assert_close(g0.loss.total, g1.loss.total)
    for k, g in g0.grads.items():
        torch.testing.assert_close(g, g1.grads[k], msg=k)
    assert g1.loss.co > 0  # the co-learner term exists, it just weighs nothing
    g2 = get_algorithm(AlgoConfig(cml=True, gamma=1.0, **common)).meta_gradients(cml, parameters_of(cml), eps,
                                                                                 F.cross_entropy, 0)
    assert not torch.allclose(g2.grads["extractor.lin1.weight"], g0.grads["extractor.lin1.weight"])


def _cfg(tmp_path, **algo) -> Config:
    graph = make_synthetic(num_nodes=240, num_classes=6, seed=0, split="2/2/2")
    graph.name = "tiny-tlp"
    register_graph(graph)
    return apply_overrides(Config(), {
        "data": {"graph": "tiny-tlp", "ways": 2, "shots": 1, "protocol": "tlp"},
        "model": {"hidden": 8, "dropout": 0.5},
        "algo": {"algo": "gmeta", "co_depth": 1, "co_hidden": 4, "inner_steps": 2, "inner_lr": 0.05,
                 "first_order": True, **algo},
        "train": {"steps": 3, "val_every": 1, "val_tasks": 2, "test_tasks": 4, "weight_decay": 0.01,
                  "meta_lr": 0.01},
        "run": {"runs_dir": str(tmp_path)},
    }, "test")


def test_frozen_co_learner_is_bit_identical_after_training(tmp_path):
    trainer = Trainer(_cfg(tmp_path, control="frozen-co", cml=False))
    model = trainer.exp.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert any(k.startswith("co.") for k in before)
    trainer.open_run()
    summary = trainer.run()
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith("co."):
            assert torch.equal(v, after[k]), k  # weight decay and Adam never touched it
    assert not torch.equal(before["extractor.lin1.weight"], after["extractor.lin1.weight"])
    assert summary["control"] == "frozen-co" and summary["cml"] is False
    assert summary["co_depth"] == 1 and summary["co_hidden"] == 4  # the co-learner's shape is recorded


def test_summary_records_classes_tlp100_and_early_stopping(tmp_path):
    cfg = _cfg(tmp_path, control="cl")
    cfg.train.steps, cfg.train.meta_lr, cfg.train.patience = 50, 1e-12, 2
    _, summary = train(cfg)
    assert summary["classes"] == {"train": [2, 5], "val": [0, 3], "test": [1, 4]}  # the graph's original ids
    assert summary["tlp100_num_tasks"] == 100 and 0 <= summary["tlp100_mean"] <= 1
    # meta_lr 1e-12 changes nothing: the start (validated at step 0) stays best, then two validations without gain
    assert summary["stopped_early"] and summary["steps_run"] == 2 and summary["best_step"] == 0
    assert "cl_dagger_mean" in summary and summary["queries"] == 5 and summary["test_queries"] == 10


@pytest.mark.parametrize("name", ["table3-gmeta.yaml", "table3-ammgnn.yaml"])
def test_table3_configs_load_and_run_a_few_steps(tmp_path, name):
    cfg = from_yaml(CONFIGS / name)
    assert cfg.data.protocol == "tlp" and cfg.algo.gamma == 0.2 and cfg.algo.inner_steps == 20
    assert cfg.algo.co_depth == 1 and cfg.algo.co_hidden == 16 and cfg.model.hidden == 16
    base = _cfg(tmp_path)
    cfg.data.graph, cfg.data.ways, cfg.data.shots = base.data.graph, 2, 1
    cfg.train.steps, cfg.train.val_every, cfg.train.val_tasks, cfg.train.test_tasks = 2, 1, 2, 3
    cfg.algo.inner_steps, cfg.run.runs_dir = 2, str(tmp_path)
    _, summary = train(cfg)
    assert summary["algorithm"] == cfg.algo.algo and summary["num_tasks"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["table3-gmeta.yaml", "table3-ammgnn.yaml"])
def test_table3_configs_run_on_citeseer(tmp_path, name, data_root):
    if not (Path(data_root) / "planetoid").exists():
        pytest.skip("CiteSeer is not under CMLGRAPH_DATA")
    os.environ.setdefault("CMLGRAPH_DATA", str(data_root))
    cfg = from_yaml(CONFIGS / name)
    cfg = apply_overrides(cfg, {"data": {"graph": "citeseer", "ways": 2, "shots": 1, "data_root": str(data_root)},
                                "algo": {"inner_steps": 2},
                                "train": {"steps": 2, "val_every": 1, "val_tasks": 2, "test_tasks": 3},
                                "run": {"runs_dir": str(tmp_path)}}, "test")
    _, summary = train(cfg)
    assert summary["classes"] == {"train": [3, 5], "val": [0, 4], "test": [1, 2]}
    assert summary["dataset"] == "citeseer" and summary["num_tasks"] == 3


@pytest.mark.parametrize(("overrides", "match"), [
    ({"data": {"task": "sinusoid"}, "algo": {"algo": "gmeta"}}, "node-classification method"),
    ({"algo": {"co_hidden": 0}}, "--co-hidden 0"),
    ({"data": {"task": "digits"}, "algo": {"co_hidden": 8}}, "Conv4's co-learner"),
    ({"data": {"protocol": "nope"}}, "unknown protocol 'nope'"),
    ({"data": {"task": "sinusoid", "protocol": "tlp"}}, "node-classification protocol"),
    ({"data": {"features": "zscore"}}, "data.features"),
    ({"train": {"patience": 0}}, "--patience 0"),
    ({"algo": {"control": "frozen"}}, "frozen-co"),
])
def test_bad_settings_are_refused_with_the_fix(overrides, match):
    from cmlgraph.train.trainer import prepare

    with pytest.raises(ConfigError, match=match):
        prepare(apply_overrides(Config(), overrides, "test"))


def test_controls_with_their_own_co_learner_ignore_the_cml_switch(tmp_path):
    """``--cml``/``--no-cml`` does not change the cl and frozen-co controls: one canonical config (so runs are
    named, recorded and reused alike) whose console line names the control, not "+ CML"."""
    from cmlgraph.compare import _key
    from cmlgraph.train.trainer import prepare

    for control in ("frozen-co", "cl"):
        on = prepare(_cfg(tmp_path, control=control, cml=True))
        off = prepare(_cfg(tmp_path, control=control, cml=False))
        assert on.algo.cml is off.algo.cml is False and _key(on) == _key(off)
    from cmlgraph.train.trainer import _arm_label

    assert _arm_label(prepare(_cfg(tmp_path, control="frozen-co"))) == ", control frozen-co"
    assert _arm_label(prepare(_cfg(tmp_path))) == " + CML"
