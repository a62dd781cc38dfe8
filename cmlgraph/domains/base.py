"""The domain interface: where tasks come from, what the extractor is, and how a task is scored.

A domain (sinusoid regression, a graph dataset, an image dataset) samples *raw* episodes (small index tensors,
cheap to store) from its own generator, turns them into core :class:`Episode` objects on demand, and can save
and restore its fixed evaluation episodes as a dict of tensors (``torch.load(weights_only=True)``-safe).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cmlgraph.backbones.base import Backbone
from cmlgraph.core.episode import Episode


def accuracy(pred: Tensor, y: Tensor) -> float:
    """Fraction of correct predictions of a logits matrix."""
    return float((pred.argmax(-1) == y).float().mean())


def mse(pred: Tensor, y: Tensor) -> float:
    """Mean squared error."""
    return float(F.mse_loss(pred, y))


class Domain(ABC):
    """Base class of task domains.

    Attributes:
        name: Dataset or task name (``sinusoid``, ``synthetic``, ``omniglot``...).
        task: Domain kind (``sinusoid``, ``graph``, ``omniglot``, ``digits``).
        metric: ``accuracy`` or ``mse``.
        out_dim: Head outputs (ways, or 1).
        partial: Whether the data was partial.
        notes: Messages about the data worth showing the user (partial data, dropped classes...).
    """

    name: str
    task: str
    metric: str
    out_dim: int
    partial: bool = False
    notes: list[str]

    def loss_fn(self, pred: Tensor, y: Tensor) -> Tensor:
        """Task loss: cross-entropy for classification, MSE for regression."""
        if self.metric == "mse":
            return F.mse_loss(pred, y)
        return F.cross_entropy(pred, y)

    def score(self, pred: Tensor, y: Tensor) -> float:
        """Per-task metric."""
        return mse(pred, y) if self.metric == "mse" else accuracy(pred, y)

    @abstractmethod
    def build_extractor(self) -> Backbone:
        """A freshly initialised feature extractor ψ."""

    @abstractmethod
    def sample(self, split: str, n: int, generator: torch.Generator) -> list[Any]:
        """``n`` raw episodes of a split (``train``, ``val``, ``test``) drawn from ``generator``."""

    @abstractmethod
    def materialize(self, raw: Any, device: torch.device | str = "cpu") -> Episode:
        """The core episode of a raw one, on ``device``."""

    def prepare_batch(self, episodes: list[Episode], batched: bool | None = None) -> None:
        """Build, on the host and ahead of the step, the layouts the extractor would otherwise build on its first
        pass over these materialized episodes (issue 18: called by the prefetch worker; default: nothing).

        Args:
            episodes: A meta-batch (or an evaluation chunk) as the step will receive it, in order.
            batched: How the step runs them: ``None`` stacked when they stack (``train.batched: auto``), ``True``
                stacked, ``False`` one by one.
        """
        del episodes, batched  # nothing to build ahead by default

    @abstractmethod
    def to_state(self, raws: list[Any]) -> dict[str, Tensor]:
        """Raw episodes as a dict of stacked tensors."""

    @abstractmethod
    def from_state(self, state: dict[str, Tensor]) -> list[Any]:
        """Inverse of :meth:`to_state`."""

    def fixed(self, split: str, n: int, seed: int) -> list[Any]:
        """Fixed evaluation episodes of a split, the same for the same seed, each task once: fewer than ``n``
        when the split has fewer distinct tasks (:func:`~cmlgraph.domains.distinct.draw_distinct`)."""
        from cmlgraph.domains.distinct import draw_distinct

        offset = {"train": 0, "val": 1, "test": 2}[split]
        generator = torch.Generator().manual_seed(10_007 * (seed + 1) + offset)
        return draw_distinct(lambda k: self.sample(split, k, generator), n, self.distinct_tasks(split))

    def distinct_tasks(self, split: str) -> int | None:
        """How many distinct episodes a split has (``None``: unknown, or too many to matter)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Facts about the data for ``summary.json`` and the console."""
        return {"name": self.name, "task": self.task, "partial": self.partial, "notes": list(self.notes)}
