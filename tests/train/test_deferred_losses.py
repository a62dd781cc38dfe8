"""A meta-step reads nothing back, under ``nan_policy: stop`` and ``skip``: its losses and finiteness check stay on
the device until a metrics line, validation or checkpoint needs them (issue 18, Build item 2), and training is
unchanged by it. Under ``skip`` a non-finite step is undone on the device, exactly as deciding it on the host did."""

from __future__ import annotations

import json

import pytest
import torch

from cmlgraph.config import Config, apply_overrides
from cmlgraph.train.sync_counter import SyncCounter
from cmlgraph.train.trainer import Trainer


def _trainer(tmp_path, name: str, **train) -> Trainer:
    settings = {
        "data": {"task": "sinusoid", "shots": 5, "queries": 5},
        "model": {"hidden": 16},
        "train": {"steps": 10, "meta_batch": 2, "val_every": 10, "val_tasks": 3, "test_tasks": 5, "log_every": 5,
                  "checkpoint_every": 10, "seed": 3, **train},
    }
    cfg = apply_overrides(Config(), settings, "test")
    cfg.run.runs_dir, cfg.run.name = str(tmp_path / "runs"), name
    return Trainer(cfg, progress=False)


def _lines(run) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("time_s", None)
        out.append(rec)
    return out


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_step_syncs_nothing_until_a_flush_reads_its_losses(tmp_path, policy) -> None:
    trainer = _trainer(tmp_path, "count", nan_policy=policy)
    trainer._pending = []
    # Adam reads its per-parameter step counters on the host (CPU tensors also on CUDA, where nan_policy skip makes
    # them device tensors: capturable); leave the optimizer out of the count so that what is counted is the step's
    # own read-backs (and, under skip, the undo on the device)
    trainer.exp.optimizer.step = lambda *a, **k: None
    records = []
    with SyncCounter() as steps:
        for _ in range(3):
            records.append(trainer._train_step())
            trainer.step += 1
    assert steps.total == 0, steps.counts
    assert all("loss" not in r for r in records) and len(trainer._pending) == 3
    trainer._flush()  # fills the records in one read-back
    assert all(set(r) >= {"loss", "meta_loss", "co_loss"} for r in records) and trainer._pending == []


def test_flushes_only_where_a_line_validation_or_checkpoint_needs_the_losses(tmp_path) -> None:
    trainer = _trainer(tmp_path, "flush", log_every=5, val_every=10, checkpoint_every=10)
    at: list[int] = []
    real = trainer._flush

    def spy() -> None:
        at.append(trainer.step)
        real()

    trainer._flush = spy
    trainer.run()
    assert at == [5, 10]


def test_skip_and_stop_train_alike_without_a_non_finite_step(tmp_path) -> None:
    # nan_policy skip undoes a non-finite step on the device (a copy of the parameters and Adam's state kept each
    # step, selected back by torch.where); with no NaN both train bit for bit the same.
    runs = {}
    for policy in ("stop", "skip"):
        t = _trainer(tmp_path, policy, nan_policy=policy, log_every=2, checkpoint_every=3)
        t.run()
        runs[policy] = t
    stop, skip = runs["stop"], runs["skip"]
    assert _lines(stop.run_dir) == _lines(skip.run_dir)
    for (k, a), (_, b) in zip(stop.exp.model.state_dict().items(), skip.exp.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    s1 = json.loads((stop.run_dir / "summary.json").read_text())
    s2 = json.loads((skip.run_dir / "summary.json").read_text())
    assert s1["mean"] == s2["mean"] and s1["best_step"] == s2["best_step"]
