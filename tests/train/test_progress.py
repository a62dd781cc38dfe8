"""The meta-training progress bar names the loss it shows (issue 19 item 11): the outer loss, or with CML the
objective meta + γ·co."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from cmlgraph.config import Config
from cmlgraph.train.trainer import train


@pytest.mark.parametrize(("cml", "label"), [(True, "meta+γ·co loss"), (False, "outer loss")])
def test_the_progress_bar_names_its_loss(tmp_path, cml, label):
    cfg = Config()
    cfg.data.task = "sinusoid"
    cfg.algo.cml = cml
    cfg.train.steps, cfg.train.meta_batch, cfg.train.val_every = 3, 2, 3
    cfg.train.val_tasks, cfg.train.test_tasks = 2, 3
    cfg.run.runs_dir, cfg.run.name = str(tmp_path), f"cml{cml}"
    console = Console(record=True, width=200, force_terminal=False)
    run, _ = train(cfg, console, progress=True)
    out = console.export_text()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "loss" in r][-1]["loss"]
    assert f"{label} {last:.4f}" in out  # the bar's number is that loss, under its name
    other = "outer loss" if cml else "meta+γ·co loss"
    assert other not in out
