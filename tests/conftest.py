"""Shared fixtures: tiny float64 models and episodes for exact gradient checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cmlgraph.backbones.mlp import MLPBackbone
from cmlgraph.core.episode import Episode
from cmlgraph.core.model import MetaModel

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root: $CMLGRAPH_DATA, else ../shared/datasets."""
    return Path(os.environ.get("CMLGRAPH_DATA", SHARED))


def tiny_model(co_depth: int | None = 0, seed: int = 0, out: int = 3) -> MetaModel:
    """A 2→4→4 MLP extractor with linear heads, in float64."""
    torch.manual_seed(seed)
    return MetaModel(MLPBackbone(2, (4, 4)), out, co_depth).double()


def tiny_episodes(n: int = 2, ways: int = 3, seed: int = 1) -> list[Episode]:
    """Random 3-way classification episodes in float64."""
    g = torch.Generator().manual_seed(seed)
    eps = []
    for _ in range(n):
        sx = torch.randn(ways * 2, 2, generator=g, dtype=torch.float64)
        qx = torch.randn(ways * 3, 2, generator=g, dtype=torch.float64)
        sy = torch.arange(ways).repeat(2)
        qy = torch.arange(ways).repeat(3)
        eps.append(Episode(sx, sy, qx, qy))
    return eps


def unscaled_graph(name: str = "unscaled"):
    """A 240-node, 8-class graph whose features sit in the tens (unscaled): raw features diverge at inner lr
    0.5, standardised ones learn."""
    import numpy as np

    from cmlgraph.graphs import from_arrays

    rng = np.random.default_rng(0)
    n, classes = 240, 8
    y = np.arange(n) % classes
    x = (rng.normal(size=(classes, 16))[y] + 0.5 * rng.normal(size=(n, 16))) * 30 + 40
    ei = np.stack([rng.integers(0, n, 3 * n), rng.integers(0, n, 3 * n)])
    return from_arrays(ei, x, y, name=name)


def register_sparse_graph(name: str, nodes: int, edges: int, classes: int, split: str, seed: int) -> None:
    """Register a random graph with bag-of-words-like sparse features (64 columns, 3 % non-zero: kept sparse, as
    Cora's and CiteSeer's raw features are) under ``name``."""
    from cmlgraph.domains.graph import register_graph
    from cmlgraph.graphs import from_arrays

    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(nodes, 64, generator=gen) < 0.03).float() * torch.rand(nodes, 64, generator=gen)
    edge_index = torch.randint(0, nodes, (2, edges), generator=gen)
    register_graph(from_arrays(edge_index, x.to_sparse(), torch.arange(nodes) % classes, name=name, split=split))


class StandInGraph:
    """A CUDA graph's behaviour on the CPU: ``replay()`` reruns the recorded function and writes its results into
    the output buffers returned at capture (so the buffers, not fresh tensors, carry each replay's results)."""

    def __init__(self, fn, out) -> None:
        self.fn, self.out = fn, out

    def replay(self) -> None:
        new = self.fn()
        with torch.no_grad():
            for name in ("meta", "co", "total"):
                getattr(self.out.loss, name).copy_(getattr(new.loss, name))
            for k, v in new.grads.items():
                self.out.grads[k].copy_(v)


@pytest.fixture
def stand_in(monkeypatch):
    """``GraphedMetaStep`` records through :class:`StandInGraph` (the capture's bookkeeping, checked on the CPU)."""
    from cmlgraph.train.cuda_graphs import GraphedMetaStep

    def record(self, fn):
        out = fn()
        return StandInGraph(fn, out), out

    monkeypatch.setattr(GraphedMetaStep, "_record", record)
