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

The buffers themselves cross in shared memory (:class:`SharedSlots` in the build process, :func:`read_shared` in
the run's): through the pool's pipe a 2.3 MB batch took about 6 ms a round trip on this project's 2 cores.
"""

from __future__ import annotations

import os
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


class SharedSlots:
    """A build process's shared-memory blocks, reused round robin, that carry packed buffers to the run's process.

    Why: through the process pool's pipe a 2.3 MB meta-batch of synthetic-10k plans took about 6 ms a round trip on
    this project's 2 cores (``scripts/time_host_prep.py``; the building itself about 9 ms); written into shared
    memory only a block's name and layout cross the pipe. Blocks are reused (a fresh block costs a page fault per
    4 KB page on first touch) and grown when a batch outgrows one.

    Safety: the run copies a batch out of its block (:func:`read_shared`) before it hands the batch on, and keeps at
    most ``workers`` batches in flight, so a process writes a block again only after the run has read it when it
    has ``workers + 1`` of them or more. The blocks are unlinked when the process exits.

    Args:
        slots: Blocks to cycle through (at least the pool's process count + 1).
    """

    def __init__(self, slots: int) -> None:
        from multiprocessing import util

        self._blocks: list[Any] = [None] * max(2, slots)
        self._ids: list[str] = [""] * len(self._blocks)
        self._turn = self._made = 0
        util.Finalize(self, SharedSlots._release, args=(self._blocks,), exitpriority=10)

    @staticmethod
    def _release(blocks: list[Any]) -> None:
        for shm in blocks:
            if shm is not None:
                shm.close()
                shm.unlink()

    def write(self, buffers: dict[str, np.ndarray]) -> dict[str, Any]:
        """``buffers`` in the next block: its name and the layout ``(dtype, byte offset, count)``."""
        from multiprocessing import shared_memory

        layout, offset = [], 0
        for key, a in buffers.items():
            layout.append((key, offset, int(a.size)))
            offset += -(-a.nbytes // 8) * 8  # 8-byte aligned
        k = self._turn % len(self._blocks)
        self._turn += 1
        shm = self._blocks[k]
        if shm is None or shm.size < offset:
            if shm is not None:
                shm.close()
                shm.unlink()
            shm = self._blocks[k] = shared_memory.SharedMemory(create=True, size=max(1 << 20, offset * 3 // 2))
            self._made += 1
            self._ids[k] = f"{os.getpid()}/{self._made}"
        for (key, start, count), a in zip(layout, buffers.values(), strict=True):
            np.frombuffer(shm.buf, dtype=np.dtype(key), count=count, offset=start)[:] = a.reshape(-1)
        # the block's own id beside its name: a reader never takes a stale mapping of a freed block for a new one
        return {"name": shm.name, "block": self._ids[k], "layout": layout}


#: Blocks of build processes this process has mapped (by name and block id; at most :data:`_MAPPED_MAX`, oldest
#: closed first).
_MAPPED: dict[str, Any] = {}
_MAPPED_MAX = 64


def read_shared(ref: dict[str, Any], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The buffers a :class:`SharedSlots` wrote, copied out of its block (which the process will reuse): on the
    CPU into new tensors; for a GPU straight into pinned memory, then ``non_blocking`` to ``device`` (one host copy,
    not two)."""
    from multiprocessing import shared_memory

    block = (ref["name"], ref["block"])
    shm = _MAPPED.get(block)
    if shm is None:
        while len(_MAPPED) >= _MAPPED_MAX:
            _MAPPED.pop(next(iter(_MAPPED))).close()
        shm = _MAPPED[block] = shared_memory.SharedMemory(name=ref["name"])
    device = torch.device(device)
    out = {}
    for key, start, count in ref["layout"]:
        view = torch.from_numpy(np.frombuffer(shm.buf, dtype=np.dtype(key), count=count, offset=start))
        out[key] = view.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else view.clone()
        del view  # no view outlives the copy: the block can be closed
    return out


def unpack_plans(buffers: dict[str, np.ndarray] | dict[str, Tensor], specs: list[dict[str, Any]],
                 x: Tensor) -> list[Plan]:
    """The plans :func:`pack_plans` packed, on ``x``'s device and reading the features ``x``: each buffer copied
    once (pinned, ``non_blocking`` to a GPU; on the CPU not at all; tensors already there are used as they are),
    every tensor a view of it."""
    flat = {k: to_device(v if isinstance(v, Tensor) else torch.from_numpy(v), x.device) for k, v in buffers.items()}

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


__all__ = ["MOVED_KEYS", "SharedSlots", "pack_plans", "read_shared", "unpack_plans"]
