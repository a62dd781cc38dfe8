"""A CUDA bench spawns its case processes (a forked child cannot initialise CUDA); the CPU keeps its defaults."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.bench.api import default_start_method, run_bench
from cmlgraph.errors import ConfigError


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
@pytest.mark.parametrize("quick", [True, False])
def test_cuda_always_spawns(device: str, quick: bool) -> None:
    assert default_start_method(device, quick) == "spawn"


def test_cpu_defaults_unchanged() -> None:
    assert default_start_method("cpu", quick=True) == "forkserver"
    assert default_start_method("cpu", quick=False) == "spawn"


def test_forkserver_on_cuda_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="spawn"):
        run_bench(quick=True, device="cuda", start_method="forkserver")
