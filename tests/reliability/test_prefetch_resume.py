"""Kill + resume with the prefetch worker on (issue 18 item 2) ends bit-identical to an uninterrupted run.

The worker runs up to two meta-batches ahead of the step, so when the run is killed it has drawn batches the step
never consumed; the checkpoint must hold the generator state of the next batch *not yet consumed* (what
:meth:`cmlgraph.train.prefetch.Prefetcher.next` leaves in ``exp.generator``), or the resumed run would skip them.
The run is a k-hop graph run (host-built computation-tree plans) with GNN dropout (torch's global RNG), kill points
as in ``test_crash_resume.py`` (8 steps; checkpoints at 3, 4, 6, 8; validations at 4, 8).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_checkpoint_whole, assert_same_run, forked, tiny_settings, write_config

from cmlgraph.domains.graph import register_graph
from cmlgraph.graphs import from_arrays
from cmlgraph.train.trainer import resume


def _settings(prefetch: str) -> dict:
    s = tiny_settings(prefetch=prefetch)
    s["data"] = {"task": "graph", "graph": "reliability-prefetch", "ways": 2, "shots": 2, "queries": 2,
                 "subgraph": "khop"}
    s["model"] = {"gnn": "gcn", "hidden": 8, "dropout": 0.3}
    return s


def _graph() -> None:
    gen = torch.Generator().manual_seed(1)
    n = 60
    edges = torch.randint(0, n, (2, 150), generator=gen)
    register_graph(from_arrays(edges, torch.randn(n, 5, generator=gen), torch.arange(n) % 6,
                               name="reliability-prefetch", split="2/2/2"))


_graph()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run with the worker on (forked like the killed ones)."""
    root = tmp_path_factory.mktemp("ref")
    import cmlgraph.train.plots as plots

    saved, plots.plot_run = plots.plot_run, lambda run_dir: []
    try:
        cfg = write_config(root, _settings("on"))
        assert forked(["train", "--config", str(cfg), "--runs-dir", str(root), "--name", "ref", "--quiet"]) == 0
    finally:
        plots.plot_run = saved
    return root / "ref"


def test_uninterrupted_runs_with_and_without_the_worker_are_identical(tmp_path, reference):
    cfg = write_config(tmp_path, _settings("off"))
    assert forked(["train", "--config", str(cfg), "--runs-dir", str(tmp_path), "--name", "off", "--quiet"]) == 0
    assert_same_run(reference, tmp_path / "off")


@pytest.mark.parametrize("kill_at", ["step_begin:3", "step_end:5", "log:3", "eval:5"])
def test_kill_and_resume_with_prefetch_equals_uninterrupted(tmp_path, reference, kill_at):
    cfg = write_config(tmp_path, _settings("on"))
    code = forked(["train", "--config", str(cfg), "--runs-dir", str(tmp_path / "runs"), "--name", "k", "--quiet"],
                  kill_at)
    assert code == -9, f"the run was not killed at {kill_at} (exit code {code})"
    run = tmp_path / "runs" / "k"
    assert_checkpoint_whole(run)
    resume(run, progress=False)
    assert_same_run(reference, run)
