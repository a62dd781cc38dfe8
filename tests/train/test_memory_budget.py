"""The run-level memory guard (:mod:`cmlgraph.core.memory`, issue 18): a task that cannot fit the machine is refused
before the run folder exists, with the fix; a meta-batch over the budget is said on the console and trains as the
run with one pass would (up to float rounding)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console

import cmlgraph.core.memory as mem
from cmlgraph.api import make_config
from cmlgraph.errors import ResourceError
from cmlgraph.train.io import load_torch
from cmlgraph.train.trainer import build_experiment, prepare, train

SETTINGS = dict(task="graph", graph="synthetic", synthetic_nodes=300, synthetic_classes=15, ways=3, shots=2,
                queries=3, steps=4, meta_batch=3, val_every=2, val_tasks=4, test_tasks=6, log_every=1, hidden=8,
                subgraph="full", gnn="gat", gat_heads=2)


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    import cmlgraph.train.plots as plots

    monkeypatch.setattr(plots, "plot_run", lambda run_dir: [])


def _per_task(**settings) -> int:
    e = build_experiment(prepare(make_config(**{**SETTINGS, **settings})))
    ep = e.domain.materialize(e.domain.sample("train", 1, torch.Generator().manual_seed(0))[0], "cpu")
    return mem.training_bytes(mem.task_values(e.model.extractor, ep), e.algo.kept_passes(0))


def test_a_task_that_cannot_fit_is_refused_before_the_run_folder(tmp_path, monkeypatch):
    per_task = _per_task()
    monkeypatch.setattr(mem, "device_memory", lambda device: per_task // 2)
    with pytest.raises(ResourceError, match=r"one task of GAT on the whole graph of synthetic needs about .*"
                                            r"--subgraph khop"):
        train(make_config(**SETTINGS, runs_dir=str(tmp_path / "runs")), progress=False)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_cli_says_the_refusal_on_one_line(tmp_path, monkeypatch, capsys):
    from cmlgraph.cli import main

    monkeypatch.setattr(mem, "device_memory", lambda device: 1000)
    with pytest.raises(SystemExit) as info:
        main(["train", "--graph", "synthetic", "--gnn", "gat", "--subgraph", "full", "--steps", "1",
              "--runs-dir", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: one task of GAT on the whole graph of synthetic needs about") and "\n" not in err
    assert "this machine has 0.0 GB" in err and "--subgraph khop" in err and "--gnn gcn or --gnn sage" in err
    assert "fewer --layers (now 2)" in err
    assert not any(tmp_path.iterdir())  # no run folder


def test_a_meta_batch_over_the_budget_is_said_and_trains_as_one_pass(tmp_path, monkeypatch):
    whole, _ = train(make_config(**SETTINGS, runs_dir=str(tmp_path), name="whole"), progress=False)
    per_task = _per_task()
    monkeypatch.setattr(mem, "memory_budget", lambda device: per_task)  # one task a group
    out = io.StringIO()
    split, _ = train(make_config(**SETTINGS, runs_dir=str(tmp_path), name="split"), Console(file=out, width=300),
                     progress=False)
    assert "a meta-batch's 3 tasks would hold about" in out.getvalue()
    assert "they run in groups of about 1 task whose gradients are summed" in out.getvalue()
    assert "GNN dropout masks are drawn in another order" in out.getvalue()
    wa, wb = load_torch(whole / "model.pt"), load_torch(split / "model.pt")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5, msg=k)
    la, lb = ([json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()] for r in (whole, split))
    losses = [[r["loss"] for r in log if "loss" in r] for log in (la, lb)]
    assert len(losses[0]) == 4 and losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert [r.get("val") for r in lb] == pytest.approx([r.get("val") for r in la], abs=1e-6)

