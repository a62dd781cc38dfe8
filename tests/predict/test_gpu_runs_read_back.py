"""A run trained on a GPU, read back (eval, adapt, embed) on a machine without one or on the GPU it names."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

import cmlgraph
import cmlgraph.train.reeval as reeval
from cmlgraph.cli import main
from cmlgraph.core.model import MetaModel


def _copy_on(run, tmp_path, device: str, **train):
    """A copy of a finished run whose config says it trained on ``device`` (as a run made on another machine and
    copied here)."""
    out = tmp_path / f"run-{device.replace(':', '')}"
    shutil.copytree(run, out)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["train"].update(device=device, **train)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    return out


@pytest.fixture
def gpu_run(maml_run, tmp_path):
    """A copy of a finished run whose config says it trained on ``cuda:1`` with CUDA graphs on."""
    return _copy_on(maml_run, tmp_path, "cuda:1", cuda_graphs="on")


def test_a_gpu_run_is_evaluated_predicted_and_embedded_on_a_machine_without_one(gpu_run, maml_run, capsys):
    """It was refused: "--device cuda: no CUDA device is available; use --device cpu", and `cmlgraph eval` had no
    --device. Read back on the CPU, it scores what it scored."""
    assert not torch.cuda.is_available()
    res = reeval.reevaluate(gpu_run)
    assert res["device"] == "cpu" and res["mean"] == pytest.approx(reeval.reevaluate(maml_run)["mean"], abs=1e-6)
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(gpu_run)])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and f"{res['mean']:.4f}" in out and "(on cpu; the run trained on cuda:1)" in out
    pred = cmlgraph.adapt(gpu_run, None, {0: "a", 1: "b"}, device="cpu")
    assert len(pred.labels) > 0
    assert cmlgraph.embed(gpu_run).shape[0] > 0


def test_the_model_read_back_is_put_on_the_device_it_is_evaluated_on(gpu_run, monkeypatch):
    """On a machine with one GPU a run of ``cuda:1`` is read back on ``cuda``; its model is moved there before the
    evaluation (it stayed on the CPU while the episodes went to the GPU: "Expected all tensors to be on the same
    device"). The CUDA calls are stood in (no GPU here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    moved: list[str] = []
    monkeypatch.setattr(MetaModel, "to", lambda self, device: (moved.append(str(device)), self)[1])
    seen: list[str] = []

    def evaluate(algo, model, params, domain, raws, device, progress=None):
        seen.append(str(device))
        return {"mean": 0.5, "ci95": 0.0, "num_tasks": len(raws), "nonfinite_tasks": 0}

    monkeypatch.setattr(reeval, "evaluate", evaluate)
    assert reeval.reevaluate(gpu_run)["device"] == "cuda"
    assert moved == ["cuda"] and seen == ["cuda"]


def test_an_apple_gpu_run_reads_back_on_the_cpu_and_an_asked_device_reaches_the_config(maml_run, tmp_path):
    """A run of ``mps`` (Apple's GPU) was refused here even with ``--device cpu``: the saved device fell back only
    for CUDA, and ``adapt``/``embed`` resolved the run's config before their ``device`` was looked at."""
    from cmlgraph.errors import ConfigError

    run = _copy_on(maml_run, tmp_path, "mps")
    assert reeval.reevaluate(run)["device"] == "cpu"
    assert len(cmlgraph.adapt(run, None, {0: "a", 1: "b"}, device="cpu").labels) > 0
    assert cmlgraph.embed(run, device="cpu").shape[0] > 0
    with pytest.raises(ConfigError, match="cuda"):  # asked for and not here: said, not silently replaced
        cmlgraph.adapt(run, None, {0: "a", 1: "b"}, device="cuda")
