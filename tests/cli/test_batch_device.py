"""``--device`` of ``compare``, ``leaderboard`` and ``reproduce`` reaches every run's config (issue 18: a batch of
runs on a GPU), and a device that is not there stops the command before anything is trained."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from cmlgraph.cli import app


@pytest.mark.parametrize("command", [
    ["compare", "--domains", "sinusoid", "--seeds", "0", "--steps", "1", "--test-tasks", "2"],
    ["leaderboard", "--graphs", "synthetic", "--methods", "maml", "--seeds", "0", "--steps", "1"],
    ["reproduce", "--only", "sinusoid", "--runs", "1", "--steps", "1"],
])
def test_a_missing_cuda_device_is_named_before_any_run(tmp_path, monkeypatch, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, [*command, "--device", "cuda", "--runs-dir", str(runs)])
    assert res.exit_code != 0
    assert "--device cuda: no CUDA device is available; use --device cpu" in str(res.exception) + res.output
    assert not runs.exists()  # nothing created, not even the runs folder


def test_the_device_is_written_into_every_run(tmp_path):
    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, ["compare", "--domains", "sinusoid", "--seeds", "0", "--steps", "1",
                                   "--test-tasks", "2", "--device", "cpu", "--runs-dir", str(runs)])
    assert res.exit_code == 0, res.output
    configs = list(runs.rglob("config.yaml"))
    assert len(configs) == 2 and all("device: cpu" in c.read_text() for c in configs)
