"""G-Meta's ball layouts built ahead on the host (issue 18 item 2): the step finds them, results are unchanged."""

from __future__ import annotations

import gc
import weakref

import torch
import torch.nn.functional as F

from cmlgraph.algorithms.tlp import GMeta
from cmlgraph.backbones.gmeta import BallGCN, prepare_ball_batch
from cmlgraph.config import AlgoConfig
from cmlgraph.core.episode import Episode
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.domains.tlp_graph import TLPGraphDomain
from cmlgraph.graphs import make_synthetic
from cmlgraph.graphs.balls import BallIndex, BallInput
from cmlgraph.train.sync_counter import SyncCounter


def _index(seed: int = 0) -> BallIndex:
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(60, (150,), generator=g), torch.randint(60, (150,), generator=g)
    keep = src != dst
    ei = torch.stack([src[keep], dst[keep]])
    return BallIndex(torch.randn(60, 7, generator=g), torch.cat([ei, ei.flip(0)], 1))


def _episodes(index: BallIndex, tasks: int = 3) -> list[Episode]:
    g = torch.Generator().manual_seed(1)
    eps = []
    for _ in range(tasks):
        nodes = torch.randperm(index.num_nodes, generator=g)[:10]
        y = torch.tensor([0, 1] * 5)
        eps.append(Episode(BallInput(index, nodes[:4], dropout=True), y[:4], BallInput(index, nodes[4:]), y[4:]))
    return eps


def test_restacking_the_same_inputs_finds_the_same_layouts():
    index = _index()
    eps = _episodes(index)
    items = [e.query_x for e in eps]
    first = BallInput.stack_tasks(items)
    prepare_ball_batch(first)
    assert "B" in first.memo["layouts"][0]
    again = BallInput.stack_tasks(list(items))  # a new list of the same objects, as stack() makes each call
    assert again.memo is first.memo
    other = BallInput.stack_tasks(items[::-1])  # another order is another layout
    assert other.memo is not first.memo and "groups" not in other.memo


def test_the_kept_layout_does_not_keep_the_episodes_alive():
    """No reference cycle: dropping the episodes frees their layouts at once (reference counting alone)."""
    index = _index()
    eps = _episodes(index)
    batch = BallInput.stack_tasks([e.support_x for e in eps])
    prepare_ball_batch(batch)
    probe = weakref.ref(batch.memo["layouts"][0]["task_of_row"])
    gc.disable()
    try:
        del eps, batch
        assert probe() is None
    finally:
        gc.enable()


def test_prepared_layouts_give_the_lazily_built_meta_gradients_and_the_step_builds_none():
    index = _index()
    torch.manual_seed(0)
    model = MetaModel(BallGCN(7, hidden=5, dropout=0.0), 2, co_depth=1, co_hidden=6)
    algo = GMeta(AlgoConfig(algo="gmeta", cml=True, gamma=0.2, inner_steps=3, inner_lr=0.05, first_order=True))
    lazy = algo.meta_gradients(model, parameters_of(model), _episodes(index), F.cross_entropy, 0, batched=True)
    eps = _episodes(index)
    for side in ("support_x", "query_x"):
        prepare_ball_batch(BallInput.stack_tasks([getattr(e, side) for e in eps]))
    with SyncCounter() as counter:  # every layout was built ahead: the step reads nothing back on the host
        ahead = algo.meta_gradients(model, parameters_of(model), eps, F.cross_entropy, 0, batched=True)
    assert counter.total == 0, counter.counts
    assert torch.equal(lazy.loss.total, ahead.loss.total)
    for k in lazy.grads:
        assert torch.equal(lazy.grads[k], ahead.grads[k]), k


def test_the_domain_prepares_stacked_or_per_task_layouts():
    graph = make_synthetic(num_nodes=200, num_classes=9, seed=0, split="3/3/3")
    domain = TLPGraphDomain(graph, 3, 2, 3, kind="gmeta", hidden=8)
    eps = [domain.materialize(r) for r in domain.sample("train", 2, torch.Generator().manual_seed(0))]
    domain.prepare_batch(eps, None)
    stacked = BallInput.stack_tasks([e.support_x for e in eps])
    assert "B" in stacked.memo["layouts"][0] and "B" not in eps[0].support_x.memo
    single = [domain.materialize(r) for r in domain.sample("train", 2, torch.Generator().manual_seed(0))]
    domain.prepare_batch(single, False)  # train.batched off: each input's own layout
    assert all("B" in ep.support_x.memo and "B" in ep.query_x.memo for ep in single)


def test_every_layout_tensor_goes_to_the_device_through_the_pinned_copy(monkeypatch):
    """ball_layout sends its host-built tensors with core.transfer.to_device (pinned, non_blocking on CUDA), never a
    blocking ``.to``: every tensor the layout keeps is one that to_device returned (checked on CPU by identity)."""
    import cmlgraph.backbones.gmeta as gmeta

    sent: list[torch.Tensor] = []

    def recording(t, device):
        sent.append(t)
        return t

    monkeypatch.setattr(gmeta, "to_device", recording)
    index = _index()
    memo = gmeta.ball_layout([e.query_x for e in _episodes(index)], {})
    ids = {id(t) for t in sent}
    assert id(memo["task_of_row"]) in ids and id(memo["gather"]) in ids
    b = memo["B"]  # an undirected graph: the row-scaled symmetric pattern (offsets are a view of the sent crow)
    assert id(b.cols) in ids and id(b.row_scale) in ids
    assert any(b.offsets.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() for t in sent)
