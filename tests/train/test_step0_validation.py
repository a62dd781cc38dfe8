"""Step-0 validation (issue 17): the start is validated before the first meta-step, so model selection keeps it when
meta-training only hurts; a resumed run does not validate its start twice."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cmlgraph.api import make_config
from cmlgraph.core.model import parameters_of
from cmlgraph.train.evaluate import evaluate
from cmlgraph.train.trainer import Trainer

TINY = dict(task="graph", graph="synthetic", synthetic_nodes=300, synthetic_classes=15, ways=3, shots=3, queries=4,
            hidden=16, meta_batch=2, val_tasks=20, test_tasks=30, inner_steps=2, inner_lr=0.5)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_a_destructive_meta_lr_keeps_the_start(tmp_path: Path) -> None:
    """Adam at meta-lr 1e3 wrecks the weights on the first step; the run must still report the start's score."""
    cfg = make_config(**TINY, steps=4, val_every=2, meta_lr=1e3, runs_dir=str(tmp_path))
    trainer = Trainer(cfg, progress=False)
    e = trainer.exp
    start = {k: v.detach().clone() for k, v in e.model.state_dict().items()}
    trainer.open_run()
    start_test = evaluate(e.algo, e.model, parameters_of(e.model), e.domain, trainer.test_raws, e.device)["mean"]
    summary = trainer.run()
    recs = _metrics(trainer.run_dir)
    assert recs[0]["step"] == 0 and "val" in recs[0] and recs[0].get("best") is True
    later = [r["val"] for r in recs if r["step"] > 0 and "val" in r]
    assert later and max(later) < recs[0]["val"]  # training only hurt ...
    assert summary["best_step"] == 0 and summary["best_val"] == recs[0]["val"]  # ... so the start is kept
    assert summary["mean"] == start_test
    saved = torch.load(trainer.run_dir / "model.pt")
    assert all(torch.equal(saved[k], start[k]) for k in saved)  # model.pt holds the start's weights


def test_a_useful_meta_step_replaces_the_start(tmp_path: Path) -> None:
    cfg = make_config(**TINY, steps=40, val_every=20, meta_lr=1e-2, runs_dir=str(tmp_path))
    trainer = Trainer(cfg, progress=False)
    trainer.open_run()
    summary = trainer.run()
    recs = _metrics(trainer.run_dir)
    vals = {r["step"]: r["val"] for r in recs if "val" in r}
    assert set(vals) == {0, 20, 40}
    assert summary["best_val"] == max(vals.values()) and summary["best_step"] == max(vals, key=vals.get)


def test_resume_does_not_validate_the_start_again(tmp_path: Path) -> None:
    """A run resumed from a checkpoint keeps its one step-0 line and ends with the same summary as a straight run."""
    kw = dict(**TINY, steps=6, val_every=3, checkpoint_every=3, meta_lr=1e-2)
    straight = Trainer(make_config(**kw, runs_dir=str(tmp_path / "a")), progress=False)
    straight.open_run()
    s1 = straight.run()

    first = Trainer(make_config(**{**kw, "steps": 3}, runs_dir=str(tmp_path / "b")), progress=False)
    first.open_run()
    run_dir = first.run_dir
    first.run()
    # turn the finished 3-step run into a killed 6-step run at its step-3 checkpoint
    (run_dir / "summary.json").unlink()
    cfg_text = (run_dir / "config.yaml").read_text().replace("steps: 3\n", "steps: 6\n")
    (run_dir / "config.yaml").write_text(cfg_text)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    state["config"]["train"]["steps"] = 6
    torch.save(state, run_dir / "checkpoint.pt")
    from cmlgraph.train.trainer import resume

    _, s2 = resume(run_dir, progress=False)
    steps = [r["step"] for r in _metrics(run_dir) if "val" in r]
    assert steps == [0, 3, 6]
    assert s2["mean"] == s1["mean"] and s2["best_step"] == s1["best_step"] and s2["best_val"] == s1["best_val"]
