"""``--algo`` baselines as runs: a run folder on the same fixed test tasks as a meta-learning run, 0 steps, its
settings chosen on validation tasks, re-evaluable, and clear errors for what does not apply."""

from __future__ import annotations

import json

import pytest
import torch

import cmlgraph
from cmlgraph.errors import ConfigError
from cmlgraph.train.io import load_torch
from cmlgraph.train.reeval import reevaluate

#: A 300-node synthetic graph with 15 classes: 3-way 2-shot tasks in every split.
TINY = dict(task="graph", graph="synthetic", synthetic_nodes=300, synthetic_classes=15, ways=3, shots=2, queries=4,
            val_tasks=6, test_tasks=12, seed=3)


def _run(tmp_path, algo: str, **extra):
    cfg = cmlgraph.make_config(**{**TINY, **extra}, algo=algo, runs_dir=str(tmp_path), name=f"{algo}-{len(extra)}")
    return cmlgraph.fit_config(cfg)


@pytest.fixture(scope="module")
def maml_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("runs"), "maml", steps=1, val_every=1, inner_steps=1)


@pytest.mark.parametrize("algo", ["sgc-proto", "label-prop", "sgc-logreg"])
def test_run_folder_on_the_test_tasks_of_a_maml_run(tmp_path, maml_run, algo):
    run, summary = _run(tmp_path, algo)
    for f in ("config.yaml", "summary.json", "test_episodes.pt", "scores.pt", "model.pt"):
        assert (run / f).is_file()
    ours, theirs = load_torch(run / "test_episodes.pt"), load_torch(maml_run[0] / "test_episodes.pt")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert summary["algorithm"] == algo and summary["steps"] == 0 and summary["steps_run"] == 0
    assert summary["cml"] is False and summary["training_free"] is True  # CML's default is on: ignored here
    assert summary["num_tasks"] == 12 and 0.0 <= summary["mean"] <= 1.0
    record = summary["baseline"]
    assert record["method"] == algo and record["val"] == summary["best_val"]
    assert record["val"] == max(c["val"] for c in record["grid"])  # the chosen settings are the best on val
    assert json.loads((run / "summary.json").read_text())["baseline"]["settings"] == record["settings"]
    again = reevaluate(run)  # `cmlgraph eval` rebuilds the method from config.yaml and model.pt
    assert again["mean"] == pytest.approx(summary["mean"], abs=1e-9)


def test_fixed_settings_are_not_selected(tmp_path):
    _, summary = _run(tmp_path, "sgc-proto", prop_steps=1)
    assert summary["baseline"]["settings"] == {"k": 1} and summary["baseline"]["grid"] == []


def test_label_prop_counts_unreached_queries_as_wrong(tmp_path):
    _, summary = _run(tmp_path, "label-prop", prop_steps=1, prop_alpha=0.1)
    assert summary["unreached_queries"] > 0 and summary["test_queries_total"] == 12 * 3 * 4
    assert summary["nonfinite_test_tasks"] == 0 and not any("NaN" in w for w in summary["warnings"])
    # every unreached query is wrong: the accuracy cannot exceed the reached share
    assert summary["mean"] <= 1 - summary["unreached_queries"] / summary["test_queries_total"] + 1e-9


def test_gcl_probe_run_keeps_its_encoder(tmp_path):
    run, summary = _run(tmp_path, "gcl-probe", pretrain_epochs=2, test_tasks=4)
    assert summary["baseline"]["epochs_run"] <= 2 and summary["baseline"]["best_epoch"] in (0, 1, 2)
    assert any(k.startswith("baseline.encoder.") for k in load_torch(run / "model.pt"))
    assert reevaluate(run)["mean"] == pytest.approx(summary["mean"], abs=1e-9)


@pytest.mark.parametrize("algo,extra", [("sgc-logreg", {}), ("gcl-probe", {"pretrain_epochs": 2})])
def test_tasks_scored_together_equal_tasks_scored_one_by_one(tmp_path, algo, extra):
    """Evaluation fits a chunk's probes in one batched solve (``predict_tasks``): same scores as task by task."""
    from cmlgraph.core.model import parameters_of
    from cmlgraph.train.evaluate import evaluate
    from cmlgraph.train.reeval import load_inference_model

    run, summary = _run(tmp_path, algo, test_tasks=10, **extra)
    (cfg, method, domain), model, state = load_inference_model(run)
    raws = domain.from_state(state)
    together = evaluate(method, model, parameters_of(model), domain, raws)
    method.predict_tasks = None  # the one-task path: predict() per task
    alone = evaluate(method, model, parameters_of(model), domain, raws)
    assert together["scores"] == pytest.approx(alone["scores"], abs=1e-12)
    assert together["mean"] == pytest.approx(summary["mean"], abs=1e-12)
    eps = [domain.materialize(r, "cpu") for r in raws[:4]]
    del method.predict_tasks
    for ep, out in zip(eps, method.predict_tasks(model, eps), strict=True):
        torch.testing.assert_close(out, method.predict(model, parameters_of(model), ep, None)[0], atol=1e-5,
                                   rtol=1e-5)


@pytest.mark.parametrize("settings,match", [
    (dict(task="sinusoid"), "use it with --task graph"),
    (dict(control="noise", cml=False), "drop --control noise"),
    (dict(gnn="gat", subgraph="khop"), "reads the whole graph"),
    (dict(prop_alpha=1.5), r"prop_alpha = 1.5: must be in \[0, 1\)"),
])
def test_what_does_not_apply_is_refused(tmp_path, settings, match):
    base = {k: v for k, v in TINY.items() if not (settings.get("task") == "sinusoid" and k not in ("seed",))}
    cfg = cmlgraph.make_config(**{**base, **settings}, algo="label-prop", runs_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=match):
        cmlgraph.fit_config(cfg)
    assert not any(tmp_path.iterdir())


def test_label_prop_marks_unreached_queries_without_a_boolean_mask_assignment():
    """Unreached queries' rows are NaN by a select: a boolean-mask assignment would read the mask back once per task
    on a GPU (``aten.index_put(bool mask)``, counted on the CPU by SyncCounter)."""
    from cmlgraph.train.sync_counter import SyncCounter
    from cmlgraph.train.trainer import build_experiment, prepare

    e = build_experiment(prepare(cmlgraph.make_config(**TINY, algo="label-prop", prop_steps=1, prop_alpha=0.1)))
    eps = [e.domain.materialize(r) for r in e.domain.sample("test", 4, torch.Generator().manual_seed(0))]
    with SyncCounter() as counter:
        outs = [e.algo.logits(e.model, ep) for ep in eps]
    assert "aten.index_put(bool mask)" not in counter.counts, counter.counts
    assert any(torch.isnan(o).all(dim=1).any() for o in outs)  # one step: some queries unreached, NaN rows
