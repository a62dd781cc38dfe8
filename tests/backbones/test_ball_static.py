"""Padded static G-Meta ball layouts (issue 18 item 4): the padded pass equals the unpadded one in values and
gradients, refilled buffers hold nothing of an earlier batch, and what does not fit or cannot pad is refused."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.backbones.ball_static import BallCapacity, fill_static, layout_size, static_layout
from cmlgraph.backbones.gmeta import BallGCN, ball_layout, prepare_ball_batch
from cmlgraph.backbones.gnn_ops import is_sparse
from cmlgraph.graphs.balls import BallIndex, BallInput


@pytest.fixture(autouse=True)
def _union_layouts(monkeypatch):
    """The layouts a GPU builds (the shared union, which static buffers pad), not the CPU's per-task blocks."""
    from cmlgraph.backbones import gmeta

    monkeypatch.setattr(gmeta, "task_blocks_win", lambda *args: False)


def _index(directed: bool = False, seed: int = 0, n: int = 60, sparse: bool = False) -> BallIndex:
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(n, (150,), generator=g), torch.randint(n, (150,), generator=g)
    keep = src != dst
    ei = torch.stack([src[keep], dst[keep]])
    x = torch.randn(n, 7, generator=g)
    if sparse:  # bag-of-words-like: mostly zeros, kept as a CSR matrix (CiteSeer's layout)
        x = (x * (torch.rand(n, 7, generator=g) < 0.2)).to_sparse_csr()
    return BallIndex(x, ei if directed else torch.cat([ei, ei.flip(0)], 1))


def _items(index: BallIndex, tasks: int, seed: int, nodes: int = 5) -> list[BallInput]:
    g = torch.Generator().manual_seed(seed)
    return [BallInput(index, torch.randperm(index.num_nodes, generator=g)[:nodes]) for _ in range(tasks)]


def _params(enc: BallGCN, tasks: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {k: (v.detach().unsqueeze(0).repeat(tasks, *[1] * v.dim()) + 0.1 * torch.randn(tasks, *v.shape)
                ).requires_grad_() for k, v in enc.named_parameters()}


def _pass(enc: BallGCN, params: dict[str, torch.Tensor], items: list[BallInput], lay: dict) -> tuple:
    """Embeddings of ``items`` through the layout ``lay``, and the gradients of a fixed loss of them."""
    out = enc._forward_group(params, items, False, lay)
    loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + out.pow(2).sum()
    return out.detach(), torch.autograd.grad(loss, list(params.values()))


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("tasks", [1, 3])
def test_the_padded_pass_equals_the_unpadded_one_in_values_and_gradients(tasks, sparse):
    """Dense features, and sparse ones (densified per union in the buffers)."""
    index = _index(sparse=sparse)
    enc = BallGCN(7, hidden=5, dropout=0.0)
    items = _items(index, tasks, seed=2)
    lay = ball_layout(items, {})
    assert is_sparse(lay["XU"]) is sparse  # the path under test
    need = layout_size(lay)
    static = static_layout(lay, BallCapacity(need.rows + 17, need.entries + 40, need.union + 9))
    params = _params(enc, tasks)
    out, grads = _pass(enc, params, items, lay)
    out_s, grads_s = _pass(enc, params, items, static)
    torch.testing.assert_close(out_s, out, rtol=1e-5, atol=1e-6)
    for g, g_s in zip(grads, grads_s, strict=True):
        torch.testing.assert_close(g_s, g, rtol=1e-5, atol=1e-6)


def test_refilled_buffers_hold_the_next_batch_only():
    """A large batch first, then a smaller one in the same buffers: the second pass equals that batch's own."""
    index = _index(seed=4)
    enc = BallGCN(7, hidden=5, dropout=0.0)
    sizes = index.ball_sizes(torch.arange(index.num_nodes))
    big, small = sizes.argsort(descending=True), sizes.argsort()
    first = [BallInput(index, big[5 * t:5 * t + 5]) for t in range(3)]
    second = [BallInput(index, small[5 * t:5 * t + 5]) for t in range(3)]
    lay1, lay2 = ball_layout(first, {}), ball_layout(second, {})
    assert layout_size(lay2).rows < layout_size(lay1).rows
    static = static_layout(lay1, BallCapacity(0, 0, 0).grown(layout_size(lay1)))
    fill_static(static, lay2)
    params = _params(enc, 3)
    out, grads = _pass(enc, params, second, lay2)
    out_s, grads_s = _pass(enc, params, second, static)
    torch.testing.assert_close(out_s, out, rtol=1e-5, atol=1e-6)
    for g, g_s in zip(grads, grads_s, strict=True):
        torch.testing.assert_close(g_s, g, rtol=1e-5, atol=1e-6)
    # the stacked batch's prepared layout (the meta-step's) is the same layout
    memo = prepare_ball_batch(BallInput.stack_tasks(second))
    assert layout_size(memo["layouts"][0]) == layout_size(lay2)


def test_what_does_not_fit_or_cannot_pad_is_refused(monkeypatch):
    index = _index()
    lay = ball_layout(_items(index, 2, seed=3), {})
    need = layout_size(lay)
    with pytest.raises(ValueError, match="does not fit"):
        static_layout(lay, BallCapacity(need.rows, need.entries, need.union))  # no spare row for the pad entries
    static = static_layout(lay, BallCapacity(need.rows + 1, need.entries, need.union))
    bigger = ball_layout(_items(index, 2, seed=3, nodes=9), {})
    with pytest.raises(ValueError, match="does not fit"):
        fill_static(static, bigger)
    with pytest.raises(ValueError, match="too wide to pad"):
        static_layout(lay, BallCapacity(need.rows + 1, need.entries, 10**9))
    directed = _index(directed=True)
    with pytest.raises(ValueError, match="directed"):
        static_layout(ball_layout(_items(directed, 2, seed=3), {}), BallCapacity(10**5, 10**6, 10**5))
    from cmlgraph.backbones import gmeta

    monkeypatch.setattr(gmeta, "task_blocks_win", lambda *args: True)  # the CPU's per-task feature blocks
    with pytest.raises(ValueError, match="per-task blocks"):
        static_layout(ball_layout(_items(index, 2, seed=3), {}), BallCapacity(10**5, 10**6, 10**5))


def test_capacities_grow_with_slack_and_never_shrink():
    cap = BallCapacity(100, 1000, 50)
    grown = cap.grown(BallCapacity(200, 10, 10))
    assert grown.rows > 200 and grown.entries == 1000 and grown.union == 50
    assert grown.holds(BallCapacity(200, 1000, 50)) and not grown.holds(BallCapacity(grown.rows, 1, 1))
