"""G-Meta under ``train.cuda_graphs`` (issue 18 item 4): which runs are eligible, and the capture's padded ball
buffers driven on the CPU through a stand-in graph that replays the recorded step on the buffers (the real capture
needs CUDA; ``tests/train/test_cuda_graphs.py`` compares it with eager where CUDA exists)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from cmlgraph.algorithms.registry import get_algorithm
from cmlgraph.algorithms.tlp import GMeta
from cmlgraph.backbones.ball_static import STATIC_KEY
from cmlgraph.backbones.gmeta import BallGCN
from cmlgraph.config import AlgoConfig, Config, apply_overrides
from cmlgraph.core.episode import Episode
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.graphs.balls import STACK_KEY, BallIndex, BallInput
from cmlgraph.train.cuda_graphs import GraphedMetaStep, config_ineligible, ineligible
from cmlgraph.train.sync_counter import SyncCounter
from cmlgraph.train.trainer import prepare
from tests.conftest import assert_outgrown_once, step_through


def _index(directed: bool = False, binary: bool = False, n: int = 80, sparse: bool = False) -> BallIndex:
    g = torch.Generator().manual_seed(0)
    src, dst = torch.randint(n, (200,), generator=g), torch.randint(n, (200,), generator=g)
    keep = src != dst
    ei = torch.stack([src[keep], dst[keep]])
    x = (torch.rand(n, 7, generator=g) < 0.4).float() if binary else torch.randn(n, 7, generator=g)
    if sparse:
        x = (x * (torch.rand(n, 7, generator=g) < 0.2)).to_sparse_csr()
    return BallIndex(x, ei if directed else torch.cat([ei, ei.flip(0)], 1))


def _edges(index: BallIndex) -> torch.Tensor:
    """The edge list of ``index``'s graph (its ``D⁻¹(A + I)`` CSR without the self-loops)."""
    rows = torch.repeat_interleave(torch.arange(index.num_nodes), index.crow[1:] - index.crow[:-1])
    keep = rows != index.col
    return torch.stack([rows[keep], index.col[keep].long()])


def _batch(index: BallIndex, order: torch.Tensor, start: int, tasks: int = 3, device: str = "cpu") -> list[Episode]:
    """``tasks`` episodes of 4 support and 6 query nodes, taken from ``order`` at ``start``."""
    eps = []
    for t in range(tasks):
        nodes = order[start + 10 * t:start + 10 * t + 10]
        y = torch.tensor([0, 1] * 5, device=device)
        eps.append(Episode(BallInput(index, nodes[:4], dropout=True), y[:4], BallInput(index, nodes[4:]), y[4:]))
    return eps


@pytest.fixture
def gmeta(stand_in):

    def make(dropout: float = 0.0, batched=True, index: BallIndex | None = None):
        torch.manual_seed(0)
        model = MetaModel(BallGCN(7, hidden=5, dropout=dropout), 2, co_depth=1, co_hidden=6)
        algo = GMeta(AlgoConfig(algo="gmeta", cml=True, gamma=0.2, inner_steps=3, inner_lr=0.05, first_order=True))
        return model, algo, GraphedMetaStep(algo, model, F.cross_entropy, batched), index or _index()

    return make


def _eager(model, algo, episodes, batched=True):
    return algo.meta_gradients(model, parameters_of(model), episodes, F.cross_entropy, 0, batched=batched)


def _assert_same(ours, ref) -> None:
    torch.testing.assert_close(ours.loss.total, ref.loss.total, rtol=1e-5, atol=1e-6)
    for k in ref.grads:
        torch.testing.assert_close(ours.grads[k], ref.grads[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("batched", [True, None])
def test_replays_equal_eager_and_outgrown_buffers_are_captured_again(gmeta, batched, sparse):
    """Small balls first, then the largest: the buffers grow (a second capture), and every step, replayed or
    captured, equals the eager meta-step of its own batch. ``batched=None`` with one task: the unstacked path;
    sparse features densify into the buffers."""
    model, algo, step, index = gmeta(batched=batched, index=_index(sparse=sparse))
    tasks = 3 if batched else 1
    order = index.ball_sizes(torch.arange(index.num_nodes)).argsort()
    small = [_batch(index, order, s, tasks) for s in (0, 2)]
    large = _batch(index, order.flip(0), 0, tasks)
    counts = step_through(step, [*small, large, small[0]], lambda eps: _eager(model, algo, eps, batched),
                          _assert_same)
    assert_outgrown_once(counts)  # the largest balls outgrew the buffers
    for side in ("support_x", "query_x"):  # the recorded step reads the padded buffers, not a layout of its own
        x = getattr(step.static[0], side)
        found = x.memo if batched is None else x.memo[STACK_KEY][1]["layouts"][0]
        assert found is step.buffers.layouts[side] and found[STATIC_KEY]
    # what a replay runs, counted on the CPU: refilling the buffers and the recorded step issue no sync
    with SyncCounter() as counter:
        step.buffers.copy_in(small[1])
        step._eager(step.static, 0)
    assert counter.total == 0, counter.counts


def test_another_node_count_steps_eagerly_without_a_capture(gmeta):
    model, algo, step, index = gmeta()
    order = torch.randperm(index.num_nodes, generator=torch.Generator().manual_seed(5))
    step(_batch(index, order, 0), 0)
    odd = [Episode(BallInput(index, ep.support_x.nodes[:3], dropout=True), ep.support_y[:3], ep.query_x,
                   ep.query_y) for ep in _batch(index, order, 0)]  # 3 support nodes a task, not 4
    captures = step.captures
    _assert_same(step(odd, 1), _eager(model, algo, odd))
    assert step.captures == captures and step.failed is None


def test_with_dropout_the_check_draws_the_same_masks(gmeta):
    """The first capture's check compares the replay with the eager step on the buffers, the RNG restored in
    between: with dropout 0.5 both draw the same masks, so the check passes instead of falling back."""
    model, algo, step, index = gmeta(dropout=0.5)
    order = torch.randperm(index.num_nodes, generator=torch.Generator().manual_seed(6))
    model.train()
    out = step(_batch(index, order, 0), 0)
    assert step.failed is None and step.captures == 1
    assert torch.isfinite(out.loss.total)
    replay = step(_batch(index, order, 30), 1)
    assert step.replays == 2 and torch.isfinite(replay.loss.total)


def _table3_cfg(tmp_path) -> Config:
    cfg = Config()
    apply_overrides(cfg, {"data": {"task": "graph", "graph": "synthetic", "synthetic_nodes": 300,
                                   "synthetic_classes": 15, "protocol": "tlp", "ways": 2, "shots": 5},
                          "model": {"hidden": 16, "dropout": 0.5},
                          "algo": {"algo": "gmeta", "cml": True, "first_order": True, "inner_steps": 20},
                          "run": {"runs_dir": str(tmp_path), "name": "g"}}, "test")
    cfg = prepare(cfg)
    cfg.train.device = "cuda"
    return cfg


def test_table3_gmeta_is_eligible_and_unpaddable_graphs_say_why(tmp_path):
    cfg = _table3_cfg(tmp_path)
    assert config_ineligible(cfg) is None
    exp = SimpleNamespace(algo=get_algorithm(cfg.algo), device=torch.device("cuda"))
    order = torch.arange(80)
    assert ineligible(cfg, exp, episodes=_batch(_index(), order, 0, 1)) is None
    assert "directed" in ineligible(cfg, exp, episodes=_batch(_index(directed=True), order, 0, 1))
    binary = _batch(_index(binary=True), order, 0, 1)
    binary[0].support_x.index.memo["binary_codes"] = torch.zeros(1)  # as on the CPU, where the tables win
    assert "binary-coded" in ineligible(cfg, exp, episodes=binary)
    cfg.algo.first_order = False  # second order is captured too
    assert config_ineligible(cfg) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("sparse", [False, True])
def test_captured_gmeta_meta_steps_equal_eager_on_cuda(sparse):
    """The real capture (no stand-in): every step, captured, replayed or recaptured after the balls outgrew the
    buffers, equals the eager meta-step of its own batch (dropout off: the padded masks differ from unpadded ones)."""
    cpu = _index(sparse=sparse)
    index = BallIndex(cpu.x.to("cuda"), _edges(cpu))
    torch.manual_seed(0)
    model = MetaModel(BallGCN(7, hidden=5, dropout=0.0), 2, co_depth=1, co_hidden=6).cuda()
    algo = GMeta(AlgoConfig(algo="gmeta", cml=True, gamma=0.2, inner_steps=3, inner_lr=0.05, first_order=True))
    step = GraphedMetaStep(algo, model, F.cross_entropy, True, strict=True)
    order = index.ball_sizes(torch.arange(index.num_nodes)).argsort()
    batches = [_batch(index, order, s, device="cuda") for s in (0, 2, 4)]
    batches += [_batch(index, order.flip(0), 0, device="cuda"), _batch(index, order, 1, device="cuda")]
    for i, eps in enumerate(batches):
        ours = step(eps, i)
        _assert_same(ours, _eager(model, algo, eps))
    assert step.failed is None and step.captures >= 2 and step.replays >= len(batches)
