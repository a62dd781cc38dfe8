"""Subset-sum tables for binary features: equal to the dense product, its transpose product, gradients, and second
order."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.backbones.binary_features import BinaryRows, binary_codes, subset_sum_tables


def _binary(n: int, f: int, density: float = 0.4, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, f, generator=g) < density).to(dtype)


@pytest.mark.parametrize("f", [1, 8, 13, 767, 1030])  # partial chunk, one chunk, Amazon-Computer, > 1024 (int32 sort)
def test_binary_matmul_equals_dense_product_and_its_weight_gradient(f: int) -> None:
    x = _binary(50, f)
    codes = binary_codes(x)
    assert codes is not None and codes.shape == (50, (f + 7) // 8) and codes.dtype == torch.int32
    gen = torch.Generator().manual_seed(f)  # seeded: the global RNG made this test flaky
    w = torch.randn(f, 6, generator=gen).requires_grad_(True)
    g = torch.randn(50, 6, generator=gen)
    rows = BinaryRows(codes, f)
    got = rows.matmul(w)
    want = x @ w
    # float32 sums of ~0.4·F terms of size ~1 in another order: rounding grows like √F (2.8e-5 seen at F = 1030)
    atol = 1e-5 * max(1.0, (0.4 * f) ** 0.5 / 4)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=atol)
    (gw_got,) = torch.autograd.grad(got, w, g)
    (gw_want,) = torch.autograd.grad(want, w, g)
    torch.testing.assert_close(gw_got, gw_want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rows.t_matmul(g), x.t() @ g, rtol=1e-5, atol=1e-5)


def test_sliced_codes_address_the_same_rows() -> None:
    x = _binary(40, 20, seed=1)
    rows = torch.tensor([39, 3, 3, 17])
    w = torch.randn(20, 4)
    part = BinaryRows(binary_codes(x).index_select(0, rows), 20)
    torch.testing.assert_close(part.matmul(w), x[rows] @ w, rtol=1e-5, atol=1e-5)
    g = torch.randn(4, 4)
    torch.testing.assert_close(part.t_matmul(g), x[rows].t() @ g, rtol=1e-5, atol=1e-5)  # row 3 counted twice
    with pytest.raises(ValueError, match="21 rows; these features have 20"):
        part.matmul(torch.randn(21, 4))


def test_second_order_gradients_are_exact() -> None:
    """MAML's second-order path differentiates the inner gradient again: gradcheck and gradgradcheck in float64."""
    x = _binary(12, 11, dtype=torch.float64)
    rows = BinaryRows(binary_codes(x), 11)
    w = torch.randn(11, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: rows.matmul(w), (w,))
    assert torch.autograd.gradgradcheck(lambda w: rows.matmul(w).tanh(), (w,))


def test_tables_hold_every_subset_sum() -> None:
    w = torch.arange(10.0).view(10, 1)  # row i = i
    t = subset_sum_tables(w)
    assert t.shape == (2 * 256, 1)
    assert t[0b101, 0] == 0 + 2 and t[255, 0] == sum(range(8))
    assert t[256 + 0b11, 0] == 8 + 9 and t[256 + 0b100, 0] == 0  # padding rows of the last chunk are zero


def test_non_binary_sparse_or_sparse_enough_features_get_no_codes() -> None:
    x = _binary(30, 16)
    assert binary_codes(x * 2) is None  # a value other than 0/1
    assert binary_codes(x.to_sparse()) is None  # sparse features keep the sparse product
    assert binary_codes(x.long()) is None
    assert binary_codes(_binary(30, 16, density=0.02)) is None  # too few set: the sparse product is cheaper
    x[0, 0] = float("nan")
    assert binary_codes(x) is None


def test_wide_weights_take_the_dense_product_with_the_same_result() -> None:
    """Above MAX_TABLE_WIDTH columns (many tasks evaluated together) the rows are decoded once and multiplied
    densely: the decoded rows are the features, and values and gradients agree with the table path."""
    from cmlgraph.backbones import binary_features as bf

    x = _binary(30, 21, seed=2)
    rows = BinaryRows(binary_codes(x), 21)
    assert torch.equal(rows.dense(), x)
    w = torch.randn(21, bf.MAX_TABLE_WIDTH + 1, requires_grad=True)
    wide = rows.matmul(w)
    assert wide.grad_fn is not None and "Mm" in type(wide.grad_fn).__name__  # the dense product ran
    torch.testing.assert_close(wide, x @ w, rtol=1e-5, atol=1e-5)
    narrow = rows.matmul(w[:, :8])
    assert "BinaryMatmul" in type(narrow.grad_fn).__name__
    torch.testing.assert_close(narrow, wide[:, :8], rtol=1e-5, atol=1e-5)


def test_the_tables_are_used_only_where_they_win() -> None:
    """Issue 18 item 3: the subset-sum tables on the CPU; on another device (a GPU: one dense matmul beats the
    table gathers) G-Meta takes the dense product. A ``meta`` tensor stands in for a device tensor here."""
    from cmlgraph.backbones.gmeta import binary_tables_win, feature_codes
    from cmlgraph.graphs.balls import BallIndex

    assert binary_tables_win("cpu") and not binary_tables_win("cuda") and not binary_tables_win("cuda:1")
    x = (torch.arange(54).view(6, 9) % 3 == 0).float()  # dense 0/1 features
    ei = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    ei = torch.cat([ei, ei.flip(0)], 1)
    assert feature_codes(BallIndex(x, ei)) is not None
    assert feature_codes(BallIndex(x.to("meta"), ei)) is None  # no codes computed off the CPU
