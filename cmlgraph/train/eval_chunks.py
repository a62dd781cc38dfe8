"""Evaluation chunks bounded by the memory of their own episodes (issue 18).

Evaluation adapts its fixed tasks in chunks (:func:`~cmlgraph.train.evaluate.eval_chunk`: 500 on a GPU, 100 on the
CPU), and a chunk's episodes are all materialised before its passes run. Most episodes are small (node ids, k-hop
plans: about 80 KiB a task on the default graph, 1.2 MiB on Amazon-Computers), but GAT's k-hop subgraphs carry
their own features: on Amazon-Computers (767 features, 2-hop neighbourhoods of thousands of nodes) the 500 fixed
test tasks of 2-way 5-shot with 10 queries held **14.7 GB** (session 34, summing the storages of
``domain.materialize`` of each), on a GPU in one chunk, before the padded union the chunk builds and the next chunk
the prefetch worker prepares. A chunk here ends at ``chunk`` tasks or once its episodes' own tensors reach the byte
budget, whichever comes first; the scores are the same for any chunking (``tests/train/test_eval_chunks.py``).

"Own" tensors: storages reachable from an episode through objects that the first two episodes do not share. What
both reference (the graph, its caches, G-Meta's ball index) is held once whatever the chunk, and is never walked
again: those caches grow as evaluation runs (a whole graph's adjacency and SGC's propagated features, built by the
first forward; the ball index's cached balls), so counting storages alone would charge them to every later task
(session 35's review: a full-mode SGC run's first validation split into chunks of 5 instead of 40 under a small
budget, and G-Meta's walk slowed with every chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

from cmlgraph.core.memory import memory_budget

T = TypeVar("T")

#: A chunk's episodes may hold this share of the device's :func:`~cmlgraph.core.memory.memory_budget` (8 GiB on
#: the CPU, half of a GPU's memory) in their own tensors: a 24th, since the layouts built for the chunk (GAT's
#: padded union) about double them and, with prefetching, three chunks are alive at once (the one evaluated, the
#: next in the queue and the one the worker builds meanwhile).
INPUT_SHARE = 24


def input_budget(device: torch.device | str) -> int:
    """Bytes a chunk's episodes may hold in their own tensors on ``device`` (:data:`INPUT_SHARE`): 341 MiB on the
    CPU, a 48th of a GPU's memory."""
    return memory_budget(device) // INPUT_SHARE


def storage_bytes(obj: Any) -> dict[int, int]:
    """Every tensor storage reachable from ``obj`` (through dicts, lists, tuples, cmlgraph objects' attributes and
    tensors' own attributes, e.g. a sparse matrix's cached transpose), as ``{storage pointer: bytes}``; sparse
    tensors count their indices and values."""
    return _walk(obj)[0]


def _walk(obj: Any, skip: frozenset[int] = frozenset()) -> tuple[dict[int, int], dict[int, Any]]:
    """:func:`storage_bytes` of ``obj``, not entering the objects whose ``id`` is in ``skip``; also every container,
    cmlgraph object and tensor reached, by ``id``."""
    out: dict[int, int] = {}
    reached: dict[int, Any] = {}
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in reached or id(item) in skip:
            continue
        if isinstance(item, Tensor):
            reached[id(item)] = item
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
            reached[id(item)] = item
            stack += list(item.values())
        elif isinstance(item, (list, tuple)):
            reached[id(item)] = item
            stack += list(item)
        elif type(item).__module__.startswith("cmlgraph") and hasattr(item, "__dict__"):
            reached[id(item)] = item
            stack += list(vars(item).values())
    return out, reached


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
        self._first: tuple[dict[int, int], dict[int, Any]] | None = None  # the first episode's walk
        self._skip: frozenset[int] | None = None  # objects the first two episodes share: the graph's, its caches
        self._kept: list[Any] = []  # those objects, kept alive so that their ids are not reused by a task's own
        self._shared: set[int] = set()  # storages both reach (also a task's views of the graph's tensors)
        self.sizes: list[int] = []  # each chunk's item count (what the budget made of ``chunk``)

    def _own(self, storages: dict[int, int]) -> int:
        return sum(b for ptr, b in storages.items() if ptr not in self._shared)

    def __call__(self, _: Any = None) -> tuple[list[T], list[Any]]:
        items: list[T] = []
        eps: list[Any] = []
        held = 0
        for item in self._items:
            ep = self.materialize(item)
            items.append(item)
            eps.append(ep)
            if self._skip is None and self._first is None:
                self._first = _walk(ep)  # counted once the second episode shows what is shared
            elif self._skip is None:
                assert self._first is not None
                (first, first_objs), (storages, objs) = self._first, _walk(ep)
                shared = first_objs.keys() & objs.keys()
                self._kept = [objs[i] for i in shared]
                self._skip = frozenset(shared)
                self._shared = set(first) & set(storages)
                self._first = None
                held += (self._own(first) if len(eps) > 1 else 0) + self._own(storages)
            else:
                held += self._own(_walk(ep, self._skip)[0])
            if len(items) >= self.chunk or held >= self.budget:
                break
        if not items:
            raise StopIteration
        self.sizes.append(len(items))
        return items, eps


__all__ = ["INPUT_SHARE", "EpisodeChunks", "input_budget", "storage_bytes"]
