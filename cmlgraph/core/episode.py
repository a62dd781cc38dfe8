"""The domain-independent episode: support and query inputs with their targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Episode:
    """One few-shot task as the core sees it.

    Attributes:
        support_x: Support inputs (a tensor, or a backbone-specific object such as a ``GraphInput``).
        support_y: Support targets (class ids 0..N−1, or regression targets).
        query_x: Query inputs.
        query_y: Query targets.
    """

    support_x: Any
    support_y: Tensor
    query_x: Any
    query_y: Tensor


def _stackable(xs: list[Any]) -> bool:
    first = xs[0]
    if isinstance(first, Tensor):
        return all(isinstance(x, Tensor) and x.shape == first.shape for x in xs)
    check = getattr(type(first), "can_stack_tasks", None)
    return check is not None and all(type(x) is type(first) for x in xs) and bool(check(xs))


def _stack(xs: list[Any]) -> Any:
    if isinstance(xs[0], Tensor):
        return torch.stack(xs)
    return type(xs[0]).stack_tasks(xs)


def can_stack(episodes: list[Episode]) -> bool:
    """Whether the episodes can run batched: equal-shape tensors (for ``vmap``), or inputs whose type provides
    ``can_stack_tasks``/``stack_tasks`` (graph inputs, which the GNN batches itself)."""
    return (_stackable([e.support_x for e in episodes]) and _stackable([e.query_x for e in episodes])
            and _stackable([e.support_y for e in episodes]) and _stackable([e.query_y for e in episodes]))


def stack(episodes: list[Episode]) -> Episode:
    """Stack episodes along a new leading task dimension (tensors) or into a task batch (graph inputs)."""
    return Episode(
        _stack([e.support_x for e in episodes]),
        torch.stack([e.support_y for e in episodes]),
        _stack([e.query_x for e in episodes]),
        torch.stack([e.query_y for e in episodes]),
    )
