"""Evaluation chunks bounded by the memory of their own episodes (issue 18).

Evaluation adapts its fixed tasks in chunks (:func:`~cmlgraph.train.evaluate.eval_chunk`: 500 on a GPU, 100 on the
CPU), and a chunk's episodes are all materialised before its passes run. Most episodes are small (node ids, k-hop
plans: about 80 KiB a task on the default graph, 1.2 MiB on Amazon-Computers), but GAT's k-hop subgraphs carry
their own features: on Amazon-Computers (767 features, 2-hop neighbourhoods of thousands of nodes) the 500 fixed
test tasks of 2-way 5-shot with 10 queries held **14.7 GB** (session 34, summing the storages of
``domain.materialize`` of each), on a GPU in one chunk, before the padded union the chunk builds and the next chunk
the prefetch worker prepares. A chunk here ends at ``chunk`` tasks or once its episodes' own tensors reach the byte
budget, whichever comes first; the scores are the same for any chunking (``tests/train/test_eval_chunks.py``).

"Own" tensors: storages reachable from an episode that the first two episodes do not share (what both reference is
the graph and its caches, held once whatever the chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

from cmlgraph.core.memory import memory_budget

T = TypeVar("T")

#: A chunk's episodes may hold this share of the device's :func:`~cmlgraph.core.memory.memory_budget` (8 GiB on
#: the CPU, half of a GPU's memory) in their own tensors: a 16th, since the layouts built for the chunk (GAT's
#: padded union) about double them and the prefetch worker holds the next chunk meanwhile.
INPUT_SHARE = 16


def input_budget(device: torch.device | str) -> int:
    """Bytes a chunk's episodes may hold in their own tensors on ``device`` (:data:`INPUT_SHARE`): 512 MiB on the
    CPU, a 32nd of a GPU's memory."""
    return memory_budget(device) // INPUT_SHARE


def storage_bytes(obj: Any) -> dict[int, int]:
    """Every tensor storage reachable from ``obj`` (through dicts, lists, tuples, cmlgraph objects' attributes and
    tensors' own attributes, e.g. a sparse matrix's cached transpose), as ``{storage pointer: bytes}``; sparse
    tensors count their indices and values."""
    out: dict[int, int] = {}
    seen: set[int] = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, Tensor):
            if item.layout == torch.sparse_coo:
                stack += [item._indices(), item._values()]
            elif item.layout in (torch.sparse_csr, torch.sparse_bsr):
                stack += [item.crow_indices(), item.col_indices(), item.values()]
            elif item.layout in (torch.sparse_csc, torch.sparse_bsc):
                stack += [item.ccol_indices(), item.row_indices(), item.values()]
            elif item.device.type != "meta":
                storage = item.untyped_storage()
                out[storage.data_ptr()] = storage.nbytes()
            stack += list(getattr(item, "__dict__", {}).values())
        elif isinstance(item, dict):
            stack += list(item.values())
        elif isinstance(item, (list, tuple)):
            stack += list(item)
        elif type(item).__module__.startswith("cmlgraph") and hasattr(item, "__dict__"):
            stack += list(vars(item).values())
    return out


class EpisodeChunks(Generic[T]):
    """``items`` materialised in consecutive chunks of at most ``chunk`` items whose episodes' own tensors hold at
    most ``budget`` bytes (the item that reaches it closes its chunk: at least one a chunk). Called once a chunk
    (a :class:`~cmlgraph.train.prefetch.Prefetcher`'s producer); raises ``StopIteration`` after the last.

    Args:
        items: What to materialise (raw episodes, or ``(run, raw)`` pairs).
        chunk: Most items a chunk.
        materialize: One item's episode.
        budget: Bytes of own tensors a chunk may hold (:func:`input_budget`).
    """

    def __init__(self, items: Sequence[T], chunk: int, materialize: Callable[[T], Any], budget: int) -> None:
        self._items: Iterator[T] = iter(items)
        self.chunk, self.materialize, self.budget = max(1, int(chunk)), materialize, int(budget)
        self._shared: set[int] | None = None  # storages the first two episodes share: the graph's
        self._first: dict[int, int] | None = None
        self.sizes: list[int] = []  # each chunk's item count (what the budget made of ``chunk``)

    def _own(self, storages: dict[int, int]) -> int:
        return sum(b for ptr, b in storages.items() if self._shared is None or ptr not in self._shared)

    def __call__(self, _: Any = None) -> tuple[list[T], list[Any]]:
        items: list[T] = []
        eps: list[Any] = []
        held = 0
        for item in self._items:
            ep = self.materialize(item)
            items.append(item)
            eps.append(ep)
            storages = storage_bytes(ep)
            if self._shared is None and self._first is None:
                self._first = storages  # counted once the second episode shows what is shared
            else:
                if self._shared is None:
                    assert self._first is not None
                    self._shared = set(self._first) & set(storages)
                    held += self._own(self._first) if len(eps) > 1 else 0
                held += self._own(storages)
            if len(items) >= self.chunk or held >= self.budget:
                break
        if not items:
            raise StopIteration
        self.sizes.append(len(items))
        return items, eps


__all__ = ["INPUT_SHARE", "EpisodeChunks", "input_budget", "storage_bytes"]
