"""Host-built k-hop plans packed into one flat buffer per dtype, to cross a process boundary cheaply (issue 18).

Why: a prefetch build process (:class:`cmlgraph.domains.tree_builds.TreePlanBuilder`) builds a meta-batch's plans
and sends them back through a pipe. Sent as they are, a batch's ~160 small tensors cost more to pickle, unpickle
and copy to the device one by one than to build (measured: 4.4 ms to pickle and 2.0 ms to unpickle a synthetic-10k
batch of 2.3 MB, against 8.6 ms to build it). Packed, they are a few numpy buffers (one per dtype) and a small
structure of ``(dtype, offset, shape)`` references: one pickle of raw bytes, and on a GPU one pinned copy per
dtype per meta-batch (:func:`unpack_plans`), the plans' tensors then views of the copies.

:func:`unpack_plans` returns the plans :func:`cmlgraph.backbones.gnn_plan.plan_to` would give from the originals:
every tensor equal, dtype and shape included, sparse CSR parts as CSR (tests/backbones/test_plan_payload.py).
The features ``x`` (the whole graph's) never travel: the receiving side gives its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from cmlgraph.backbones.gnn_plan import HOST_PREFIX, Plan, SparseBlock
from cmlgraph.core.transfer import to_device

#: ``Plan.memo`` keys a moved plan keeps (as :func:`~cmlgraph.backbones.gnn_plan.plan_to` keeps them).
MOVED_KEYS = ("prev_level", "level", "first_global")


class _Packer:
    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}
        self.sizes: dict[str, int] = {}

    def tensor(self, t: Tensor) -> tuple[str, str, int, tuple[int, ...]]:
        a = t.contiguous().numpy().reshape(-1)
        key = a.dtype.str
        offset = self.sizes.get(key, 0)
        self.parts.setdefault(key, []).append(a)
        self.sizes[key] = offset + a.size
        return ("t", key, offset, tuple(t.shape))

    def value(self, v: Any) -> Any:
        if isinstance(v, Tensor):
            if v.layout == torch.sparse_csr:
                return ("csr", self.tensor(v.crow_indices()), self.tensor(v.col_indices()), self.tensor(v.values()),
                        tuple(v.shape))
            if v.layout != torch.strided:
                raise TypeError(f"a plan payload holds dense and CSR tensors, not {v.layout}")
            return self.tensor(v)
        if isinstance(v, SparseBlock):
            return ("blk", self.tensor(v.rows), self.tensor(v.cols), self.tensor(v.vals), tuple(v.shape))
        if v is None:
            return None
        raise TypeError(f"a plan payload cannot hold {type(v).__name__}")

    def buffers(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in self.parts.items()}


def pack_plans(plans: list[Plan]) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Host-built plans (CPU tensors) as flat numpy buffers (one per dtype) and their structure, without ``x``.

    Returns:
        ``(buffers, specs)``: ``buffers[dtype]`` a 1-D array; ``specs[i]`` plan ``i``'s sizes, matrices, output
        positions and memo (the keys a moved plan keeps), tensors given as ``("t", dtype, offset, shape)``.

    Raises:
        TypeError: A plan holds something other than dense or CSR tensors and blocks.
    """
    packer = _Packer()
    specs = [{"sizes": list(p.sizes), "mats": [packer.value(m) for m in p.mats], "out": packer.value(p.out),
              "memo": {k: packer.value(v) for k, v in p.memo.items() if k in MOVED_KEYS or k.startswith(HOST_PREFIX)}}
             for p in plans]
    return packer.buffers(), specs


def unpack_plans(buffers: dict[str, np.ndarray], specs: list[dict[str, Any]], x: Tensor) -> list[Plan]:
    """The plans :func:`pack_plans` packed, on ``x``'s device and reading the features ``x``: each buffer copied
    once (pinned, ``non_blocking`` to a GPU; on the CPU not at all), every tensor a view of it."""
    flat = {k: to_device(torch.from_numpy(v), x.device) for k, v in buffers.items()}

    def tensor(ref: tuple[str, str, int, tuple[int, ...]]) -> Tensor:
        _, key, offset, shape = ref
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        return flat[key][offset:offset + n].view(shape)

    def value(item: Any) -> Any:
        if item is None:
            return None
        if item[0] == "csr":
            return torch.sparse_csr_tensor(tensor(item[1]), tensor(item[2]), tensor(item[3]), item[4])
        if item[0] == "blk":
            return SparseBlock(tensor(item[1]), tensor(item[2]), tensor(item[3]), item[4])
        return tensor(item)

    return [Plan(sizes=list(s["sizes"]), mats=[value(m) for m in s["mats"]], x=x, out=value(s["out"]),
                 memo={k: value(v) for k, v in s["memo"].items()}) for s in specs]


__all__ = ["MOVED_KEYS", "pack_plans", "unpack_plans"]
