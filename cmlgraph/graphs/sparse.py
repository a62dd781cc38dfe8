"""Sparse feature helpers: scipy → torch COO, row slicing that keeps sparse features sparse.

Why: bag-of-words features (Amazon-Clothing: 24,919 × 9,034, Coauthor-CS: 18,333 × 6,805) are near a gigabyte when
dense, so they are kept as coalesced torch sparse COO tensors from loading through to the backbone.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


def scipy_to_torch(matrix: sp.spmatrix | sp.sparray, dtype: torch.dtype = torch.float32) -> Tensor:
    """Convert a scipy sparse matrix to a coalesced torch sparse COO tensor of ``dtype``."""
    coo = sp.coo_matrix(matrix)
    coo.sum_duplicates()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(np.asarray(coo.data)).to(dtype)
    return torch.sparse_coo_tensor(indices, values, coo.shape, is_coalesced=True, check_invariants=False)


def is_sparse(x: Tensor) -> bool:
    """Whether ``x`` uses a torch sparse layout (COO or CSR)."""
    return x.layout in (torch.sparse_coo, torch.sparse_csr)


def to_coo(x: Tensor) -> Tensor:
    """Return ``x`` as a coalesced sparse COO tensor (from COO or CSR; dense input is converted)."""
    if x.layout == torch.sparse_coo:
        return x if x.is_coalesced() else x.coalesce()
    return x.to_sparse_coo().coalesce()


def csr_row_entries(crow: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """For the CSR rows ``rows`` (given the row pointer ``crow``): ``(row_position, entry_position)`` of every
    stored entry, row by row in CSR order; ``row_position`` indexes ``rows``.

    On the CPU the arithmetic runs in numpy (:func:`_host_row_entries`, equal element for element): these are
    the host's layout builds (k-hop plans, G-Meta's balls, k-hop subgraphs) that a GPU run's prefetch worker must
    finish within a meta-step, and a torch op on a small tensor costs several times a numpy one's dispatch
    (docs/gpu.md, "Host work per meta-batch").

    Args:
        crow: ``LongTensor[N + 1]`` (or int32) row pointer.
        rows: ``LongTensor[n]`` row ids (repeats allowed).

    Returns:
        ``LongTensor[nnz]`` each entry's position in ``rows`` and ``LongTensor[nnz]`` its position in the CSR
        arrays.
    """
    if crow.device.type == rows.device.type == "cpu":
        row_pos, pos = _host_row_entries(crow.numpy(), rows.numpy())
        return torch.from_numpy(row_pos), torch.from_numpy(pos)
    return _device_row_entries(crow, rows)


def flat_nonzero(mask: Tensor) -> Tensor:
    """``LongTensor[k]``: the positions of the true entries of the 1-D ``mask``, ascending (``mask.nonzero()``'s).

    On the CPU through numpy (``np.flatnonzero``): torch's CPU ``nonzero`` took 7 to 10.5 ms for a 1.4M-entry mask
    against numpy's 0.8 to 1.3 ms (one thread, session 38; the command is in docs/gpu.md), and G-Meta's ball
    layout (:meth:`BallIndex.block`) selects from that many candidate entries on every support and query set of
    Amazon-Computer.
    """
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()).astype(np.int64, copy=False))
    return mask.nonzero().squeeze(1)


def _device_row_entries(crow: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`csr_row_entries` in torch ops, on any device (one host read: the entry count)."""
    start = crow.index_select(0, rows)
    counts = crow.index_select(0, rows + 1) - start
    row_pos = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    pos = torch.repeat_interleave(start - offsets, counts) + torch.arange(int(counts.sum()), device=rows.device)
    return row_pos, pos


def _host_row_entries(crow: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`csr_row_entries` on numpy arrays (int64 results, as torch's).

    Raises:
        IndexError: A row id outside ``[0, N)`` or not of an int32/int64 dtype (``index_select``'s refusals:
            numpy would wrap a negative id round to the last rows).
    """
    if rows.dtype not in (np.int32, np.int64) or crow.dtype not in (np.int32, np.int64):
        raise IndexError(f"CSR row ids and row pointer must be int32 or int64, got {rows.dtype} and {crow.dtype}")
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= crow.size - 1):
        raise IndexError(f"row ids must lie in [0, {crow.size - 1}), got {int(rows.min())} to {int(rows.max())}")
    start = crow[rows].astype(np.int64)
    counts = crow[rows + 1] - start
    row_pos = np.repeat(np.arange(rows.size, dtype=np.int64), counts)
    offsets = np.cumsum(counts) - counts
    pos = np.repeat(start - offsets, counts) + np.arange(int(counts.sum()), dtype=np.int64)
    return row_pos, pos


def slice_rows(x: Tensor, index: Tensor) -> Tensor:
    """Select rows ``index`` of dense or sparse ``x``; sparse input gives a coalesced sparse COO output.

    Args:
        x: ``[N, F]`` features, dense or sparse (COO or CSR).
        index: ``LongTensor[n]`` row ids.
    """
    if x.layout == torch.strided:
        return x.index_select(0, index)
    if x.layout == torch.sparse_csr:
        col, val = x.col_indices(), x.values()
        rows, pos = csr_row_entries(x.crow_indices(), index)
        indices = torch.stack([rows, col[pos]])
        shape = (index.numel(), x.shape[1])
        return torch.sparse_coo_tensor(indices, val[pos], shape, check_invariants=False).coalesce()
    return to_coo(x).index_select(0, index).coalesce()


__all__ = ["csr_row_entries", "flat_nonzero", "is_sparse", "scipy_to_torch", "slice_rows", "to_coo"]
