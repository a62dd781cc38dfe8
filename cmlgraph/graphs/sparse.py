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
    stored entry, row by row in CSR order; ``row_position`` indexes ``rows``."""
    start = crow.index_select(0, rows)
    counts = crow.index_select(0, rows + 1) - start
    row_pos = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    pos = torch.repeat_interleave(start - offsets, counts) + torch.arange(int(counts.sum()), device=rows.device)
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


__all__ = ["csr_row_entries", "is_sparse", "scipy_to_torch", "slice_rows", "to_coo"]
