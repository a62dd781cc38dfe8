"""Stateless forward passes over parameter dicts, per task or batched over tasks with ``torch.func.vmap``.

Why: the inner loop must evaluate the network with adapted weights that live in dicts. In batched mode every
tensor of ``params`` and the inputs carry a leading task dimension; ``vmap`` runs the same functional call for
all tasks of a meta-batch at once, and ordinary autograd (``torch.autograd.grad``) differentiates through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from cmlgraph.core.model import MetaModel, sub

LossFn = Callable[[Tensor, Tensor], Tensor]


def call(module: nn.Module, params: Mapping[str, Tensor], x: Any, batched: bool = False) -> Tensor:
    """Run ``module`` with ``params``; when ``batched``, over a leading task dimension of params and x."""
    if not batched:
        return functional_call(module, dict(params), (x,))
    if getattr(x, "task_batch", False):
        # A task batch the module runs itself (graph inputs: one block-diagonal pass with per-task weights).
        return module.forward_tasks(dict(params), x)

    def one(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return functional_call(module, p, (xi,))

    return vmap(one, in_dims=(0, 0), randomness="different")(dict(params), x)


def features(model: MetaModel, params: Mapping[str, Tensor], x: Any, batched: bool = False) -> Tensor:
    """The extractor's features g_ψ(x) under the ``extractor.*`` entries of ``params``; L2-normalised per example
    (over all its feature dimensions) when the model has ``normalize_features`` (:func:`unit_rows`)."""
    out = call(model.extractor, sub(params, "extractor"), x, batched)
    if getattr(model, "normalize_features", False):
        out = unit_rows(out.flatten(2 if batched else 1)).view_as(out)
    return out


#: ``eps`` of :func:`unit_rows`, added to the squared norm.
UNIT_EPS = 1e-12


def unit_rows(f: Tensor) -> Tensor:
    """``f / sqrt(||f||^2 + eps)`` over the last dimension: unit rows, and finite first and second derivatives
    everywhere. (``F.normalize`` clamps the norm instead, whose second derivative at a zero row, e.g. a node with
    all-zero features, is NaN and poisons a second-order meta-gradient.)"""
    return f * torch.rsqrt(f.pow(2).sum(-1, keepdim=True) + UNIT_EPS)


def head(model: MetaModel, params: Mapping[str, Tensor], feats: Tensor, batched: bool = False) -> Tensor:
    """The meta-learner head h_θ on features."""
    return call(model.head, sub(params, "head"), feats, batched)


def co_head(model: MetaModel, params: Mapping[str, Tensor], feats: Tensor, batched: bool = False) -> Tensor:
    """The co-learner c_φ on features."""
    if model.co is None:
        raise ValueError("this model has no co-learner (build it with co_depth set)")
    return call(model.co, sub(params, "co"), feats, batched)


def task_loss(loss_fn: LossFn, pred: Tensor, y: Tensor, batched: bool = False) -> Tensor:
    """Per-task loss: a scalar, or ``Tensor[B]`` when batched."""
    if not batched:
        return loss_fn(pred, y)
    return vmap(loss_fn)(pred, y)
