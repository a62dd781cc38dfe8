"""The container all image few-shot datasets load into, so samplers and trainers need no per-dataset code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from cmlgraph.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class ImageFewShotDataset:
    """Images, class labels and a class split for N-way K-shot episodes.

    Attributes:
        name: Dataset name as the CLI spells it (``"omniglot"``, ``"digits"``).
        images: ``float32[N, C, H, W]`` in ``[0, 1]``.
        labels: ``int64[N]`` class ids ``0..num_classes-1``.
        splits: ``{"train", "val", "test"}`` → disjoint, sorted lists of class ids.
        partial: True when the data is a subset of the standard dataset (reported in ``summary.json``).
        notes: Human-readable notes on what was used and why (partial data, split choices).
        info: Extra facts: ``class_names`` (one per class id), ``num_classes``, ``image_size``, source files,
        ...
    """

    name: str
    images: Tensor
    labels: Tensor
    splits: dict[str, list[int]]
    partial: bool = False
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check shapes, dtypes and that the splits are disjoint, so broken loaders fail at load time."""
        if self.images.dim() != 4 or self.images.dtype != torch.float32:
            raise DataError(
                f"{self.name}: images must be float32 [N, C, H, W], got {self.images.dtype} "
                f"{list(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],) or self.labels.dtype != torch.int64:
            raise DataError(
                f"{self.name}: labels must be int64 [{self.images.shape[0]}], got {self.labels.dtype} "
                f"{list(self.labels.shape)}"
            )
        if set(self.splits) != set(SPLIT_NAMES):
            raise DataError(f"{self.name}: splits must be exactly {SPLIT_NAMES}, got {sorted(self.splits)}")
        seen: dict[int, str] = {}
        for split, classes in self.splits.items():
            for c in classes:
                if c in seen:
                    raise DataError(f"{self.name}: class {c} is in both the {seen[c]} and the {split} split")
                seen[c] = split

    @property
    def num_classes(self) -> int:
        """Number of class ids (``max label + 1``)."""
        return int(self.labels.max()) + 1 if self.labels.numel() else 0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def episode_tensors(self, episode: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Gather ``(support_x, support_y, query_x, query_y)`` for an episode of image indices."""
        return self.images[episode.support], episode.support_y, self.images[episode.query], episode.query_y


__all__ = ["SPLIT_NAMES", "ImageFewShotDataset"]
