"""transposable_csr: the same matrix and transpose whatever the caller says about column order, without reading
anything back when it says (issue 18)."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.backbones.gnn_ops import _PERM, _TRANSPOSE, transposable_csr
from cmlgraph.train.sync_counter import SyncCounter


def _cases() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mats = [((torch.rand(r, c, generator=g) < 0.3) * torch.randn(r, c, generator=g)).to_sparse_csr()
            for r, c in ((5, 7), (12, 3), (1, 9), (9, 1))]
    return mats + [torch.zeros(4, 6).to_sparse_csr(), torch.eye(6)[:, :5].to_sparse_csr()]


@pytest.mark.parametrize("dtype", [torch.long, torch.int32])
def test_transpose_matches_dense_and_order_hint(dtype: torch.dtype) -> None:
    for m in _cases():
        crow, col, val = m.crow_indices().to(dtype), m.col_indices().to(dtype), m.values()
        is_sorted = col.numel() < 2 or bool((col[1:] >= col[:-1]).all())
        ref = transposable_csr(crow, col, val, tuple(m.shape))
        assert torch.equal(getattr(ref, _TRANSPOSE).to_dense(), m.to_dense().T)
        for hint in (False, True) if is_sorted else (False,):
            out = transposable_csr(crow, col, val, tuple(m.shape), col_sorted=hint)
            t, t_ref = getattr(out, _TRANSPOSE), getattr(ref, _TRANSPOSE)
            assert torch.equal(t.crow_indices(), t_ref.crow_indices()) and t.crow_indices().dtype == dtype
            assert torch.equal(t.col_indices(), t_ref.col_indices()) and torch.equal(t.values(), t_ref.values())
            assert torch.equal(getattr(out, _PERM), getattr(ref, _PERM))


def test_no_sync_when_order_is_known() -> None:
    m = _cases()[0]
    with SyncCounter() as c:
        transposable_csr(m.crow_indices(), m.col_indices(), m.values(), tuple(m.shape), col_sorted=False)
    assert c.total == 0, c.counts
    with SyncCounter() as c:
        transposable_csr(m.crow_indices(), m.col_indices(), m.values(), tuple(m.shape))
    assert c.counts["aten._local_scalar_dense"] == 1  # the order check, only when not told
