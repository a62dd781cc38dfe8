"""Few-shot image classification (Omniglot, scikit-learn digits) on the Conv4 backbone."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cmlgraph.backbones.conv4 import Conv4Backbone
from cmlgraph.backbones.conv_norm import TRANSDUCTIVE, QueriesWithSupport, check_norm
from cmlgraph.config import Config
from cmlgraph.core.episode import Episode
from cmlgraph.core.transfer import to_device
from cmlgraph.domains.base import Domain
from cmlgraph.errors import ConfigError
from cmlgraph.images import (
    ImageEpisode,
    ImageEpisodeSampler,
    ImageFewShotDataset,
    episodes_from_state,
    episodes_to_state,
    load_images,
)


class ImageDomain(Domain):
    """N-way K-shot image tasks over disjoint train/val/test classes.

    Args:
        dataset: The loaded image dataset.
        ways: Classes per task.
        shots: Support images per class.
        queries: Query images per class.
        norm: Conv4's normalisation (:mod:`cmlgraph.backbones.conv_norm`); with ``support`` the episodes' query
            inputs carry their support images (:class:`QueriesWithSupport`).
    """

    metric = "accuracy"

    def __init__(self, dataset: ImageFewShotDataset, ways: int, shots: int, queries: int,
                 norm: str = "batch") -> None:
        self.dataset = dataset
        self.norm = check_norm(norm)
        self.name = dataset.name
        self.task = dataset.name
        self.out_dim = ways
        self.ways, self.shots, self.queries = ways, shots, queries
        self.partial = bool(dataset.partial)
        self.notes = list(dataset.notes)
        # Built now so impossible settings fail before any run folder exists.
        self.samplers = {}
        for split in ("train", "val", "test"):
            try:
                self.samplers[split] = ImageEpisodeSampler(dataset.labels, dataset.splits[split], ways, shots,
                                                           queries)
            except ConfigError as exc:
                raise ConfigError(f"{dataset.name}, {split} classes: {exc}") from None

    @classmethod
    def from_config(cls, cfg: Config) -> ImageDomain:
        """Load the dataset named by ``data.task`` (``omniglot`` or ``digits``)."""
        kwargs: dict[str, Any] = {"image_size": cfg.data.image_size, "seed": cfg.train.seed}
        if cfg.data.task == "omniglot":
            kwargs.update(rotations=cfg.data.rotations, split=_split_arg(cfg.data.split))
        ds = load_images(cfg.data.task, cfg.data.data_root, **kwargs)
        return cls(ds, cfg.data.ways, int(cfg.data.shots), int(cfg.data.queries), cfg.model.norm or "batch")

    def build_extractor(self) -> Conv4Backbone:
        """Conv4 at the dataset's image size, with the domain's normalisation."""
        c, h, _ = self.dataset.image_shape
        return Conv4Backbone(in_channels=c, image_size=h, norm=self.norm)

    def sample(self, split: str, n: int, generator: torch.Generator) -> list[ImageEpisode]:
        """``n`` episodes of a split drawn from ``generator``."""
        sampler = self.samplers[split]
        return [sampler.sample(generator) for _ in range(n)]

    def materialize(self, raw: ImageEpisode, device: torch.device | str = "cpu") -> Episode:
        """Gather the episode's images (queries with their support images under the ``support`` norm), sent pinned
        and ``non_blocking`` to CUDA (:func:`~cmlgraph.core.transfer.to_device`)."""
        sx, sy, qx, qy = (to_device(t, device) for t in self.dataset.episode_tensors(raw))
        query = QueriesWithSupport(qx, sx) if self.norm == "support" else qx
        return Episode(sx, sy, query, qy)

    def to_state(self, raws: list[ImageEpisode]) -> dict[str, Tensor]:
        """Stacked image indices of the episodes."""
        return episodes_to_state(raws)

    def from_state(self, state: dict[str, Tensor]) -> list[ImageEpisode]:
        """Inverse of :meth:`to_state`."""
        return episodes_from_state(state)

    def describe(self) -> dict[str, Any]:
        """Facts for the summary."""
        return {**super().describe(), "ways": self.ways, "shots": self.shots, "queries": self.queries,
                "classes": {k: len(v) for k, v in self.dataset.splits.items()},
                "norm": self.norm, "transductive": TRANSDUCTIVE[self.norm]}


def _split_arg(split: str | dict[str, list[Any]] | None) -> Any:
    if not isinstance(split, str) or split in ("vinyals", "seeded"):
        return split
    parts = split.split("/")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return split
