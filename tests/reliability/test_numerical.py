"""Numerical faults: a NaN/inf loss or gradient stops the run naming the step and the last good checkpoint, or with
``train.nan_policy: skip`` skips the meta-batch and counts it in ``summary.json``."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import metrics, tiny_settings

from cmlgraph.algorithms.base import MetaStep
from cmlgraph.cli import main
from cmlgraph.config import Config, apply_overrides
from cmlgraph.errors import NumericalError
from cmlgraph.train.io import load_torch
from cmlgraph.train.trainer import Trainer, resume


def _trainer(tmp_path, bad_steps, what="grad", **train):
    """A tiny run whose meta-gradient (or loss) is NaN at the given 1-based steps."""
    cfg = apply_overrides(Config(), tiny_settings(**train), "test")
    cfg.run.runs_dir, cfg.run.name = str(tmp_path / "runs"), "nan"
    trainer = Trainer(cfg, progress=False)
    algo = trainer.exp.algo
    real = algo.meta_gradients

    def poisoned(model, params, episodes, loss_fn, step, **kw):
        ms = real(model, params, episodes, loss_fn, step, **kw)
        if step + 1 in bad_steps:
            if what == "grad":
                name = next(iter(ms.grads))
                ms.grads[name] = ms.grads[name] * float("inf")  # inf·0 = NaN, inf elsewhere
            else:
                ms = MetaStep(grads=ms.grads, loss=type(ms.loss)(meta=ms.loss.meta * float("nan"), co=ms.loss.co,
                                                                  total=ms.loss.total * float("nan")))
        return ms

    algo.meta_gradients = poisoned
    return trainer


def test_nan_gradient_stops_naming_step_and_last_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, {5})
    with pytest.raises(NumericalError, match=r"gradient at step 5 of 8.*last good checkpoint: .*checkpoint\.pt "
                                             r"\(step 4\).*--nan-policy skip"):
        trainer.run()
    run = tmp_path / "runs" / "nan"
    assert load_torch(run / "checkpoint.pt")["step"] == 4 and not (run / "summary.json").exists()
    assert [r["step"] for r in metrics(run)] == [2, 4]


def test_nan_loss_before_any_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, {2}, what="loss")
    with pytest.raises(NumericalError, match=r"loss at step 2 of 8.*no checkpoint was written yet"):
        trainer.run()


def test_skip_policy_skips_and_counts(tmp_path):
    trainer = _trainer(tmp_path, {3, 6}, nan_policy="skip", log_every=1)
    before = {}

    real_step = trainer._train_step

    def spy():
        if trainer.step + 1 in (3, 6):
            before[trainer.step + 1] = {k: v.clone() for k, v in trainer.exp.model.state_dict().items()}
        rec = real_step()
        if trainer.step + 1 in before:
            after = trainer.exp.model.state_dict()
            assert all(torch.equal(before[trainer.step + 1][k], after[k]) for k in after), "a skipped step updated"
        return rec

    trainer._train_step = spy
    summary = trainer.run()
    assert summary["skipped_meta_batches"] == 2
    run = tmp_path / "runs" / "nan"
    assert json.loads((run / "summary.json").read_text())["skipped_meta_batches"] == 2
    recs = metrics(run)
    assert [r["step"] for r in recs] == list(range(1, 9))
    assert [r["step"] for r in recs if r.get("skipped")] == [3, 6]
    assert all(line.count("NaN") == 0 for line in (run / "metrics.jsonl").read_text().splitlines())
    assert set(before) == {3, 6}


def test_skip_count_survives_resume(tmp_path):
    trainer = _trainer(tmp_path, {2}, nan_policy="skip")
    trainer.run()
    run = tmp_path / "runs" / "nan"
    assert load_torch(run / "checkpoint.pt")["skipped"] == 1
    (run / "summary.json").unlink()  # as if killed before the summary: resume only finishes
    _, summary = resume(run, progress=False)
    assert summary["skipped_meta_batches"] == 1


def test_cli_huge_inner_lr_prints_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "sinusoid", "--inner-lr", "1e30", "--steps", "3", "--meta-batch", "2",
              "--test-tasks", "2", "--runs-dir", str(tmp_path / "runs"), "--name", "x", "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.match(r"error: non-finite \(NaN/inf\) \w+ at step 1 of 3", err), err
