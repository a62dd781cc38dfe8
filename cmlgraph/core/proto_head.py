"""Proto-MAML's head at the start of each task's inner loop (Triantafillou et al., "Meta-Dataset", ICLR 2020, §3).

A linear head on features ``f`` with rows ``W_k = 2 c_k`` and biases ``b_k = -||c_k||^2``, where ``c_k`` is the mean
of the support features of class ``k``, scores ``2 c_k·f - ||c_k||^2 = -||f - c_k||^2 + ||f||^2``: the same arg-max
as the nearest class mean. The inner loop then fine-tunes from there instead of from a head whose rows were
meta-learned for no particular class order. cmlgraph adds the meta-learned head θ (zero at the start, see
:func:`zero_head_`), so ``θ + proto`` is what adapts. The co-learner φ is not touched: under CML it still reads the
adapted features with its own unadapted weights.

Gradients flow through ``c_k`` into the extractor (the class means are a function of ψ), as in Proto-MAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmlgraph.core.functional import features
from cmlgraph.core.model import MetaModel
from cmlgraph.errors import ConfigError


def linear_head_keys(model: MetaModel) -> tuple[str, str]:
    """The flat parameter names (``head.<i>.weight``, ``head.<i>.bias``) of a head that is one linear layer.

    Raises:
        ConfigError: The head has other layers or parameters (Conv4's pooling head, a deeper head).
    """
    mods = [(n, m) for n, m in model.head.named_modules() if n and not isinstance(m, nn.Sequential)]
    if len(mods) != 1 or not isinstance(mods[0][1], nn.Linear) or mods[0][1].bias is None:
        raise ConfigError(f"--head-init proto needs a head that is one linear layer with a bias; this model's head is "
                          f"{[type(m).__name__ for _, m in mods]}: use --head-init learned")
    return f"head.{mods[0][0]}.weight", f"head.{mods[0][0]}.bias"


def class_means(feats: Tensor, y: Tensor, ways: int) -> Tensor:
    """Mean feature of each class: ``[..., n, d]`` features and ``[..., n]`` labels → ``[..., ways, d]``.

    A class without support examples gets a zero mean (its row scores 0 against every feature).
    """
    onehot = F.one_hot(y, ways).to(feats.dtype)  # [..., n, ways]
    counts = onehot.sum(-2).clamp_min(1.0)  # [..., ways]
    return (onehot.transpose(-1, -2) @ feats) / counts.unsqueeze(-1)


def proto_head(model: MetaModel, params: Mapping[str, Tensor], x: Any, y: Tensor, batched: bool = False
               ) -> dict[str, Tensor]:
    """``params`` with the head set to ``θ + (2 c_k, -||c_k||^2)`` from the support set ``(x, y)``.

    Args:
        model: The meta-model (its head must be one linear layer of ``model.out_dim`` outputs).
        params: Flat parameter dict (leading task dimension when ``batched``).
        x: Support inputs.
        y: ``[n]`` (``[B, n]`` batched) class labels in ``0..ways-1``.
        batched: Whether ``params``, ``x`` and ``y`` carry a leading task dimension.

    Returns:
        A new dict; only the two head entries differ from ``params``.
    """
    w_key, b_key = linear_head_keys(model)
    feats = features(model, params, x, batched)
    feats = feats.flatten(2) if batched else feats.flatten(1)
    means = class_means(feats, y, int(model.out_dim))
    out = dict(params)
    out[w_key] = params[w_key] + 2.0 * means
    out[b_key] = params[b_key] - means.pow(2).sum(-1)
    return out


@torch.no_grad()
def zero_head_(model: MetaModel) -> None:
    """Start the meta-learned head θ at zero, so that a task's first head is exactly the prototype formula."""
    w_key, b_key = linear_head_keys(model)
    params = dict(model.named_parameters())
    params[w_key].zero_()
    params[b_key].zero_()


__all__ = ["class_means", "linear_head_keys", "proto_head", "zero_head_"]
