"""``seeded``: a fixed seed for one computation, on the CPU's and its device's generators only."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.core.seeded import seeded


def test_the_block_draws_from_the_seed_and_the_stream_goes_on_after_it():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    with seeded(7):
        inside = torch.rand(4)
    assert torch.equal(inside, torch.rand(4, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(torch.get_rng_state(), before)


@pytest.fixture
def cuda_seeds(monkeypatch) -> list[int]:
    """The seeds given to every CUDA generator (``torch.manual_seed`` seeds them all, lazily without CUDA)."""
    seeds: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeds.append)
    return seeds


def test_no_cuda_generator_is_seeded_for_a_cpu_computation(cuda_seeds):
    """(``torch.manual_seed`` inside ``fork_rng(devices=[])`` left every CUDA generator at the fixed seed.)"""
    with seeded(0):
        torch.rand(2)
    assert cuda_seeds == []


def test_the_pca_start_and_grace_leave_the_cuda_generators_alone(cuda_seeds):
    """The PCA start of SGC (the default init) and GRACE's pretraining ran ``torch.manual_seed``: on a GPU every seed
    of a run then drew the same dropout masks, from the fixed seed's CUDA stream."""
    from cmlgraph.backbones.pca_init import principal_axes
    from cmlgraph.baselines.grace import pretrain_grace
    from cmlgraph.graphs import load_graph
    from tests.baselines.test_grace import SMALL

    m = torch.randn(30, 6, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(9)
    cuda_seeds.clear()
    axes = principal_axes(m, 3)
    g = load_graph("synthetic", num_nodes=60, num_classes=6)
    pretrain_grace(g.x, g.edge_index, SMALL, epochs=1, seed=5)
    assert cuda_seeds == []
    torch.manual_seed(1)  # the axes do not depend on the global stream
    assert torch.equal(principal_axes(m, 3), axes)
