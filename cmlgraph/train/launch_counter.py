"""Count the aten ops that launch work on a device: what a GPU meta-iteration pays per kernel (issue 18 item 3).

A few-shot meta-iteration is made of small tensors: on a GPU its eager time is mostly the cost of dispatching and
launching each op (a few to tens of microseconds each), not arithmetic. Counting those ops shows, on any machine,
what "fewer, larger kernels" buys: a path whose op count grows with the meta-batch runs its tasks one by one
somewhere. ``tests/train/test_launches.py`` counts them on the ``meta`` device (the device-side tensors of a GPU
run), ``cmlgraph bench`` reports them per case beside its timings.

Not counted: ops that make no data (views, reshapes, ``detach``, metadata of sparse tensors, uninitialised
allocations). Counted once: any other op, though some launch several kernels on CUDA (a sort, a sparse product)
and some none (a copy between host tensors, which only the ``device`` filter can leave out).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

NO_KERNEL: frozenset[str] = frozenset({
    # views and reshapes (no data moved), autograd's detach and aliasing
    "view", "_unsafe_view", "_reshape_alias", "reshape", "view_as", "expand", "t", "transpose", "permute",
    "squeeze", "unsqueeze", "select", "slice", "narrow", "as_strided", "split", "split_with_sizes", "unbind",
    "chunk", "diagonal", "unfold", "detach", "alias", "lift_fresh", "real", "_conj", "conj", "_neg_view",
    "resolve_conj", "resolve_neg", "set_", "resize_",
    # uninitialised allocations (the caching allocator, no kernel)
    "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided",
    # metadata of sparse tensors and sizes
    "_indices", "_values", "indices", "values", "crow_indices", "col_indices", "_nnz", "dense_dim", "sparse_dim",
    "is_coalesced", "_coalesced_", "_sparse_coo_tensor_with_dims_and_tensors", "_sparse_csr_tensor_unsafe",
    "sparse_resize_and_clear_", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size",
    "_has_compatible_shallow_copy_type", "record_stream", "_make_dep_token",
    # in-place views and other aliasing ops; sparse tensors assembled from existing parts
    "unsqueeze_", "squeeze_", "t_", "transpose_", "as_strided_", "view_as_real", "view_as_complex", "unsafe_split",
    "unsafe_split_with_sizes", "unsafe_chunk", "sparse_compressed_tensor", "_sparse_compressed_tensor_unsafe",
    "sparse_csr_tensor", "sparse_coo_tensor", "_sparse_coo_tensor_unsafe",
})
"""aten op names (overloads stripped) that launch no kernel. Ops outside the ``aten`` namespace (the profiler's
``record_function`` markers of ``optimizer.step``) launch none either."""


def op_name(func: Any) -> str:
    """An aten op's name without namespace and overload: ``aten::add.Tensor`` → ``add``."""
    return func._schema.name.split("::", 1)[1]


def launches(func: Any) -> bool:
    """Whether the op ``func`` launches work: an aten op but a view, metadata or an uninitialised allocation."""
    return func.namespace == "aten" and op_name(func) not in NO_KERNEL


class LaunchCounter(TorchDispatchMode):
    """Counts the ops run inside it that launch work (:func:`launches`), by op name (``counts``).

    Args:
        device_type: Count only ops with a tensor (argument or result) on this device type (``"meta"`` for the
            device side of a rehearsed GPU run, ``"cuda"``); ``None``: every op.
    """

    def __init__(self, device_type: str | None = None) -> None:
        super().__init__()
        self.device_type = device_type
        self.counts: Counter[str] = Counter()

    def _on_device(self, *trees: Any) -> bool:
        for tree in trees:
            for leaf in tree_flatten(tree)[0]:
                if isinstance(leaf, torch.Tensor) and leaf.device.type == self.device_type:
                    return True
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, D105
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if launches(func) and (self.device_type is None or self._on_device(args, kwargs, out)):
            self.counts[op_name(func)] += 1
        return out

    @property
    def total(self) -> int:
        """Ops counted so far."""
        return sum(self.counts.values())


__all__ = ["NO_KERNEL", "LaunchCounter", "launches", "op_name"]
