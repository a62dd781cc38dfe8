"""Shared fixtures: tiny float64 models and episodes for exact gradient checks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from cmlgraph.backbones.mlp import MLPBackbone
from cmlgraph.core.episode import Episode
from cmlgraph.core.model import MetaModel

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` on 2 cores: one torch thread per worker. With two each, a worker's OpenMP threads spin at their
    # barriers while the other worker (or a test's subprocess) holds the cores: in CI three conv tests that take
    # 0.1 s alone took 11 s each. Subprocesses started by tests keep torch's own default.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root: $CMLGRAPH_DATA, else ../shared/datasets."""
    return Path(os.environ.get("CMLGRAPH_DATA", SHARED))


@contextlib.contextmanager
def ctrl_c_at(monkeypatch: pytest.MonkeyPatch, at: str) -> Iterator[None]:
    """Ctrl-C (SIGINT, Python's default handler as in a terminal) at the kill hook's point ``at``
    (``cmlgraph.train.io.KILL_ENV``, e.g. ``step_end:4:INT``), in this process."""
    import signal

    from cmlgraph.train.io import KILL_ENV

    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setenv(KILL_ENV, at)
    try:
        yield
    finally:
        monkeypatch.delenv(KILL_ENV)
        signal.signal(signal.SIGINT, before)


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
    """``GraphedMetaStep`` records through :class:`StandInGraph` (the capture's bookkeeping, checked on the CPU),
    and G-Meta's layouts are the GPU's (the shared union, which CUDA graphs pad: never the CPU's per-task feature
    blocks, :func:`cmlgraph.backbones.gmeta.task_blocks_win`)."""
    from cmlgraph.backbones import gmeta
    from cmlgraph.train.cuda_graphs import GraphedMetaStep

    monkeypatch.setattr(gmeta, "task_blocks_win", lambda *args: False)

    def record(self, fn):
        out = fn()
        return StandInGraph(fn, out), out

    monkeypatch.setattr(GraphedMetaStep, "_record", record)


def step_through(step, batches, eager, same) -> list[tuple[int, int]]:
    """Each meta-batch through a ``GraphedMetaStep`` (under the stand-in), each result checked by ``same`` against
    ``eager(batch)`` and never a fallback: the step's ``(captures, replays)`` after each batch."""
    counts = []
    for i, eps in enumerate(batches):
        same(step(eps, i), eager(eps))
        assert step.failed is None, step.failed
        counts.append((step.captures, step.replays))
    return counts


def assert_outgrown_once(counts: list[tuple[int, int]]) -> None:
    """``step_through``'s counts for small, small, largest, small: captured and replayed once for the check, captured
    again when the largest batch outgrew the buffers, then a small batch replayed in the grown ones."""
    assert counts[0] == (1, 1)  # captured, replayed once for the check
    assert counts[2][0] == counts[1][0] + 1  # the largest batch outgrew the buffers: captured again
    assert counts[3] == (counts[2][0], counts[2][1] + 1)  # a small batch fits the grown buffers: a replay


def assert_replay_syncs_only_for_one_hot(step, batch) -> None:
    """What a replay runs, counted on the CPU: refilling the capture's buffers with ``batch`` issues no sync, and the
    recorded step on them only the proto head's ``F.one_hot`` class-range check (a CPU-only read; ``ONE_HOT`` in
    ``tests/train/test_sync_hot_paths.py``)."""
    from cmlgraph.train.sync_counter import SyncCounter

    with SyncCounter() as counter:
        step.buffers.copy_in(batch)
    assert counter.total == 0, counter.counts
    with SyncCounter() as counter:
        step._eager(step.static, 0)
    assert counter.counts == {"aten._local_scalar_dense": 2}, counter.counts


def plan_values(plan: Any) -> list:
    """Every tensor of a plan as (where, tensor) with CSR and blocks split into parts, in a fixed order."""
    from cmlgraph.backbones.gnn_plan import SparseBlock

    out: list = []

    def add(where: str, v) -> None:  # noqa: ANN001
        if isinstance(v, SparseBlock):
            out.extend([(where + ".rows", v.rows), (where + ".cols", v.cols), (where + ".vals", v.vals),
                        (where + ".shape", v.shape)])
        elif isinstance(v, torch.Tensor) and v.layout == torch.sparse_csr:
            out.extend([(where + ".crow", v.crow_indices()), (where + ".col", v.col_indices()),
                        (where + ".val", v.values()), (where + ".shape", tuple(v.shape))])
        else:
            out.append((where, v))

    out.append(("sizes", list(plan.sizes)))
    for i, m in enumerate(plan.mats):
        add(f"mats[{i}]", m)
    add("out", plan.out)
    for k in sorted(plan.memo):
        add(f"memo[{k}]", plan.memo[k])
    return out


def assert_same_plan(a: Any, b: Any) -> None:
    """Two k-hop plans hold equal tensors (dtype and shape too) everywhere and read the same features."""
    va, vb = plan_values(a), plan_values(b)
    assert [w for w, _ in va] == [w for w, _ in vb]
    for (where, x), (_, y) in zip(va, vb, strict=True):
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), where
        else:
            assert x == y, where
    assert a.x is b.x
