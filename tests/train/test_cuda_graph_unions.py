"""GAT's k-hop subgraphs under ``train.cuda_graphs`` (issue 18 item 4): which runs are eligible, and the capture's
padded union buffers driven on the CPU through a stand-in graph that replays the recorded step on the buffers (the
real capture needs CUDA; the last test runs it where CUDA exists)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cmlgraph.backbones.gnn import STATIC_BATCH_KEY
from cmlgraph.config import Config, apply_overrides
from cmlgraph.core.episode import Episode
from cmlgraph.core.model import parameters_of
from cmlgraph.domains.graph import register_graph
from cmlgraph.graphs import from_arrays
from cmlgraph.train.cuda_graphs import GAT_ATTENTION_DROPOUT, GraphedMetaStep, ineligible
from cmlgraph.train.trainer import build_experiment, prepare
from tests.conftest import assert_outgrown_once, assert_replay_syncs_only_for_one_hot, step_through


def _sparse_graph() -> None:
    """A graph of average degree 3: 2-hop subgraphs of a few dozen nodes, of sizes that vary with the task."""
    gen = torch.Generator().manual_seed(0)
    n = 400
    register_graph(from_arrays(torch.randint(0, n, (2, 600), generator=gen), torch.randn(n, 7, generator=gen),
                               torch.arange(n) % 15, name="unions-sparse", split="5/5/5"))


_sparse_graph()


def _cfg(dropout: float = 0.0, device: str = "cpu", first_order: bool = True) -> Config:
    cfg = Config()
    apply_overrides(cfg, {"data": {"task": "graph", "graph": "unions-sparse", "ways": 3, "shots": 2, "queries": 3,
                                   "subgraph": "khop"},
                          "model": {"gnn": "gat", "gat_heads": 2, "hidden": 8, "dropout": dropout},
                          "algo": {"cml": True, "first_order": first_order, "inner_steps": 2},
                          "train": {"meta_batch": 3, "device": device}}, "test")
    return prepare(cfg)


def _experiment(device: str = "cpu", first_order: bool = True, dropout: float = 0.0):
    e = build_experiment(_cfg(dropout, device, first_order))
    e.model.train()
    return e


def _batches(e, count: int = 4) -> list[list[Episode]]:
    """Meta-batches of 3 tasks, ordered by their largest subgraph: small ones first, the largest last."""
    raws = e.domain.sample("train", 3 * count * 2, torch.Generator().manual_seed(7))
    eps = sorted((e.domain.materialize(r, e.device) for r in raws), key=lambda ep: ep.support_x.num_nodes)
    eps = eps[::2]  # spread over the sizes
    return [eps[3 * i:3 * i + 3] for i in range(count)]


def _eager(e, episodes, batched=True):
    return e.algo.meta_gradients(e.model, parameters_of(e.model), episodes, e.domain.loss_fn, 0, batched=batched)


def _assert_same(ours, ref) -> None:
    torch.testing.assert_close(ours.loss.total, ref.loss.total, rtol=1e-5, atol=1e-6)
    for k in ref.grads:
        torch.testing.assert_close(ours.grads[k], ref.grads[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("first_order", [True, False])
def test_replays_equal_eager_and_outgrown_buffers_are_captured_again(stand_in, first_order):
    e = _experiment(first_order=first_order)
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True)
    batches = _batches(e)
    sizes = [max(ep.support_x.num_nodes for ep in b) for b in batches]
    assert sizes[0] < sizes[-1]  # subgraphs of data-dependent sizes: the padding and the growth are exercised
    counts = step_through(step, [batches[0], batches[1], batches[-1], batches[0]], lambda eps: _eager(e, eps),
                          _assert_same)
    assert_outgrown_once(counts)  # the largest subgraphs outgrew the buffers
    for side in ("support_x", "query_x"):  # the recorded step reads the padded union, not a layout of its own
        x = getattr(step.static[0], side)
        assert x.__dict__[STATIC_BATCH_KEY][1] is step.buffers.unions[side]
    assert_replay_syncs_only_for_one_hot(step, batches[1])


def test_a_meta_batch_of_one_task_replays_the_padded_union_too(stand_in):
    """``--meta-batch 1 --batched on``: one task's subgraph is its "whole graph" too, and the pass took the
    whole-graph path on the capture's fixed input (the first batch's own subgraph), never reading the padded
    buffers: every replay returned the first batch's loss and gradients. Each replay equals its batch's eager step."""
    e = _experiment()
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True)
    batches = [[b[0]] for b in _batches(e)]
    counts = step_through(step, [batches[0], batches[1], batches[-1], batches[0]], lambda eps: _eager(e, eps),
                          _assert_same)
    assert counts[-1][1] >= 3  # replayed, not stepped eagerly
    x = step.static[0].support_x
    assert x.__dict__[STATIC_BATCH_KEY][1] is step.buffers.unions["support_x"]


def test_another_node_count_steps_eagerly_and_tasks_one_by_one_are_not_captured(stand_in):
    e = _experiment()
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True)
    batches = _batches(e, 2)
    step(batches[0], 0)
    odd = [Episode(type(ep.support_x)(ep.support_x.x, ep.support_x.edge_index, ep.support_x.nodes[:3],
                                      ep.support_x.cache, subgraph=True), ep.support_y[:3], ep.query_x, ep.query_y)
           for ep in batches[1]]  # 3 support nodes a task, not 6
    captures = step.captures
    _assert_same(step(odd, 1), _eager(e, odd))
    assert step.captures == captures and step.failed is None
    alone = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, False)  # train.batched off: PyG's GATConv per task
    _assert_same(alone(batches[0], 0), _eager(e, batches[0], False))
    assert alone.failed is not None and "tasks batched only" in alone.failed


def test_gat_k_hop_runs_are_eligible_on_cuda_with_or_without_dropout():
    e = _experiment()
    eps = _batches(e, 1)[0]
    exp = SimpleNamespace(algo=e.algo, model=e.model, device=torch.device("cuda"))
    cfg = _cfg()
    cfg.train.device = "cuda"
    assert ineligible(cfg, exp, episodes=eps) is None
    cfg.algo.first_order = False  # second order is captured too
    assert ineligible(cfg, exp, episodes=eps) is None
    dropped = _experiment(dropout=0.5)  # feature dropout: drawn inside the union pass (over the padded buffers)
    cfg = _cfg(dropout=0.5)
    cfg.train.device = "cuda"
    assert ineligible(cfg, SimpleNamespace(algo=dropped.algo, model=dropped.model, device=torch.device("cuda")),
                      episodes=eps) is None
    for conv in e.model.extractor.convs:  # attention dropout (Python API): drawn inside PyG's conv, task by task
        conv.dropout = 0.2
    cfg = _cfg()
    cfg.train.device = "cuda"
    assert ineligible(cfg, exp, episodes=eps) == GAT_ATTENTION_DROPOUT


def test_with_dropout_the_union_is_captured_and_its_check_draws_the_same_masks(stand_in):
    """GAT's k-hop subgraphs with feature dropout (once stepped task by task, uncaptured): the recorded step draws
    its masks over the padded union; the first capture's check replays and steps eagerly on the same buffers with
    the RNG restored in between, so both draw the same masks and the check passes; later batches replay (or grow
    the buffers) without falling back, and the replays really draw: two replays of one batch differ."""
    e = _experiment(dropout=0.5)
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True)
    batches = _batches(e)
    out = step(batches[0], 0)
    assert step.failed is None and step.captures == 1 and torch.isfinite(out.loss.total)
    for i, b in enumerate([batches[1], batches[-1], batches[1]], start=1):
        assert torch.isfinite(step(b, i).loss.total)
        assert step.failed is None and step.grow_failed is None
    assert step.replays >= 3
    x = step.static[0].support_x
    assert x.__dict__[STATIC_BATCH_KEY][1] is step.buffers.unions["support_x"]
    a, b = step(batches[1], 4).loss.total.clone(), step(batches[1], 5).loss.total.clone()
    assert not torch.equal(a, b)  # each replay draws new masks


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("first_order", [True, False])
def test_captured_gat_k_hop_meta_steps_equal_eager_on_cuda(first_order):
    """The real capture (no stand-in): every step, captured, replayed or recaptured after the subgraphs outgrew the
    buffers, equals the eager meta-step of its own batch."""
    e = _experiment(device="cuda", first_order=first_order)
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True, strict=True)
    batches = _batches(e)
    for i, eps in enumerate([batches[0], batches[1], batches[-1], batches[0]]):
        _assert_same(step(eps, i), _eager(e, eps))
    assert step.failed is None and step.captures >= 2 and step.replays >= 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_captured_gat_k_hop_with_dropout_passes_its_check_on_cuda():
    """The real capture with dropout (no stand-in): the masks drawn inside the graph over the padded union; the
    first capture's check (replay and eager step on the same buffers, the RNG restored in between) passes under
    ``strict``, the replays and a recapture run, and two replays of one batch draw different masks."""
    e = _experiment(device="cuda", dropout=0.5)
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True, strict=True)
    batches = _batches(e)
    for i, eps in enumerate([batches[0], batches[1], batches[-1], batches[0]]):
        assert torch.isfinite(step(eps, i).loss.total)
    assert step.failed is None and step.captures >= 2 and step.replays >= 4
    a, b = step(batches[0], 4).loss.total.clone(), step(batches[0], 5).loss.total.clone()
    assert not torch.equal(a, b)


def test_a_meta_batch_in_memory_groups_steps_eagerly(stand_in, monkeypatch):
    """A batch over the memory budget runs in task groups (cmlgraph.core.memory): the capture records one pass
    over fixed buffers, so such a batch steps eagerly (equal to its eager step), before and after a capture."""
    import cmlgraph.core.memory as mem

    e = _experiment()
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True)
    batches = _batches(e, 3)
    budget = mem.memory_budget
    monkeypatch.setattr(mem, "memory_budget", lambda device: 1)  # every task a group of its own
    _assert_same(step(batches[0], 0), _eager(e, batches[0]))
    assert step.captures == 0 and step.failed is None
    monkeypatch.setattr(mem, "memory_budget", budget)
    step(batches[0], 1)
    assert step.captures == 1
    monkeypatch.setattr(mem, "memory_budget", lambda device: 1)
    replays = step.replays
    _assert_same(step(batches[1], 2), _eager(e, batches[1]))
    assert step.replays == replays and step.captures == 1
