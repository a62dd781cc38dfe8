"""The run folder contract (DESIGN §3), determinism under a seed, and the co-learner-free inference model."""

from __future__ import annotations

import json

import torch

from cmlgraph.config import Config
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.train.io import load_torch
from cmlgraph.train.reeval import load_inference_model, reevaluate
from cmlgraph.train.trainer import build_experiment, prepare, train


def _cfg(tmp_path, name, cml=True, seed=3):
    cfg = Config()
    cfg.data.task = "sinusoid"
    cfg.algo.cml = cml
    cfg.train.steps = 12
    cfg.train.meta_batch = 4
    cfg.train.val_every = 4
    cfg.train.val_tasks = 5
    cfg.train.test_tasks = 20
    cfg.train.log_every = 2
    cfg.train.seed = seed
    cfg.run.runs_dir = str(tmp_path)
    cfg.run.name = name
    return cfg


TIMING = {"time_s", "wall_time_s", "provenance"}  # provenance: the command and time of each process


def _strip(obj):
    return {k: v for k, v in obj.items() if k not in TIMING}


def test_same_seed_gives_identical_metrics_and_summary(tmp_path):
    a, sa = train(_cfg(tmp_path, "a"), progress=False)
    b, sb = train(_cfg(tmp_path, "b"), progress=False)
    ma = [_strip(json.loads(line)) for line in (a / "metrics.jsonl").read_text().splitlines()]
    mb = [_strip(json.loads(line)) for line in (b / "metrics.jsonl").read_text().splitlines()]
    assert ma == mb and len(ma) >= 6
    assert _strip(json.loads((a / "summary.json").read_text())) == _strip(json.loads((b / "summary.json").read_text()))
    _, sc = train(_cfg(tmp_path, "c", seed=4), progress=False)
    assert sc["mean"] != sa["mean"]


def test_run_folder_contract(tmp_path):
    run, summary = train(_cfg(tmp_path, "r"), progress=False)
    for f in ("config.yaml", "metrics.jsonl", "summary.json", "model.pt", "checkpoint.pt", "test_episodes.pt",
              "curves.png"):
        assert (run / f).is_file(), f
    for key in ("metric", "mean", "ci95", "num_tasks", "algorithm", "cml", "task", "ways", "shots", "seed",
                "partial", "wall_time_s"):
        assert key in summary, key
    assert summary["metric"] == "mse" and summary["num_tasks"] == 20 and summary["partial"] is False
    assert all("step" in json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())


def test_inference_model_has_maml_parameters_and_same_predictions(tmp_path):
    run, summary = train(_cfg(tmp_path, "inf"), progress=False)
    saved = load_torch(run / "model.pt")
    assert not any(k.startswith("co.") for k in saved)
    maml = prepare(_cfg(tmp_path, "x", cml=False))
    maml_model = build_experiment(maml).model
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in maml_model.state_dict().items()}
    assert summary["inference_parameters"] == sum(p.numel() for p in maml_model.parameters())

    # The full (co-learner) model's meta-learner path predicts exactly what the saved inference model does.
    (cfg, algo, domain), inf_model, state = load_inference_model(run)
    full = MetaModel(domain.build_extractor(), 1, co_depth=cfg.algo.co_depth)
    full.load_state_dict(load_torch(run / "checkpoint.pt")["best_params"])
    ep = domain.materialize(domain.from_state(state)[0])
    out_inf, co_inf = algo.predict(inf_model, parameters_of(inf_model), ep, domain.loss_fn)
    out_full, co_full = algo.predict(full, parameters_of(full), ep, domain.loss_fn)
    assert co_inf is None and co_full is not None
    assert torch.allclose(out_inf, out_full)
    # `cmlgraph eval` reproduces the summary from the saved files alone.
    res = reevaluate(run)
    assert abs(res["mean"] - summary["mean"]) < 1e-6 and res["num_tasks"] == summary["num_tasks"]


def test_gradient_diagnostics_are_logged_at_their_interval_and_plotted(tmp_path):
    cfg = _cfg(tmp_path, "diag")
    cfg.train.diag_every = 3
    cfg.train.log_every = 5
    run, _ = train(cfg, progress=False)
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    diag_steps = [r["step"] for r in recs if "diag" in r]
    assert diag_steps == [3, 6, 9, 12]
    d = recs[[r["step"] for r in recs].index(3)]["diag"]
    assert -1 <= d["cos_extractor"] <= 1 and set(d["layers"]) == {"extractor.net.0", "extractor.net.2"}
    assert all(set(v) == {"cos", "norm_meta", "norm_co"} for v in d["layers"].values())
    assert (run / "gradients.png").is_file()
