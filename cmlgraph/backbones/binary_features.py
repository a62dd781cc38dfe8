"""``X W`` for **binary** node features through subset-sum tables (the "method of Four Russians").

Why: bag-of-words features (Amazon-Computer: 767 binary words, 35 % of them set) make the first GCN layer's
projection ``X_U W₁ᵀ`` the largest dense product of a G-Meta inner step, recomputed at every step because W₁
changes. With 0/1 features a row of ``X W`` is a sum of rows of ``W``. Cut the F features into ``F/8`` chunks of 8
bits: each chunk's 256 possible bit patterns have 256 possible partial sums, a table built from ``W`` in
``256·F/8·k`` adds, and the product becomes ``F/8`` table look-ups per row instead of ``F`` multiply-adds per
output (``torch.nn.functional.embedding_bag`` in ``sum`` mode: one fused gather and sum). The weight's gradient
``Xᵀ G`` runs the other way round: sum ``G`` over the rows sharing each byte pattern, then over the patterns with
each bit set. On a CPU both directions for a 7,500 × 767 binary block and 16 outputs run about 3x faster than the
dense products, and the block is never held as floats.

Results equal ``X @ W`` and ``Xᵀ G`` up to float rounding (another order of summation), differentiable to any
order in ``W`` (the product is linear in ``W``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: Bits per table look-up: 256 entries per chunk (a table of F/8 · 256 · k floats, 1.5 MB at F = 767, k = 16).
CHUNK = 8

#: Widest ``w`` (columns: hidden size × tasks run together) that goes through the tables. Wider, the tables
#: (``F/8 · 256 · k`` floats) fall out of cache and the dense product wins: measured on one CPU core with 12,000
#: rows of 767 features, at k = 256 the tables tie forward and are 1.5x faster backward; at k = 512 to 1,600
#: they are 1.4x to 1.8x slower.
MAX_TABLE_WIDTH = 256

#: The table pays off when a row's ``F/8`` look-ups beat its ``density · F`` sparse multiply-adds, i.e. above
#: about 1/8 of features set; sparser binary features stay on the sparse product.
MIN_DENSITY = 0.125


def binary_codes(x: Tensor) -> Tensor | None:
    """Per-row codes of binary features for :class:`BinaryRows`, or ``None`` when ``x`` is not binary.

    Args:
        x: Node features ``[N, F]``, dense float; anything else (sparse, integer, a value other than 0 or 1, or
            fewer than :data:`MIN_DENSITY` of entries set) gives ``None``.

    Returns:
        ``IntTensor[N, ⌈F/8⌉]``: entry ``(i, j)`` = ``256 · j +`` the byte of bits ``8j … 8j+7`` of row ``i`` (bit
        ``b`` of the byte = feature ``8j + b``), i.e. a row index into the stacked subset-sum tables.
    """
    if x.layout != torch.strided or not x.is_floating_point() or x.dim() != 2 or x.numel() == 0:
        return None
    ones = x == 1
    if not bool((ones | (x == 0)).all()) or float(ones.float().mean()) < MIN_DENSITY:
        return None
    n, f = x.shape
    chunks = (f + CHUNK - 1) // CHUNK
    bits = F.pad(ones.to(torch.int32), (0, chunks * CHUNK - f)).view(n, chunks, CHUNK)
    weights = torch.tensor([1 << b for b in range(CHUNK)], dtype=torch.int32, device=x.device)
    codes = (bits * weights).sum(-1, dtype=torch.int32)
    return codes + torch.arange(chunks, dtype=torch.int32, device=x.device) * (1 << CHUNK)


def subset_sum_tables(w: Tensor) -> Tensor:
    """The stacked tables of :meth:`BinaryRows.matmul`: ``[⌈F/8⌉ · 256, k]``, row ``256 j + s`` = the sum of the rows
    ``8j + b`` of ``w`` (``[F, k]``) over the set bits ``b`` of ``s``."""
    f, k = w.shape
    chunks = (f + CHUNK - 1) // CHUNK
    bits = _bit_matrix(w.device, w.dtype)  # [256, 8]
    w = F.pad(w, (0, 0, 0, chunks * CHUNK - f)).view(chunks, CHUNK, k)
    return torch.matmul(bits, w).reshape(chunks << CHUNK, k)


class _BinaryMatmul(torch.autograd.Function):
    """``x @ w`` for binary ``x`` given as :class:`BinaryRows`: table look-ups forward, grouped sums backward."""

    @staticmethod
    def forward(ctx: Any, rows: BinaryRows, w: Tensor) -> Tensor:
        ctx.rows = rows
        return F.embedding_bag(rows.codes, subset_sum_tables(w), mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        return None, ctx.rows.t_matmul(grad)  # differentiable in grad: higher-order gradients stay exact


class BinaryRows:
    """Rows of a binary feature matrix ``x`` (``[U, F]``), held only as their :func:`binary_codes`.

    ``x @ w`` (:meth:`matmul`) is ``⌈F/8⌉`` table look-ups per row. Its gradient in ``w``, ``xᵀ g``
    (:meth:`t_matmul`), groups the rows by code instead: for chunk ``j`` and pattern ``s``, ``G[j, s]`` = the sum
    of ``g`` over the rows whose byte ``j`` is ``s`` (one fused gather-and-sum over rows sorted by code, sorted
    once), then row ``8j + b`` of ``xᵀ g`` = the sum of ``G[j, s]`` over the patterns ``s`` with bit ``b`` set
    (a ``256 × 8`` product per chunk). Neither direction reads ``x`` as floats.

    Args:
        codes: ``IntTensor[U, c]``: rows of :func:`binary_codes` (sliced rows are fine; ``c = ⌈F/8⌉``), or codes
            of any of the ``⌈F/8⌉`` chunks, ``c`` of them a row (G-Meta's per-task feature blocks: a row's codes
            shifted into its task's block of chunks, ``cmlgraph.backbones.gmeta._task_blocks``).
        num_features: F.
    """

    def __init__(self, codes: Tensor, num_features: int) -> None:
        self.codes, self.num_features = codes, num_features
        self.chunks = (num_features + CHUNK - 1) // CHUNK  # table blocks of 256 slots (codes a row: codes.shape[1])
        self._grouped: tuple[Tensor, Tensor] | None = None
        self._dense: Tensor | None = None

    def matmul(self, w: Tensor) -> Tensor:
        """``x @ w`` (``[U, k]``) for ``w`` of shape ``[F, k]``, differentiable to any order in ``w``; through the
        tables up to :data:`MAX_TABLE_WIDTH` columns, as a dense product (rows decoded once) above."""
        if w.shape[0] != self.num_features:
            raise ValueError(f"weight has {w.shape[0]} rows; these features have {self.num_features}")
        if w.shape[1] > MAX_TABLE_WIDTH:
            return self.dense(w.dtype) @ w
        return _BinaryMatmul.apply(self, w)

    def dense(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The rows as a dense 0/1 matrix ``[U, F]`` (decoded from the codes on first use, then kept)."""
        if self._dense is None or self._dense.dtype != dtype:
            u = self.codes.shape[0]
            bit = torch.arange(CHUNK, dtype=self.codes.dtype, device=self.codes.device)
            bits = ((self.codes & ((1 << CHUNK) - 1)).unsqueeze(-1) >> bit) & 1  # [U, c, 8]
            cols = (self.codes >> CHUNK).unsqueeze(-1) * CHUNK + bit  # each code's chunk: its 8 features
            dense = torch.zeros(u, self.chunks * CHUNK, dtype=dtype, device=self.codes.device)
            dense.scatter_(1, cols.reshape(u, -1).long(), bits.reshape(u, -1).to(dtype))
            self._dense = dense[:, : self.num_features]
        return self._dense

    def t_matmul(self, g: Tensor) -> Tensor:
        """``xᵀ g`` (``[F, k]``) for ``g`` of shape ``[U, k]``."""
        rows, offsets = self._groups()
        per_pattern = F.embedding_bag(rows, g, offsets, mode="sum").view(self.chunks, 1 << CHUNK, g.shape[1])
        out = torch.matmul(_bit_matrix(g.device, g.dtype).t(), per_pattern)  # [chunks, 8, k]
        return out.reshape(self.chunks * CHUNK, g.shape[1])[: self.num_features]

    def _groups(self) -> tuple[Tensor, Tensor]:
        """Row ids sorted by table slot (``256 j + s``) and each slot's start: built once, on first use."""
        if self._grouped is None:
            chunks = self.codes.shape[1]  # codes a row
            slots = self.codes.reshape(-1)
            nslots = self.chunks << CHUNK
            # Slots fit int16 up to F = 1,024 features: a sort on half the bytes.
            key = slots.to(torch.int16) if nslots <= 2**15 else slots
            order = torch.sort(key, stable=True).indices
            rows = torch.div(order, chunks, rounding_mode="floor").to(self.codes.dtype)
            counts = torch.bincount(slots, minlength=nslots)
            offsets = (torch.cumsum(counts, 0) - counts).to(self.codes.dtype)
            self._grouped = (rows, offsets)
        return self._grouped


def _bit_matrix(device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[256, 8]``: entry ``(s, b)`` = bit ``b`` of ``s``."""
    patterns = torch.arange(1 << CHUNK, device=device)
    return ((patterns.unsqueeze(1) >> torch.arange(CHUNK, device=device)) & 1).to(dtype)


__all__ = ["CHUNK", "MAX_TABLE_WIDTH", "MIN_DENSITY", "BinaryRows", "binary_codes", "subset_sum_tables"]
