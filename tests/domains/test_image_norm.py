"""``model.norm`` of image runs: validated, recorded in ``summary.json``, and the one the model was built with."""

from __future__ import annotations

import json

import pytest

from cmlgraph.config import Config
from cmlgraph.errors import ConfigError
from cmlgraph.train.reeval import load_inference_model
from cmlgraph.train.trainer import prepare, train


def _digits(tmp_path, norm: str | None, name: str) -> Config:
    cfg = Config()
    cfg.data.task = "digits"
    cfg.model.norm = norm
    cfg.algo.cml = False
    cfg.train.steps = 2
    cfg.train.meta_batch = 2
    cfg.train.val_every = 2
    cfg.train.val_tasks = 2
    cfg.train.test_tasks = 3
    cfg.run.runs_dir = str(tmp_path)
    cfg.run.name = name
    return cfg


@pytest.mark.parametrize(("task", "norm", "pattern"), [
    ("graph", "instance", "model.norm = 'instance' sets Conv4's normalisation of image tasks; --task graph"),
    ("sinusoid", "batch", "--task sinusoid has no Conv4: drop model.norm"),
    ("digits", "layer", "model.norm = 'layer' is not valid; choose one of: batch, instance, group, support"),
])
def test_bad_norms_are_refused(task: str, norm: str, pattern: str) -> None:
    cfg = Config()
    cfg.data.task, cfg.model.norm = task, norm
    with pytest.raises(ConfigError, match=pattern):
        prepare(cfg)


def test_images_default_to_the_papers_batch_norm_and_graphs_have_none() -> None:
    for task in ("omniglot", "digits"):
        cfg = Config()
        cfg.data.task = task
        assert prepare(cfg).model.norm == "batch"
    assert prepare(Config()).model.norm is None


@pytest.mark.parametrize(("norm", "transductive"), [(None, True), ("support", False)])
def test_summary_says_whether_predictions_are_transductive(tmp_path, norm: str | None, transductive: bool) -> None:
    run_dir, summary = train(_digits(tmp_path, norm, f"n-{norm}"), progress=False)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["norm"] == (norm or "batch") and on_disk["transductive"] is transductive
    assert summary["transductive"] is transductive
    (_, _, domain), model, _ = load_inference_model(run_dir)  # `cmlgraph eval` rebuilds the same norm
    assert model.extractor.norm == (norm or "batch") and domain.norm == model.extractor.norm
