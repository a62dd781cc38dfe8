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


def can_stack(episodes: list[Episode]) -> bool:
    """Whether the episodes are plain tensors of equal shapes, so they can run batched with ``vmap``."""
    first = episodes[0]
    if not all(isinstance(v, Tensor) for v in (first.support_x, first.query_x)):
        return False
    return all(
        isinstance(e.support_x, Tensor) and isinstance(e.query_x, Tensor)
        and e.support_x.shape == first.support_x.shape and e.query_x.shape == first.query_x.shape
        and e.support_y.shape == first.support_y.shape and e.query_y.shape == first.query_y.shape
        for e in episodes
    )


def stack(episodes: list[Episode]) -> Episode:
    """Stack tensor episodes along a new leading task dimension."""
    return Episode(
        torch.stack([e.support_x for e in episodes]),
        torch.stack([e.support_y for e in episodes]),
        torch.stack([e.query_x for e in episodes]),
        torch.stack([e.query_y for e in episodes]),
    )
