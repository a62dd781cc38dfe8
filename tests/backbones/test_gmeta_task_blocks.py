"""G-Meta's per-task feature blocks (:func:`cmlgraph.backbones.gmeta.task_blocks_win`): on the CPU, tasks whose
balls barely overlap project only their own members, one block-diagonal product, with the same losses and
meta-gradients as the shared union's product."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmlgraph.algorithms.tlp import GMeta
from cmlgraph.backbones import gmeta
from cmlgraph.backbones.ball_static import static_ineligible
from cmlgraph.backbones.binary_features import MAX_TABLE_WIDTH, BinaryRows, binary_codes
from cmlgraph.backbones.gmeta import BallGCN, BinaryTaskRows, DenseTaskRows, ball_layout, task_blocks_win
from cmlgraph.config import AlgoConfig
from cmlgraph.core.episode import Episode
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.graphs.balls import BallIndex, BallInput

F_IN = 11


def _components(parts: int = 4, size: int = 20, features: str = "sparse", directed: bool = False,
                seed: int = 0) -> BallIndex:
    """``parts`` disconnected random graphs of ``size`` nodes: tasks drawn from different parts share no member."""
    g = torch.Generator().manual_seed(seed)
    edges = []
    for p in range(parts):
        src, dst = torch.randint(size, (45,), generator=g), torch.randint(size, (45,), generator=g)
        keep = src != dst
        edges.append(torch.stack([src[keep], dst[keep]]) + p * size)
    ei = torch.cat(edges, 1)
    ei = ei if directed else torch.cat([ei, ei.flip(0)], 1)
    n = parts * size
    if features == "binary":
        x = (torch.rand(n, F_IN, generator=g) < 0.4).float()
    else:
        x = torch.randn(n, F_IN, generator=g) * (torch.rand(n, F_IN, generator=g) < 0.3)
        x = x.to_sparse_csr() if features == "sparse" else x
    return BallIndex(x, ei)


def _episodes(index: BallIndex, tasks: int, size: int = 20, seed: int = 1) -> list[Episode]:
    """Task ``t`` draws its 8 nodes from part ``t`` (disjoint balls across tasks)."""
    g = torch.Generator().manual_seed(seed)
    eps = []
    for t in range(tasks):
        nodes = torch.randperm(size, generator=g)[:8] + t * size
        y = torch.tensor([0, 1] * 4)
        eps.append(Episode(BallInput(index, nodes[:4], dropout=True), y[:4], BallInput(index, nodes[4:]), y[4:]))
    return eps


def _meta_step(index: BallIndex, blocks: bool, first_order: bool, monkeypatch, hidden: int = 5) -> tuple:
    monkeypatch.setattr(gmeta, "task_blocks_win", lambda *args: blocks)
    torch.manual_seed(0)
    model = MetaModel(BallGCN(F_IN, hidden=hidden, dropout=0.0), 2, co_depth=1, co_hidden=6)
    cfg = AlgoConfig(algo="gmeta", cml=True, gamma=0.2, inner_steps=3, inner_lr=0.3, first_order=first_order)
    eps = _episodes(index, 3)
    step = GMeta(cfg).meta_gradients(model, parameters_of(model), eps, F.cross_entropy, 0, batched=True)
    return step, eps


def _layout(eps: list[Episode]) -> dict:
    """The support side's layout of the stacked meta-batch (kept in the first task's memo)."""
    return eps[0].support_x.memo["stacked"][1]["layouts"][0]


@pytest.mark.parametrize(("features", "directed", "first_order"),
                         [("sparse", False, True), ("sparse", False, False), ("sparse", True, True),
                          ("binary", False, True), ("binary", False, False), ("binary", True, True),
                          ("binary-few", False, True), ("dense", False, True), ("dense", False, False),
                          ("dense", True, True)])
def test_task_blocks_equal_the_shared_union_in_losses_and_meta_gradients(features, directed, first_order,
                                                                          monkeypatch):
    """``binary``: each task's subset-sum tables (forced: these tasks have fewer rows than ``MIN_TABLE_ROWS``);
    ``binary-few``: the same features as floats, as such small tasks take them."""
    if features == "binary":
        monkeypatch.setattr(gmeta, "MIN_TABLE_ROWS", 0)
    index = _components(features=features.split("-")[0], directed=directed)
    union, union_eps = _meta_step(index, False, first_order, monkeypatch)
    blocks, block_eps = _meta_step(index, True, first_order, monkeypatch)
    # the paths under test are the ones taken
    assert "task_blocks" not in _layout(union_eps) and "task_blocks" in _layout(block_eps)
    assert isinstance(_layout(block_eps)["XU"], BinaryTaskRows) is (features == "binary")
    assert isinstance(_layout(block_eps)["XU"], DenseTaskRows) is (features in ("dense", "binary-few"))
    torch.testing.assert_close(blocks.loss.total, union.loss.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(blocks.loss.co, union.loss.co, rtol=1e-5, atol=1e-6)
    for k in union.grads:
        torch.testing.assert_close(blocks.grads[k], union.grads[k], rtol=1e-4, atol=1e-6, msg=k)
    assert blocks.grads["extractor.lin1.weight"].abs().sum() > 0


def test_binary_task_tables_wider_than_the_table_limit_decode_each_tasks_rows(monkeypatch):
    """``--hidden`` above ``MAX_TABLE_WIDTH``: each task's rows decoded on their own, never the block-diagonal
    matrix (``T`` times the rows' floats), with the union's losses and gradients."""
    monkeypatch.setattr(gmeta, "MIN_TABLE_ROWS", 0)
    index = _components(features="binary")
    union, _ = _meta_step(index, False, True, monkeypatch, hidden=MAX_TABLE_WIDTH + 4)
    decoded = []
    dense = BinaryRows.dense
    monkeypatch.setattr(BinaryRows, "dense", lambda self, dtype=torch.float32: decoded.append(
        tuple(self.codes.shape)) or dense(self, dtype))
    blocks, eps = _meta_step(index, True, True, monkeypatch, hidden=MAX_TABLE_WIDTH + 4)
    rows = _layout(eps)["XU"]
    assert isinstance(rows, BinaryTaskRows)
    assert decoded and all(shape[0] in rows.rows for shape in decoded)  # one task's rows at a time
    torch.testing.assert_close(blocks.loss.total, union.loss.total, rtol=1e-5, atol=1e-6)
    for k in union.grads:
        torch.testing.assert_close(blocks.grads[k], union.grads[k], rtol=1e-4, atol=1e-6, msg=k)


def test_blocks_project_each_tasks_own_members_only():
    index = _components(features="sparse")
    items = [e.query_x for e in _episodes(index, 3)]
    lay = ball_layout(items, {})
    assert "task_blocks" in lay  # disjoint balls: the union would project 3x the rows needed
    t, _, rows = lay["shape"]
    own = sum(int(torch.unique(index.block(it.nodes).members).numel()) for it in items)
    assert (t, rows) == (3, own)
    assert lay["XU"].shape == (own, 3 * F_IN)  # block t holds task t's features in columns t·F … t·F + F
    dense = lay["XU"].to_dense()
    first = int(torch.unique(index.block(items[0].nodes).members).numel())
    assert dense[:first, F_IN:].abs().sum() == 0 and dense[first:, :F_IN].abs().sum() == 0
    assert static_ineligible(lay) is not None  # a CPU path: CUDA graphs pad the union layout
    dense_index = _components(features="dense")  # dense floats: each task's own rows, the zeros left out
    dense_items = [e.query_x for e in _episodes(dense_index, 3)]
    rows = ball_layout(dense_items, {})["XU"]
    assert isinstance(rows, DenseTaskRows) and rows.x.shape == (own, F_IN)
    assert rows.rows == [int(torch.unique(dense_index.block(it.nodes).members).numel()) for it in dense_items]


def test_the_choice_weighs_the_rows_each_product_projects():
    assert task_blocks_win("cpu", 4, 1000, 1100)  # disjoint-ish: the union projects 4000 rows for 1100 needed
    assert not task_blocks_win("cpu", 4, 1000, 3500)  # overlapping: the union's wider product wins
    assert not task_blocks_win("cpu", 1, 1000, 1000)  # one task: nothing to save
    assert not task_blocks_win("cuda", 4, 1000, 1000)  # a GPU keeps the union (launches; CUDA graphs pad it)
    index = _components(parts=1, size=30, features="sparse")  # one small component: every ball overlaps
    g = torch.Generator().manual_seed(0)
    items = [BallInput(index, torch.randperm(30, generator=g)[:6]) for _ in range(4)]
    assert "task_blocks" not in ball_layout(items, {})


def test_binary_rows_of_shifted_codes_decode_to_the_block_diagonal_matrix():
    x = (torch.rand(6, F_IN, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    codes = binary_codes(x)
    chunks = codes.shape[1]
    tasks = torch.tensor([0, 0, 1, 2, 2, 2])
    rows = BinaryRows(codes + (tasks * (chunks << 8)).to(codes.dtype).unsqueeze(1), 3 * chunks * 8)
    want = torch.zeros(6, 3 * chunks * 8)
    for i, t in enumerate(tasks.tolist()):
        want[i, t * chunks * 8:t * chunks * 8 + F_IN] = x[i]
    torch.testing.assert_close(rows.dense(), want)
    w = torch.randn(3 * chunks * 8, 4, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(rows.matmul(w), want.double() @ w)
    g = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(rows.t_matmul(g), want.double().t() @ g)
    assert torch.autograd.gradcheck(lambda v: rows.matmul(v), (w,))
