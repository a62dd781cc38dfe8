"""k-hop computation trees under ``train.cuda_graphs`` (issue 18 item 4): which runs are eligible, and the capture's
padded plan buffers driven on the CPU through a stand-in graph that replays the recorded step on the buffers (the
real capture needs CUDA; the last test runs it where CUDA exists)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cmlgraph.backbones.gnn import STATIC_BATCH_KEY, STATIC_LAYOUT_KEY
from cmlgraph.config import Config, apply_overrides
from cmlgraph.core.episode import Episode
from cmlgraph.core.model import parameters_of
from cmlgraph.train.cuda_graphs import GraphedMetaStep, ineligible
from cmlgraph.train.trainer import build_experiment, prepare
from tests.conftest import assert_outgrown_once, assert_replay_syncs_only_for_one_hot, step_through

WAYS, SHOTS, QUERIES = 3, 2, 3


def _cfg(gnn: str = "gcn", dropout: float = 0.0, device: str = "cpu", first_order: bool = True) -> Config:
    cfg = Config()
    apply_overrides(cfg, {"data": {"task": "graph", "graph": "synthetic", "synthetic_nodes": 300,
                                   "synthetic_classes": 15, "ways": WAYS, "shots": SHOTS, "queries": QUERIES,
                                   "subgraph": "khop"},
                          "model": {"gnn": gnn, "hidden": 8, "dropout": dropout},
                          "algo": {"cml": True, "first_order": first_order, "inner_steps": 2},
                          "train": {"meta_batch": 3, "device": device}}, "test")
    return prepare(cfg)


def _experiment(gnn: str = "gcn", dropout: float = 0.0, sparse: bool = False, device: str = "cpu",
                first_order: bool = True):
    e = build_experiment(_cfg(gnn, dropout, device=device, first_order=first_order))
    if sparse:  # bag-of-words-like features kept sparse (CiteSeer's layout)
        x = e.domain.graph.x
        keep = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.03  # under compute_layout's 5 %
        e.domain.graph.x = (x * keep).to_sparse()
        e.domain._full.clear()
    e.model.train()
    return e


def _episodes(e, order: torch.Tensor, start: int, tasks: int = 3) -> list[Episode]:
    """``tasks`` episodes whose support and query nodes are taken from ``order`` at ``start``."""
    ns, nq = WAYS * SHOTS, WAYS * QUERIES
    y_s, y_q = torch.arange(WAYS).repeat(SHOTS), torch.arange(WAYS).repeat(QUERIES)
    out = []
    for t in range(tasks):
        nodes = order[start + (ns + nq) * t:start + (ns + nq) * (t + 1)]
        dev = e.device
        out.append(Episode(e.domain.tree_input(nodes[:ns], dev), y_s.to(dev), e.domain.tree_input(nodes[ns:], dev),
                           y_q.to(dev)))
    return out


def _by_degree(e) -> torch.Tensor:
    """Node ids, fewest neighbours first (small computation trees first, the largest last)."""
    deg = torch.bincount(e.domain.graph.edge_index[0], minlength=e.domain.graph.num_nodes)
    return deg.argsort(stable=True)


def _eager(e, episodes, batched):
    return e.algo.meta_gradients(e.model, parameters_of(e.model), episodes, e.domain.loss_fn, 0, batched=batched)


def _assert_same(ours, ref) -> None:
    torch.testing.assert_close(ours.loss.total, ref.loss.total, rtol=1e-5, atol=1e-6)
    for k in ref.grads:
        torch.testing.assert_close(ours.grads[k], ref.grads[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("gnn,sparse,batched,first_order", [
    ("gcn", False, True, True), ("sgc", False, True, True), ("sage", True, True, True), ("gin", False, None, True),
    ("gcn", False, True, False), ("sgc", False, True, False)])
def test_replays_equal_eager_and_outgrown_buffers_are_captured_again(stand_in, gnn, sparse, batched, first_order):
    """Small trees first, then the largest: the buffers grow (a second capture), and every step, replayed or
    captured, equals the eager meta-step of its own batch. ``batched=None`` with one task: the unstacked path;
    second order (the default) through the same buffers."""
    e = _experiment(gnn, sparse=sparse, first_order=first_order)
    tasks = 3 if batched else 1
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, batched)
    order = _by_degree(e)
    small = [_episodes(e, order, s, tasks) for s in (0, 5)]
    assert (small[0][0].support_x.x.layout != torch.strided) is sparse  # the path under test
    large = _episodes(e, order.flip(0), 0, tasks)
    counts = step_through(step, [*small, large, small[1]], lambda eps: _eager(e, eps, batched), _assert_same)
    if gnn == "sgc":  # SGC reads the requested nodes' propagated rows only: one size, never outgrown
        assert counts[0] == (1, 1) and counts[2][0] == counts[1][0] == 1
        assert counts[3] == (counts[2][0], counts[2][1] + 1)
    else:
        assert_outgrown_once(counts)  # the largest trees outgrew the buffers
    for side in ("support_x", "query_x"):  # the recorded step reads the padded buffers, not a layout of its own
        x = getattr(step.static[0], side)
        found = x.__dict__[STATIC_LAYOUT_KEY] if batched is None else x.__dict__[STATIC_BATCH_KEY][1]
        assert found is step.buffers.layouts[(side, 0)]
    # what a replay runs, counted on the CPU: refilling the buffers and the recorded step issue no sync
    nxt = small[0]
    for ep in nxt:  # the plans' constants, as the first eager pass (or the prefetch worker) builds them
        _eager(e, [ep], False)
    assert_replay_syncs_only_for_one_hot(step, nxt)


def test_another_node_count_steps_eagerly_without_a_capture(stand_in):
    e = _experiment()
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True)
    order = torch.randperm(e.domain.graph.num_nodes, generator=torch.Generator().manual_seed(5))
    step(_episodes(e, order, 0), 0)
    odd = [Episode(e.domain.tree_input(ep.support_x.nodes[:3]), ep.support_y[:3], ep.query_x, ep.query_y)
           for ep in _episodes(e, order, 60)]  # 3 support nodes a task, not 6
    captures = step.captures
    _assert_same(step(odd, 1), _eager(e, odd, True))
    assert step.captures == captures and step.failed is None


def test_with_dropout_the_check_draws_the_same_masks(stand_in):
    """GCN with dropout reads the input level (input dropout) and every layer's aggregation; the first capture's
    check compares the replay with the eager step on the buffers, the RNG restored in between, so it passes."""
    e = _experiment("gcn", dropout=0.5)
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True)
    order = torch.randperm(e.domain.graph.num_nodes, generator=torch.Generator().manual_seed(6))
    out = step(_episodes(e, order, 0), 0)
    assert step.failed is None and step.captures == 1
    assert step.buffers.reads.complete and torch.isfinite(out.loss.total)
    replay = step(_episodes(e, order, 45), 1)
    assert step.failed is None and torch.isfinite(replay.loss.total)


def test_k_hop_runs_are_eligible_on_cuda_gat_with_dropout_too():
    e = _experiment("sage")
    order = torch.arange(e.domain.graph.num_nodes)
    cfg = _cfg("sage")
    cfg.train.device = "cuda"
    exp = SimpleNamespace(algo=e.algo, model=e.model, device=torch.device("cuda"))
    assert ineligible(cfg, exp, episodes=_episodes(e, order, 0)) is None
    cfg.model.gnn, cfg.model.dropout = "gat", 0.5  # k-hop GAT with dropout: its padded union is captured too
    assert ineligible(cfg, exp, episodes=_episodes(e, order, 0)) is None  # (tests/train/test_cuda_graph_unions.py)
    cfg.model.dropout = 0.0
    cfg.model.gnn = "sage"
    cfg.algo.first_order = False  # second order is captured too
    assert ineligible(cfg, exp, episodes=_episodes(e, order, 0)) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("gnn,first_order", [("sgc", True), ("gcn", True), ("sage", True), ("gcn", False)])
def test_captured_k_hop_meta_steps_equal_eager_on_cuda(gnn, first_order):
    """The real capture (no stand-in): every step, captured, replayed or recaptured after the trees outgrew the
    buffers, equals the eager meta-step of its own batch (dropout off: padded masks differ from unpadded ones);
    second order too (the double backward's kernels recorded like any others)."""
    e = _experiment(gnn, device="cuda", first_order=first_order)
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True, strict=True)
    order = _by_degree(e)
    batches = [_episodes(e, order, s) for s in (0, 5, 10)]
    batches += [_episodes(e, order.flip(0), 0), _episodes(e, order, 3)]
    for i, eps in enumerate(batches):
        _assert_same(step(eps, i), _eager(e, eps, True))
    assert step.failed is None and step.captures >= 2 and step.replays >= len(batches)


def test_a_failed_recapture_keeps_the_working_graph(stand_in, monkeypatch):
    """Growing the buffers fails (here: the grown features too wide to pad): that batch steps eagerly, the captured
    graph is kept and small batches still replay; later outgrowing batches step eagerly without trying again."""
    import cmlgraph.backbones.plan_static as ps

    e = _experiment("gcn")
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True)
    order = _by_degree(e)
    small, large = _episodes(e, order, 0), _episodes(e, order.flip(0), 0)
    step(small, 0)
    graph, replays = step.graph, step.replays
    monkeypatch.setattr(ps, "MAX_FEATURE_BYTES", 1)
    _assert_same(step(large, 1), _eager(e, large, True))
    assert step.failed is None and "too wide to pad" in step.grow_failed
    assert step.graph is graph and step.captures == 1
    _assert_same(step(small, 2), _eager(e, small, True))
    assert step.replays == replays + 1  # the kept graph replays
    step(large, 3)
    assert step.captures == 1  # not tried again
