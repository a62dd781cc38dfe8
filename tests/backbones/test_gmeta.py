"""G-Meta's ball encoder (TLP variant): hand-computed embeddings, and the batched path equals a per-node loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmlgraph.algorithms.tlp import GMeta
from cmlgraph.backbones.gmeta import BallGCN
from cmlgraph.bench.gmeta_reference import DensePerNodeBallGCN, PerNodeBallGCN
from cmlgraph.config import AlgoConfig
from cmlgraph.core.episode import Episode
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.graphs.balls import BallIndex, BallInput

# Path 0-1-2-3-4, a triangle 6-7-8 hanging off 4 via 4-6, and an isolated node 5.
EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 6), (6, 7), (7, 8), (6, 8)]
N = 9


def _edge_index() -> torch.Tensor:
    e = torch.tensor(EDGES).t()
    return torch.cat([e, e.flip(0)], 1)


def _hand_embedding(x: np.ndarray, v: int, w1, b1, w2, b2) -> np.ndarray:
    """Closed 2-hop ball, Â = D⁻¹(A+I) of the FULL graph sliced to the ball, GCN, mean over the ball."""
    a = np.eye(N)
    for i, j in EDGES:
        a[i, j] = a[j, i] = 1
    a_hat = a / a.sum(1, keepdims=True)
    ball = {v}
    for _ in range(2):
        ball |= {j for i in ball for j in range(N) if a[i, j]}
    s = sorted(ball)
    sub = a_hat[np.ix_(s, s)]  # boundary rows keep their full-graph weights: not renormalised
    h = np.maximum(sub @ (x[s] @ w1.T) + b1, 0)
    h = sub @ (h @ w2.T) + b2
    return h.mean(0)


def test_embedding_equals_hand_computation_with_unrenormalised_boundary_and_isolated_node():
    torch.manual_seed(0)
    x = torch.randn(N, 3)
    enc = BallGCN(3, hidden=4, dropout=0.5).eval()
    index = BallIndex(x, _edge_index())
    nodes = torch.tensor([0, 2, 5, 7, 0])
    out = enc(BallInput(index, nodes, dropout=True)).detach().numpy()
    w = {k: v.detach().numpy() for k, v in enc.named_parameters()}
    for i, v in enumerate(nodes.tolist()):
        want = _hand_embedding(x.numpy(), v, w["lin1.weight"], w["lin1.bias"], w["lin2.weight"], w["lin2.bias"])
        np.testing.assert_allclose(out[i], want, rtol=1e-5, atol=1e-6)
    # The ball of 0 is {0, 1, 2}; row 2 keeps 1/3 weights (its neighbour 3 lies outside): rows sum to 2/3.
    blk = index.block(torch.tensor([0]))
    assert blk.members.tolist() == [0, 1, 2]
    index.max_table = 0  # the binary-search path finds the same entries as the look-up table
    other = index.block(torch.tensor([0]))
    assert torch.equal(other.rows, blk.rows) and torch.equal(other.cols, blk.cols)
    row2 = blk.vals[blk.rows == 2]
    np.testing.assert_allclose(row2.numpy(), [1 / 3, 1 / 3])
    # The isolated node is its own one-node ball: ReLU(x W1ᵀ + b1) W2ᵀ + b2.
    assert index.balls(torch.tensor([5]))[0].tolist() == [5]
    h = F.relu(x[5] @ enc.lin1.weight.t() + enc.lin1.bias) @ enc.lin2.weight.t() + enc.lin2.bias
    torch.testing.assert_close(torch.from_numpy(out[2]), h.detach())


def test_tlp_initialisation_bounds():
    enc = BallGCN(50, hidden=16)
    head = enc.make_head(3)
    for lin in (enc.lin1, enc.lin2):
        assert lin.weight.abs().max() <= 1 / 16 ** 0.5 and lin.bias.abs().max() <= 1 / 16 ** 0.5
    assert head[0].weight.abs().max() <= 1 / 3 ** 0.5
    assert head[0].weight.abs().max() > 1 / 16 ** 0.5  # not PyTorch's default U(−1/√in, 1/√in) with in = 16


def _random_graph(n: int = 60, seed: int = 0, directed: bool = False,
                  binary: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(n, (150,), generator=g)
    dst = torch.randint(n, (150,), generator=g)
    keep = src != dst
    ei = torch.stack([src[keep], dst[keep]])
    x = (torch.rand(n, 7, generator=g) < 0.4).float() if binary else torch.randn(n, 7, generator=g)
    return x, ei if directed else torch.cat([ei, ei.flip(0)], 1)


def _episodes(index: BallIndex, tasks: int, seed: int = 1) -> list[Episode]:
    g = torch.Generator().manual_seed(seed)
    eps = []
    for _ in range(tasks):
        nodes = torch.randperm(index.num_nodes, generator=g)[:10]
        y = torch.tensor([0, 1] * 5)
        eps.append(Episode(BallInput(index, nodes[:4], dropout=True), y[:4], BallInput(index, nodes[4:]), y[4:]))
    return eps


@pytest.mark.parametrize(("reference", "directed", "binary"),
                         [(PerNodeBallGCN, False, False), (DensePerNodeBallGCN, False, False),
                          (PerNodeBallGCN, True, False), (PerNodeBallGCN, False, True), (PerNodeBallGCN, True, True)])
def test_batched_balls_equal_per_node_loop_in_loss_and_meta_gradients(reference, directed, binary):
    """Undirected graphs take the sort-free transpose (symmetric pattern), a directed one the sorted transpose;
    binary features take the subset-sum tables of the first layer."""
    x, ei = _random_graph(directed=directed, binary=binary)
    index = BallIndex(x, ei)
    assert index.symmetric is (not directed)
    torch.manual_seed(0)
    fast = MetaModel(BallGCN(7, hidden=5, dropout=0.0), 2, co_depth=1, co_hidden=6)
    torch.manual_seed(0)
    ref = MetaModel(reference(7, hidden=5, dropout=0.0), 2, co_depth=1, co_hidden=6)
    ref.load_state_dict(fast.state_dict())
    cfg = AlgoConfig(algo="gmeta", cml=True, gamma=0.2, inner_steps=3, inner_lr=0.05, first_order=True)
    eps = _episodes(index, 3)
    a = GMeta(cfg).meta_gradients(fast, parameters_of(fast), eps, F.cross_entropy, 0, batched=True)
    b = GMeta(cfg).meta_gradients(ref, parameters_of(ref), _episodes(index, 3), F.cross_entropy, 0, batched=False)
    torch.testing.assert_close(a.loss.total, b.loss.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.loss.co, b.loss.co, rtol=1e-5, atol=1e-6)
    assert a.grads.keys() == b.grads.keys()
    for k in a.grads:
        torch.testing.assert_close(a.grads[k], b.grads[k], rtol=1e-4, atol=1e-6, msg=k)
    assert any(a.grads[k].abs().sum() > 0 for k in a.grads if k.startswith("extractor."))
    assert (index.memo["binary_codes"] is not None) is binary  # the path under test is the one taken


def test_batched_groups_split_large_task_batches_without_changing_results():
    x, ei = _random_graph(seed=3)
    index = BallIndex(x, ei)
    torch.manual_seed(0)
    enc = BallGCN(7, hidden=5, dropout=0.0)
    eps = _episodes(index, 4)
    params = {k: v.unsqueeze(0).expand(4, *v.shape) for k, v in enc.named_parameters()}
    whole = enc.forward_tasks(params, BallInput.stack_tasks([e.query_x for e in eps]))
    enc.max_rows = 1  # one task per group
    split = enc.forward_tasks(params, BallInput.stack_tasks([e.query_x for e in eps]))
    torch.testing.assert_close(whole, split)
    single = torch.stack([enc(e.query_x) for e in eps])
    torch.testing.assert_close(whole, single, rtol=1e-5, atol=1e-6)


def test_row_scaled_symmetric_matches_the_dense_matrix_to_second_order() -> None:
    """B = diag(s) · S (S a symmetric 0/1 pattern): B @ y, its backward Bᵀ g, and a second derivative all equal
    the dense products (float64 gradcheck / gradgradcheck)."""
    from cmlgraph.backbones.gnn_ops import RowScaledSymmetric, sparse_matmul

    g = torch.Generator().manual_seed(0)
    pattern = (torch.rand(9, 9, generator=g) < 0.3).double()
    pattern = ((pattern + pattern.t() + torch.eye(9, dtype=torch.float64)) > 0).double()
    scale = torch.rand(9, generator=g, dtype=torch.float64) + 0.1
    dense = scale.unsqueeze(1) * pattern
    crow = torch.zeros(10, dtype=torch.int32)
    crow[1:] = torch.cumsum(pattern.sum(1), 0).to(torch.int32)
    cols = pattern.nonzero()[:, 1].to(torch.int32)
    b = RowScaledSymmetric(crow, cols, scale)
    y = torch.randn(9, 3, dtype=torch.float64, generator=g, requires_grad=True)
    torch.testing.assert_close(sparse_matmul(b, y), dense @ y)
    up = torch.randn(9, 3, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad(sparse_matmul(b, y), y, up)
    torch.testing.assert_close(grad, dense.t() @ up)  # the transpose is not B itself: rows are scaled, not columns
    assert torch.autograd.gradcheck(lambda y: sparse_matmul(b, y), (y,))
    assert torch.autograd.gradgradcheck(lambda y: sparse_matmul(b, y).sin(), (y,))


@pytest.mark.parametrize("max_width", [256, 4])  # 4: every pass takes the dense fallback on decoded rows
@pytest.mark.parametrize("first_order", [True, False])
def test_binary_features_over_several_chunks_equal_the_loop_in_meta_batches_and_second_order(
        max_width: int, first_order: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 binary features (3 chunks, the last partial), 3 tasks of a meta-batch run together (15 weight columns),
    first and second order: loss and meta-gradients equal the per-node loop, through the tables and through the
    dense fallback."""
    from cmlgraph.backbones import binary_features

    monkeypatch.setattr(binary_features, "MAX_TABLE_WIDTH", max_width)
    g = torch.Generator().manual_seed(4)
    _, ei = _random_graph(seed=4)
    x = (torch.rand(60, 20, generator=g) < 0.3).float()
    index = BallIndex(x, ei)
    torch.manual_seed(0)
    fast = MetaModel(BallGCN(20, hidden=5, dropout=0.0), 2, co_depth=1, co_hidden=6)
    ref = MetaModel(PerNodeBallGCN(20, hidden=5, dropout=0.0), 2, co_depth=1, co_hidden=6)
    ref.load_state_dict(fast.state_dict())
    cfg = AlgoConfig(algo="gmeta", cml=True, gamma=0.2, inner_steps=2, inner_lr=0.05, first_order=first_order)
    a = GMeta(cfg).meta_gradients(fast, parameters_of(fast), _episodes(index, 3), F.cross_entropy, 0, batched=True)
    b = GMeta(cfg).meta_gradients(ref, parameters_of(ref), _episodes(index, 3), F.cross_entropy, 0, batched=False)
    assert index.memo["binary_codes"] is not None
    torch.testing.assert_close(a.loss.total, b.loss.total, rtol=1e-5, atol=1e-6)
    for k in a.grads:
        torch.testing.assert_close(a.grads[k], b.grads[k], rtol=1e-4, atol=1e-6, msg=k)


def test_ball_layout_on_int64_indices_equals_the_int32_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Graphs whose (ball, node) keys or candidate counts pass 2**31 lay out on int64: the same block."""
    from cmlgraph.graphs import balls

    x, ei = _random_graph(seed=5)
    nodes = torch.tensor([0, 7, 7, 31])
    small = BallIndex(x, ei).block(nodes)
    monkeypatch.setattr(balls, "INT32_LIMIT", 10)
    big = BallIndex(x, ei).block(nodes)
    assert small.rows.dtype == torch.int32 and big.rows.dtype == torch.int64
    for a, b in ((small.rows, big.rows), (small.cols, big.cols)):
        assert torch.equal(a.long(), b)
    assert torch.equal(small.vals, big.vals) and torch.equal(small.members, big.members)
