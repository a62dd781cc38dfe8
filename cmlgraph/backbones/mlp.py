"""MLP feature extractor: the 40-40 ReLU network of Finn et al. (2017) for sinusoid regression."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from cmlgraph.backbones.base import Backbone


class MLPBackbone(Backbone):
    """Fully connected ReLU layers; the features are the last hidden layer's activations.

    Args:
        in_dim: Input dimension.
        hidden: Widths of the hidden layers (default ``(40, 40)``, as in MAML's sinusoid experiment).
    """

    def __init__(self, in_dim: int = 1, hidden: Sequence[int] = (40, 40)) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("MLPBackbone needs at least one hidden layer")
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.net = nn.Sequential(*layers)
        self.feature_dim = d

    def forward(self, inputs: Tensor) -> Tensor:
        """Map ``Tensor[n, in_dim]`` to ``Tensor[n, feature_dim]``."""
        return self.net(inputs)
