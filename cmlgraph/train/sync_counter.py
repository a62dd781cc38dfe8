"""Count the ops that force a host-device synchronisation on CUDA, on any device (issue 18).

On CUDA an op whose output size or value the host must know waits for the device: reading a scalar back
(``aten._local_scalar_dense``, what ``.item()``, ``bool()`` and ``float()`` of a tensor call), the data-dependent
shapes (``nonzero`` and the ops built on it: ``masked_select``, boolean-mask indexing and assignment, ``unique``,
``repeat_interleave`` without ``output_size``; ``bincount``, whose CUDA kernel reads the largest value back to size
its output), sparse results whose entry count depends on the data (``_coalesce``, sparse × sparse products, row
selections of a sparse tensor), and copies to the CPU. The ops are the same whatever the device, so
counting them under a ``torch.utils._python_dispatch.TorchDispatchMode`` on CPU tensors shows the syncs a CUDA run
would pay (PyTorch's own ``torch.cuda.set_sync_debug_mode`` only reports on a GPU).

Not counted here: a host-to-device copy from pageable memory (a plain ``.to("cuda")``, a ``copy_`` into a device
tensor, advanced indexing of a device tensor by CPU ids), which PyTorch follows with a stream synchronisation;
whether a copy is one depends on where its tensors live, so ``tests/train/test_device_placement.py`` checks it,
with the tensors placed as on a GPU, and requires such copies to go through :func:`cmlgraph.core.transfer.to_device`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS: frozenset[str] = frozenset({
    "aten._local_scalar_dense", "aten.nonzero", "aten.nonzero_static", "aten.masked_select", "aten._unique",
    "aten._unique2", "aten.unique_dim", "aten.unique_consecutive", "aten.is_nonzero", "aten.equal",
    "aten.argwhere", "aten.bincount",
    # sparse results of data-dependent size: the host must learn their entry count (nnz) to allocate them
    "aten._coalesce", "aten._sparse_sparse_matmul",
})
"""Ops that sync on CUDA whatever their arguments (overload names stripped)."""


def _name(func: Any) -> str:
    return f"aten.{func._schema.name.split('::', 1)[1]}"


def sync_kind(func: Any, args: tuple = (), kwargs: dict[str, Any] | None = None) -> str | None:
    """The name under which :class:`SyncCounter` counts the aten op ``func`` called with ``args`` and ``kwargs``,
    or ``None`` where it does not force a host-device sync on CUDA.

    ``repeat_interleave`` counts only without ``output_size``; a ``_to_copy``/``copy_`` counts when it moves a
    tensor from a non-CPU device to the CPU. Ops on CPU tensors that would be device-to-host copies on CUDA cannot
    be told apart here; callers count those by where their tensors live.
    """
    kwargs = kwargs or {}
    name = _name(func)
    if name in SYNC_OPS:
        return name
    if name == "aten.repeat_interleave" and kwargs.get("output_size") is None and (len(args) < 3 or args[-1] is None):
        return name
    if name == "aten.index_select" and args and isinstance(args[0], torch.Tensor) and args[0].is_sparse:
        return "aten.index_select(sparse)"  # rows of a sparse tensor: a data-dependent nnz
    if name in ("aten.index", "aten.index_put_", "aten.index_put", "aten._index_put_impl_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ())
            if i is not None):
        return f"{'aten.index' if name == 'aten.index' else 'aten.index_put'}(bool mask)"  # reads and assignments
    if name in ("aten._to_copy", "aten.copy_"):
        src = args[1] if name == "aten.copy_" else args[0]
        dst_cpu = (kwargs.get("device") == torch.device("cpu")) if name == "aten._to_copy" else (
            args[0].device.type == "cpu")
        if isinstance(src, torch.Tensor) and src.device.type != "cpu" and dst_cpu:
            return "device-to-host copy"
    return None


class SyncCounter(TorchDispatchMode):
    """Counts the syncing ops run inside it (:func:`sync_kind`), by op name (``counts``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, D105
        kwargs = kwargs or {}
        kind = sync_kind(func, args, kwargs)
        if kind is not None:
            self.counts[kind] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        """All syncing ops counted."""
        return sum(self.counts.values())
