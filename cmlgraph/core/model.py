"""The meta-model: extractor ψ, meta-learner head θ, optional co-learner φ and optional learned inner rates.

Why one module: a single ``nn.Module`` gives one flat parameter dict with stable, prefixed names
(``extractor.*``, ``head.*``, ``co.*``, ``lrs.*``) that the functional core slices by group. The module holds
no adaptation state: adapted weights only ever live in parameter dicts.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from cmlgraph.backbones.base import Backbone

GROUPS = ("extractor", "head", "co", "lrs")


class MetaModel(nn.Module):
    """Container of ψ (``extractor``), θ (``head``), φ (``co``, only with a co-learner) and MAML++ rates.

    Args:
        extractor: The feature extractor ψ.
        out_dim: Outputs of the heads (ways, or 1 for regression).
        co_depth: Depth of the co-learner; ``None`` builds no co-learner (plain MAML and friends).
        co_hidden: Width of the co-learner's hidden layers; ``None``: the backbone's default.
        normalize: L2-normalise the extractor's output of every example (``model.normalize``, issue 17): the heads
            read unit-length features whatever the input scale.
    """

    def __init__(self, extractor: Backbone, out_dim: int, co_depth: int | None = None,
                 co_hidden: int | None = None, normalize: bool = False) -> None:
        super().__init__()
        self.normalize_features = bool(normalize)
        self.extractor = extractor
        self.head = extractor.make_head(out_dim)
        if co_depth is None:
            self.co = None
        elif co_hidden is None:
            self.co = extractor.make_co_learner(out_dim, co_depth)
        else:
            self.co = extractor.make_co_learner(out_dim, co_depth, hidden=co_hidden)
        self.lrs: nn.ParameterDict | None = None
        self.out_dim = out_dim

    def add_learned_rates(self, names: list[str], steps: int, init: float) -> None:
        """Add one learnable inner step size per parameter tensor and per inner step (MAML++ LSLR)."""
        self.lrs = nn.ParameterDict(
            {rate_key(n): nn.Parameter(torch.full((steps,), float(init))) for n in names}
        )


def rate_key(name: str) -> str:
    """The ``lrs`` key of a parameter name (ParameterDict keys may not contain dots)."""
    return name.replace(".", "__")


def group_of(name: str) -> str:
    """The group (``extractor``, ``head``, ``co`` or ``lrs``) of a flat parameter name."""
    return name.split(".", 1)[0]


def sub(params: Mapping[str, Tensor], group: str) -> dict[str, Tensor]:
    """The entries of ``params`` under ``group.``, with the prefix stripped (for ``functional_call``)."""
    prefix = group + "."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def parameters_of(model: nn.Module) -> dict[str, Tensor]:
    """The model's trainable parameters as a flat dict name → leaf tensor."""
    return {k: v for k, v in model.named_parameters()}


def inference_state(model: MetaModel) -> dict[str, Tensor]:
    """The saved inference weights: everything but the co-learner (ψ, θ and, for MAML++, the inner rates)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if group_of(k) != "co"}
