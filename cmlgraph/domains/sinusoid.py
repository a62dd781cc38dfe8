"""Sinusoid regression (Finn et al., 2017): y = A sin(x − φ), A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5]."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cmlgraph.backbones.mlp import MLPBackbone
from cmlgraph.core.episode import Episode
from cmlgraph.core.transfer import episode_to_device
from cmlgraph.domains.base import Domain


class SinusoidDomain(Domain):
    """K-shot sinusoid regression tasks for a 40-40 ReLU MLP.

    Args:
        shots: Support points K.
        queries: Query points per task.
        hidden: Widths of the MLP's hidden layers.
    """

    task = "sinusoid"
    metric = "mse"
    out_dim = 1

    def __init__(self, shots: int = 5, queries: int = 10, hidden: tuple[int, ...] = (40, 40)) -> None:
        self.name = "sinusoid"
        self.shots, self.queries, self.hidden = shots, queries, tuple(hidden)
        self.notes: list[str] = []

    def build_extractor(self) -> MLPBackbone:
        """The MLP extractor; the meta-learner head is its final linear layer."""
        return MLPBackbone(1, self.hidden)

    def sample(self, split: str, n: int, generator: torch.Generator) -> list[Episode]:
        """Draw ``n`` tasks; each raw episode already holds its points (there is nothing to index)."""
        amp = 0.1 + 4.9 * torch.rand(n, generator=generator)
        phase = math.pi * torch.rand(n, generator=generator)
        x = -5.0 + 10.0 * torch.rand(n, self.shots + self.queries, 1, generator=generator)
        y = amp.view(n, 1, 1) * torch.sin(x - phase.view(n, 1, 1))
        k = self.shots
        return [Episode(x[i, :k], y[i, :k], x[i, k:], y[i, k:]) for i in range(n)]

    def materialize(self, raw: Episode, device: torch.device | str = "cpu") -> Episode:
        """Move the episode to ``device``: pinned and ``non_blocking`` to CUDA (a plain copy from pageable memory
        waits for the running step; :func:`~cmlgraph.core.transfer.episode_to_device`)."""
        return episode_to_device(raw, device)

    def to_state(self, raws: list[Episode]) -> dict[str, Tensor]:
        """Stack the points of the episodes."""
        return {name: torch.stack([getattr(e, name) for e in raws])
                for name in ("support_x", "support_y", "query_x", "query_y")}

    def from_state(self, state: dict[str, Tensor]) -> list[Episode]:
        """Unstack saved episodes."""
        n = state["support_x"].shape[0]
        return [Episode(state["support_x"][i], state["support_y"][i], state["query_x"][i], state["query_y"][i])
                for i in range(n)]

    def describe(self) -> dict:
        """Facts for the summary."""
        return {**super().describe(), "shots": self.shots, "queries": self.queries}
