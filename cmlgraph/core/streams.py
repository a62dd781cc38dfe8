"""Each run's own random stream inside a fused meta-step (``--parallel-runs``, issue 18 item 5).

A run trained alone draws its dropout masks from torch's global RNG. When R runs train together, their R·B tasks
run as one task batch; for each run's folder to equal a separate run of it, the masks of the rows of run r's tasks
must be the ones run r would have drawn alone: the same draws, from run r's own RNG state, in the same order.
:func:`task_streams` says, for the duration of a fused computation, which consecutive tasks belong to which run and
gives each run a :class:`torch.Generator` holding its RNG state; an encoder that supports it (``random_streams =
True``: G-Meta's and AMM-GNN's GCNs, the GNN backbone) draws each run's rows of a pass from that run's generator
(:func:`stream_spans`), and draws nothing from the global RNG.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TaskStreams:
    """Runs' tasks in task order and their generators.

    Attributes:
        sizes: Tasks of each run, in the order the runs' tasks are stacked.
        generators: Each run's generator (its RNG state as it would be alone).
    """

    sizes: tuple[int, ...]
    generators: tuple[torch.Generator, ...]

    def spans(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """``(run, a, b)`` for each run with tasks in ``[start, stop)``: its tasks there, ``a <= t < b``."""
        out, lo = [], 0
        for run, n in enumerate(self.sizes):
            a, b = max(lo, start), min(lo + n, stop)
            if a < b:
                out.append((run, a, b))
            lo += n
        return out


_CURRENT: ContextVar[TaskStreams | None] = ContextVar("cmlgraph_task_streams", default=None)


@contextmanager
def task_streams(sizes: Sequence[int], generators: Sequence[torch.Generator]) -> Iterator[TaskStreams]:
    """Within the block, stream-aware encoders draw run r's random numbers from ``generators[r]``.

    Raises:
        ValueError: ``sizes`` and ``generators`` differ in length, or a size is not positive.
    """
    if len(sizes) != len(generators) or any(int(n) < 1 for n in sizes):
        raise ValueError(f"task_streams needs one positive task count per generator, got {list(sizes)} for "
                         f"{len(generators)} generators")
    streams = TaskStreams(tuple(int(n) for n in sizes), tuple(generators))
    token = _CURRENT.set(streams)
    try:
        yield streams
    finally:
        _CURRENT.reset(token)


def current_streams() -> TaskStreams | None:
    """The streams of the enclosing :func:`task_streams` block, or ``None`` (draw from the global RNG)."""
    return _CURRENT.get()


def _greedy(weights: Sequence[int], limit: int) -> list[tuple[int, int]]:
    groups, start, total = [], 0, 0
    for t, w in enumerate(weights):
        if t > start and total + w > limit:
            groups.append((start, t))
            start, total = t, 0
        total += w
    groups.append((start, len(weights)))
    return groups


def group_tasks(weights: Sequence[int], limit: int, segments: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """Consecutive task groups ``[a, b)`` whose weights (ball rows, or 1 per task) add up to at most ``limit``; a
    task never split, one heavier than ``limit`` alone.

    ``segments`` (each fused run's task count, in order): each run's tasks are grouped as they would be alone,
    and consecutive groups of different runs merged while they fit; so every run's own groups stay whole and a
    pass draws each run's random numbers as that run alone would (:class:`TaskStreams`).

    Raises:
        ValueError: ``segments`` that do not add up to the number of tasks.
    """
    if segments is None:
        return _greedy(weights, limit)
    if sum(segments) != len(weights) or any(n < 1 for n in segments):
        raise ValueError(f"segments {list(segments)} do not split {len(weights)} tasks")
    groups: list[tuple[int, int]] = []
    total, lo = 0, 0
    for n in segments:
        for a, b in _greedy(weights[lo:lo + n], limit):
            w = sum(weights[lo + a:lo + b])
            if groups and total + w <= limit:
                groups[-1], total = (groups[-1][0], lo + b), total + w
            else:
                groups.append((lo + a, lo + b))
                total = w
        lo += n
    return groups


def generator_from_state(state: Tensor, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` holding ``state`` (a ``torch.get_rng_state()``, or for CUDA a
    ``torch.cuda.get_rng_state(device)``): it draws what the global RNG in that state would draw."""
    gen = torch.Generator(device=device)
    gen.set_state(state)
    return gen


__all__ = ["TaskStreams", "current_streams", "generator_from_state", "group_tasks", "task_streams"]
