"""AMM-GNN under ``train.cuda_graphs`` (issue 18 item 4): eligible in the Table 3 setting, and the capture's padded
buffers (computation trees, drawn rows) driven on the CPU through a stand-in graph that replays the recorded step on
the buffers (the real capture needs CUDA; the last test runs it where CUDA exists)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cmlgraph.backbones.ammgnn import MATCH_ROWS_KEY, STATIC_STACK_KEY
from cmlgraph.config import Config, apply_overrides
from cmlgraph.core.model import parameters_of
from cmlgraph.graphs.types import NodeEpisode
from cmlgraph.train.cuda_graphs import GraphedMetaStep, config_ineligible, ineligible
from cmlgraph.train.sync_counter import SyncCounter
from cmlgraph.train.trainer import build_experiment, prepare
from tests.conftest import assert_outgrown_once, step_through

WAYS, SHOTS, QUERIES = 2, 5, 4


def _cfg(device: str = "cpu", dropout: float = 0.0, max_tasks: int | None = None) -> Config:
    cfg = Config()
    apply_overrides(cfg, {"data": {"task": "graph", "graph": "synthetic", "synthetic_nodes": 300,
                                   "synthetic_classes": 15, "ways": WAYS, "shots": SHOTS,
                                   "queries": QUERIES},
                          "model": {"hidden": 8, "dropout": dropout},
                          "algo": {"algo": "ammgnn", "cml": True, "first_order": True, "inner_steps": 3},
                          "train": {"meta_batch": 3, "device": device}}, "test")
    return prepare(cfg)


def _experiment(device: str = "cpu", dropout: float = 0.0, max_tasks: int | None = None, sparse: bool = False):
    e = build_experiment(_cfg(device, dropout))
    if sparse:  # bag-of-words-like features kept sparse (CiteSeer's raw layout)
        x = e.domain.graph.x
        keep = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.03
        e.domain.graph.x = (x * keep).to_sparse()
        e.domain._full.clear()
    if max_tasks is not None:
        e.model.extractor.max_tasks = max_tasks
    e.model.train()
    return e


def _episodes(e, order: torch.Tensor, start: int, tasks: int = 3) -> list:
    """``tasks`` episodes whose support and query nodes are taken from ``order`` at ``start``."""
    ns, nq = WAYS * SHOTS, WAYS * QUERIES
    out = []
    for t in range(tasks):
        nodes = order[start + (ns + nq) * t:start + (ns + nq) * (t + 1)]
        raw = NodeEpisode(nodes[:ns], torch.arange(WAYS).repeat(SHOTS), nodes[ns:], torch.arange(WAYS).repeat(QUERIES),
                          torch.arange(WAYS))
        out.append(e.domain.materialize(raw, e.device))
    return out


def _by_degree(e) -> torch.Tensor:
    deg = torch.bincount(e.domain.graph.edge_index[0], minlength=e.domain.graph.num_nodes)
    return deg.argsort(stable=True)


def _eager(e, episodes, batched):
    return e.algo.meta_gradients(e.model, parameters_of(e.model), episodes, e.domain.loss_fn, 0, batched=batched)


def _assert_same(ours, ref) -> None:
    torch.testing.assert_close(ours.loss.total, ref.loss.total, rtol=1e-5, atol=1e-6)
    for k in ref.grads:
        torch.testing.assert_close(ours.grads[k], ref.grads[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("batched,max_tasks,sparse", [(True, None, False), (True, 2, False), (None, None, False),
                                                      (True, None, True)])
def test_replays_equal_eager_and_outgrown_buffers_are_captured_again(stand_in, batched, max_tasks, sparse):
    """Small trees first, then the largest: the buffers grow (a second capture), and every step equals the eager
    meta-step of its own batch, the regulariser included. ``max_tasks`` 2: the stacked tasks run in two groups,
    each with its own buffers; ``batched=None`` with one task: the unstacked path."""
    e = _experiment(max_tasks=max_tasks, sparse=sparse)
    tasks = 3 if batched else 1
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, batched)
    order = _by_degree(e)
    small = [_episodes(e, order, s, tasks) for s in (0, 7)]
    assert (small[0][0].support_x.graph.x.layout != torch.strided) is sparse  # the path under test
    large = _episodes(e, order.flip(0), 0, tasks)
    counts = step_through(step, [*small, large, small[1]], lambda eps: _eager(e, eps, batched), _assert_same)
    assert_outgrown_once(counts)  # the largest trees outgrew the buffers
    groups = {key[1] for key in step.buffers.layouts}
    assert len(groups) == (2 if max_tasks == 2 else 1)
    q = step.static[0].query_x
    assert q.memo[MATCH_ROWS_KEY].data_ptr() == step.buffers.rows[("query_x", 0)][0].data_ptr()  # a view
    if batched:
        memos = q.memo[STATIC_STACK_KEY][1][("groups", None)]
        assert [m["layout"] for m in memos] == [step.buffers.layouts[("query_x", g)] for g in sorted(groups)]
    nxt = small[0]
    for ep in nxt:  # the plans' constants, as the first eager pass builds them
        _eager(e, [ep], False)
    with SyncCounter() as counter:
        step.buffers.copy_in(nxt)
        step._eager(step.static, 0)
    assert counter.total == 0, counter.counts


def test_with_dropout_the_check_draws_the_same_masks(stand_in):
    e = _experiment(dropout=0.5)
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True)
    order = torch.randperm(e.domain.graph.num_nodes, generator=torch.Generator().manual_seed(3))
    out = step(_episodes(e, order, 0), 0)
    assert step.failed is None and step.captures == 1 and torch.isfinite(out.loss.total)
    replay = step(_episodes(e, order, 60), 1)
    assert step.failed is None and step.replays == 2 and torch.isfinite(replay.loss.total)


def test_table3_ammgnn_is_eligible_on_cuda():
    e = _experiment()
    cfg = _cfg()
    cfg.train.device = "cuda"
    assert config_ineligible(cfg) is None
    exp = SimpleNamespace(algo=e.algo, model=e.model, device=torch.device("cuda"))
    assert ineligible(cfg, exp, episodes=_episodes(e, torch.arange(e.domain.graph.num_nodes), 0)) is None
    cfg.algo.first_order = False  # second order is captured too
    assert config_ineligible(cfg) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_captured_ammgnn_meta_steps_equal_eager_on_cuda():
    """The real capture: every step, captured, replayed or recaptured, equals the eager meta-step of its batch."""
    e = _experiment(device="cuda")
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True, strict=True)
    order = _by_degree(e)
    batches = [_episodes(e, order, s) for s in (0, 7, 14)] + [_episodes(e, order.flip(0), 0), _episodes(e, order, 3)]
    for i, eps in enumerate(batches):
        _assert_same(step(eps, i), _eager(e, eps, True))
    assert step.failed is None and step.captures >= 2 and step.replays >= len(batches)
