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

The buffers themselves cross in the run's shared memory (:class:`SharedBlocks`, written by :func:`write_block` in
the build process): through the pool's pipe a 2.3 MB batch took about 6 ms a round trip on this project's 2 cores.
"""

from __future__ import annotations

import math
import threading
import weakref
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


def _layout(buffers: dict[str, np.ndarray]) -> tuple[list[tuple[str, int, int]], int]:
    """Where each buffer goes in a block: ``(dtype, byte offset, count)``, 8-byte aligned; and the bytes needed."""
    layout, offset = [], 0
    for key, a in buffers.items():
        layout.append((key, offset, int(a.size)))
        offset += -(-a.nbytes // 8) * 8
    return layout, offset


class SharedBlocks:
    """The run's shared-memory blocks, into which build processes write packed plans (one block per item in flight).

    Why: through the process pool's pipe a 2.3 MB meta-batch of synthetic-10k plans took about 6 ms a round trip
    on this project's 2 cores (the building itself about 9 ms); written into shared memory only the block's name
    and the layout cross the pipe. The run owns the blocks: ``count`` of them (the processes + 1, so memory grows
    with the processes, not their square), reused, each given to one item from :meth:`acquire` until its copy is
    read back (:meth:`read`), and unlinked by :meth:`close` (or when the object is collected). A batch larger than
    its block comes back through the pipe instead, and the block is regrown for the next.

    Args:
        count: Blocks (items in flight at most).
        size: Bytes of each block at first.
    """

    def __init__(self, count: int, size: int = 4 << 20) -> None:
        from multiprocessing import shared_memory

        self._new = lambda n: shared_memory.SharedMemory(create=True, size=n)
        self._blocks = [self._new(size) for _ in range(count)]
        self._free = list(range(count))
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, SharedBlocks._unlink, self._blocks)

    @staticmethod
    def _unlink(blocks: list[Any]) -> None:
        for shm in blocks:
            try:
                shm.close()
                shm.unlink()
            except (FileNotFoundError, BufferError):  # gone already; a view still open: freed at exit
                pass

    def acquire(self) -> tuple[int, str, int]:
        """A free block for one item: ``(index, name, size)``.

        Raises:
            RuntimeError: Every block holds an item not read back yet (more items in flight than blocks).
        """
        with self._lock:
            if not self._free:
                raise RuntimeError(f"all {len(self._blocks)} shared blocks are in use: more build items in flight "
                                   "than blocks (a block would be overwritten before it is read)")
            i = self._free.pop()
            return i, self._blocks[i].name, self._blocks[i].size

    def read(self, index: int, payload: dict[str, Any], device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """The buffers of an item (:func:`write_block`'s payload, or buffers sent through the pipe), copied out of
        block ``index``: on the CPU into new tensors; for a GPU straight into pinned memory, then ``non_blocking``
        to ``device`` (one host copy, not two). The block is free again afterwards (and regrown if the item did not
        fit it).

        Raises:
            RuntimeError: The payload names another block than ``index`` holds.
        """
        device = torch.device(device)
        try:
            if "buffers" in payload:  # did not fit: through the pipe; a bigger block next time
                if payload["bytes"] > self._blocks[index].size:
                    old = self._blocks[index]
                    self._blocks[index] = self._new(payload["bytes"] * 3 // 2)
                    self._unlink([old])
                return {k: to_device(torch.from_numpy(v), device) for k, v in payload["buffers"].items()}
            shm = self._blocks[index]
            if payload["block"] != shm.name:
                raise RuntimeError(f"shared block {index} is {shm.name}, the item names {payload['block']}")
            out = {}
            for key, start, count in payload["layout"]:
                view = torch.from_numpy(np.frombuffer(shm.buf, dtype=np.dtype(key), count=count, offset=start))
                out[key] = view.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else view.clone()
                del view  # no view outlives the copy
            return out
        finally:
            with self._lock:
                self._free.append(index)

    def close(self) -> None:
        """Unlink every block (idempotent)."""
        self._finalizer()


#: The blocks a build process has mapped, by name (a regrown block gets a new name; the oldest mappings are closed
#: beyond :data:`_MAPPED_MAX`).
_MAPPED: dict[str, Any] = {}
_MAPPED_MAX = 32


def write_block(block: tuple[int, str, int], buffers: dict[str, np.ndarray]) -> dict[str, Any]:
    """In a build process: ``buffers`` written into the run's block ``(index, name, size)`` (:meth:`SharedBlocks.
    acquire`), what :meth:`SharedBlocks.read` reads back; buffers that do not fit go in the payload itself."""
    from multiprocessing import shared_memory

    layout, needed = _layout(buffers)
    if needed > block[2]:
        return {"buffers": buffers, "bytes": needed}
    shm = _MAPPED.get(block[1])
    if shm is None:
        while len(_MAPPED) >= _MAPPED_MAX:  # mappings of blocks the run has regrown since (never named again)
            _MAPPED.pop(next(iter(_MAPPED))).close()
        shm = _MAPPED[block[1]] = shared_memory.SharedMemory(name=block[1])
    for (key, start, count), a in zip(layout, buffers.values(), strict=True):
        np.frombuffer(shm.buf, dtype=np.dtype(key), count=count, offset=start)[:] = a.reshape(-1)
    return {"block": block[1], "layout": layout}


def unpack_plans(buffers: dict[str, np.ndarray] | dict[str, Tensor], specs: list[dict[str, Any]],
                 x: Tensor) -> list[Plan]:
    """The plans :func:`pack_plans` packed, on ``x``'s device and reading the features ``x``: each buffer copied
    once (pinned, ``non_blocking`` to a GPU; on the CPU not at all; tensors already there are used as they are),
    every tensor a view of it."""
    flat = {k: to_device(v if isinstance(v, Tensor) else torch.from_numpy(v), x.device) for k, v in buffers.items()}

    def tensor(ref: tuple[str, str, int, tuple[int, ...]]) -> Tensor:
        _, key, offset, shape = ref
        return flat[key][offset:offset + math.prod(shape)].view(shape)  # math.prod: np.prod cost 1.2 ms a batch

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


__all__ = ["MOVED_KEYS", "SharedBlocks", "pack_plans", "unpack_plans", "write_block"]
