"""The backbone interface: one feature extractor ψ per domain, plus the heads that read its features.

Why an interface: the CML outer loop, the inner loop and the evaluation never look inside a backbone.
A backbone maps a task input (a tensor of points, a batch of images, or a :class:`GraphInput`) to features
``Tensor[n, ...]`` and builds the meta-learner head θ and the co-learner head φ that read those features.
Everything is evaluated through ``torch.func.functional_call`` on parameter dicts, so a backbone must keep no
adapted state and must work when its parameters are swapped for adapted ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def mlp_head(in_dim: int, out_dim: int, depth: int = 0, hidden: int | None = None) -> nn.Module:
    """Build a linear head (depth 0) or ``depth`` Linear+ReLU hidden layers followed by a linear layer.

    Args:
        in_dim: Feature dimension d.
        out_dim: Number of outputs (ways for classification, 1 for regression).
        depth: Number of hidden layers.
        hidden: Hidden width; defaults to ``in_dim``.
    """
    if depth < 0:
        raise ValueError(f"co-learner depth must be >= 0, got {depth}")
    hidden = hidden or in_dim
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class Backbone(nn.Module):
    """Base class of feature extractors ψ.

    Subclasses set ``feature_dim`` (d) and implement :meth:`forward`. The default heads are linear layers on
    ``Tensor[n, d]`` features; a backbone whose features are not flat (Conv4's feature maps) overrides
    :meth:`make_head` and :meth:`make_co_learner`.
    """

    feature_dim: int
    #: Whether running a meta-batch's tasks together (``train.batched: auto``) beats a per-task loop on CPU.
    batch_on_cpu: bool = True

    def forward(self, inputs: Any) -> Tensor:  # pragma: no cover - abstract
        """Map a task input to features ``Tensor[n, feature_dim]``."""
        raise NotImplementedError

    def pass_values(self, inputs: Any) -> int | None:
        """About how many activation values one task's forward pass on ``inputs`` computes (a bound, for sizing
        evaluation chunks: autograd keeps them all until the inner step's backward); ``None`` where that is small
        next to the weights (the default)."""
        return None

    def make_head(self, out_dim: int) -> nn.Module:
        """The meta-learner head θ: a linear layer on the features."""
        return mlp_head(self.feature_dim, out_dim, depth=0)

    def make_co_learner(self, out_dim: int, depth: int, hidden: int | None = None) -> nn.Module:
        """The co-learner head φ: ``depth`` hidden Linear+ReLU layers (width ``hidden``, default d), then linear."""
        return mlp_head(self.feature_dim, out_dim, depth=depth, hidden=hidden)


def auto_batched(extractor: nn.Module, device: torch.device | str) -> bool | None:
    """What ``train.batched: auto`` means for this extractor on ``device``: ``None`` (batch whenever the
    episodes stack) unless the backbone runs faster task by task there (``False``)."""
    on_cpu = torch.device(device).type == "cpu"
    return False if on_cpu and not getattr(extractor, "batch_on_cpu", True) else None


def num_parameters(module: nn.Module) -> int:
    """Count the parameters of a module."""
    return sum(p.numel() for p in module.parameters())


__all__ = ["Backbone", "auto_batched", "mlp_head", "num_parameters", "torch"]
