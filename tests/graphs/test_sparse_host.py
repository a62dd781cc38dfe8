"""The host (numpy) index builds equal the torch (device) ones element for element (docs/gpu.md, "Host work per
meta-batch"): CSR row expansion (:func:`cmlgraph.graphs.sparse.csr_row_entries`) and distinct ids in order of first
occurrence (``gnn_plan._unique_in_order``), each also checked against a plain Python reading of its definition."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.backbones.gnn_plan import _device_unique_in_order, _unique_in_order, build_plan
from cmlgraph.graphs.sparse import _device_row_entries, csr_row_entries


def _csr(n: int, nnz: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (2, nnz), generator=g)
    a = torch.sparse_coo_tensor(idx, torch.rand(nnz, generator=g), (n, n)).coalesce().to_sparse_csr()
    if dtype == torch.int32:
        a = torch.sparse_csr_tensor(a.crow_indices().int(), a.col_indices().int(), a.values(), a.shape)
    return a


def _oracle_row_entries(crow: list[int], rows: list[int]) -> tuple[list[int], list[int]]:
    row_pos, pos = [], []
    for i, r in enumerate(rows):
        for p in range(crow[r], crow[r + 1]):
            row_pos.append(i)
            pos.append(p)
    return row_pos, pos


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("seed", range(4))
def test_csr_row_entries_on_the_host_equal_the_torch_ops_and_the_definition(seed: int, dtype: torch.dtype) -> None:
    a = _csr(40, 90 + 30 * seed, seed, dtype)  # some rows empty
    g = torch.Generator().manual_seed(100 + seed)
    rows = torch.cat([torch.randint(0, 40, (25,), generator=g), torch.tensor([3, 3, 0, 39])])  # repeats
    host = csr_row_entries(a.crow_indices(), rows)
    device = _device_row_entries(a.crow_indices(), rows)
    oracle = _oracle_row_entries(a.crow_indices().tolist(), rows.tolist())
    for h, d, o in zip(host, device, oracle, strict=True):
        assert h.dtype == d.dtype == torch.int64
        assert torch.equal(h, d) and h.tolist() == o


@pytest.mark.parametrize("rows", [[-1], [0, -2], [3], [1, 7]])
def test_a_row_id_out_of_range_is_refused_on_the_host_as_by_the_torch_ops(rows: list[int]) -> None:
    """numpy would wrap a negative id round to the last rows; the host path refuses it as ``index_select`` does."""
    crow, ids = torch.tensor([0, 1, 3, 4]), torch.tensor(rows)
    with pytest.raises(IndexError):
        _device_row_entries(crow, ids)
    with pytest.raises(IndexError, match="row ids"):
        csr_row_entries(crow, ids)


def test_row_ids_of_another_dtype_are_refused_on_the_host() -> None:
    with pytest.raises(IndexError, match="int32 or int64"):
        csr_row_entries(torch.tensor([0, 1, 3]), torch.tensor([1, 0], dtype=torch.uint8))


def test_csr_row_entries_of_no_rows_and_of_empty_rows_are_empty() -> None:
    crow = torch.tensor([0, 0, 0, 2])
    for rows in (torch.tensor([], dtype=torch.long), torch.tensor([0, 1])):
        row_pos, pos = csr_row_entries(crow, rows)
        assert row_pos.numel() == pos.numel() == 0 and row_pos.dtype == pos.dtype == torch.int64


@pytest.mark.parametrize("ids", [[5, 2, 5, 9, 2, 0, 9, 9], [], [7], [3, 1, 2], list(range(10, 0, -1)) * 3])
def test_unique_in_order_on_the_host_equals_the_torch_ops_and_the_definition(ids: list[int]) -> None:
    t = torch.tensor(ids, dtype=torch.long)
    uniq, inv = _unique_in_order(t)
    d_uniq, d_inv = _device_unique_in_order(t)
    first_seen = list(dict.fromkeys(ids))
    assert uniq.dtype == inv.dtype == torch.int64
    assert torch.equal(uniq, d_uniq) and torch.equal(inv, d_inv)
    assert uniq.tolist() == first_seen and [first_seen[i] for i in inv.tolist()] == ids


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_a_plan_built_on_the_host_equals_the_one_built_with_torch_ops(layers: int, monkeypatch) -> None:
    """``build_plan`` from CPU tensors (numpy index work) gives the plan the torch ops give, tensor for tensor."""
    import cmlgraph.backbones.gnn_plan as gnn_plan
    import cmlgraph.graphs.sparse as sparse

    a = _csr(60, 240, 7, torch.int64)
    x = torch.randn(60, 5)
    nodes = torch.tensor([4, 17, 4, 33, 0, 59, 17])
    host = build_plan(a, x, nodes, layers)
    monkeypatch.setattr(gnn_plan, "_unique_in_order", _device_unique_in_order)
    monkeypatch.setattr(gnn_plan, "csr_row_entries", sparse._device_row_entries)
    torch_ops = build_plan(a, x, nodes, layers)
    assert host.sizes == torch_ops.sizes
    assert torch.equal(host.out, torch_ops.out)
    for h, t in zip([*host.mats[1:], host.memo["first_global"]], [*torch_ops.mats[1:], torch_ops.memo["first_global"]],
                    strict=True):
        assert h.shape == t.shape
        for part in ("rows", "cols", "vals"):
            assert torch.equal(getattr(h, part), getattr(t, part)), part
    assert torch.equal(host.memo["prev_level"], torch_ops.memo["prev_level"])
