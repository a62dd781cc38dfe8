"""The CML outer objective (DESIGN §1), public so other implementations can check their gradients against it.

L_outer = 1/B Σ_i [ L(h_θ'_i(g_ψ'_i(Q_i))) + γ · L(c_φ(g_ψ'_i(Q_i))) ]

where (ψ'_i, θ'_i) come from the inner loop on S_i and the co-learner φ reads the adapted extractor's features
with its own unadapted weights. With ``co_mode="cl"`` (the paper's CL control) φ is adapted in the inner loop
too and the co-learner term uses the adapted φ'_i.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cmlgraph.core.episode import Episode, can_stack, stack
from cmlgraph.core.functional import LossFn, co_head, features, head, task_loss
from cmlgraph.core.inner_loop import InnerLoopConfig, inner_loop
from cmlgraph.core.model import MetaModel, group_of, sub


@dataclass
class OuterLoss:
    """The outer objective's parts, each averaged over the meta-batch.

    Attributes:
        meta: The meta-learner's query loss (with MAML++'s multi-step weighting when used).
        co: The co-learner's query loss (zero tensor without a co-learner).
        total: ``meta + gamma * co``: what the optimizer differentiates.
    """

    meta: Tensor
    co: Tensor
    total: Tensor


def _expand(params: Mapping[str, Tensor], batch: int) -> dict[str, Tensor]:
    return {k: v.unsqueeze(0).expand(batch, *v.shape) for k, v in params.items() if group_of(k) != "lrs"}


def _meta_and_co(
    model: MetaModel,
    params: Mapping[str, Tensor],
    ep: Episode,
    loss_fn: LossFn,
    inner: InnerLoopConfig,
    *,
    cml: bool,
    batched: bool,
    first_order: bool | None,
    step_weights: Sequence[float] | None,
) -> tuple[Tensor, Tensor]:
    rates = sub(params, "lrs") or None
    body = {k: v for k, v in params.items() if group_of(k) != "lrs"}
    trajectory = inner_loop(model, body, ep.support_x, ep.support_y, loss_fn, inner, batched=batched,
                            first_order=first_order, rates=rates)
    fast = trajectory[-1]
    q_feats = features(model, fast, ep.query_x, batched)
    meta = task_loss(loss_fn, head(model, fast, q_feats, batched), ep.query_y, batched)
    if step_weights is not None:
        if len(step_weights) != len(trajectory) - 1:
            raise ValueError(f"need {len(trajectory) - 1} step weights, got {len(step_weights)}")
        meta = step_weights[-1] * meta
        for w, p_s in zip(step_weights[:-1], trajectory[1:-1], strict=True):
            f_s = features(model, p_s, ep.query_x, batched)
            meta = meta + w * task_loss(loss_fn, head(model, p_s, f_s, batched), ep.query_y, batched)
    if cml:
        # φ: unadapted (CML) unless it took part in the inner loop (CL); either way it reads ψ'-features.
        co = task_loss(loss_fn, co_head(model, fast, q_feats, batched), ep.query_y, batched)
    else:
        co = torch.zeros_like(meta)
    return meta, co


def outer_objective(
    model: MetaModel,
    params: Mapping[str, Tensor],
    episodes: Sequence[Episode],
    loss_fn: LossFn,
    inner: InnerLoopConfig,
    *,
    gamma: float = 1.0,
    cml: bool = True,
    batched: bool | None = None,
    first_order: bool | None = None,
    step_weights: Sequence[float] | None = None,
) -> OuterLoss:
    """Compute the outer objective of a meta-batch from parameter dicts of ψ, θ, φ.

    Args:
        model: The meta-model supplying the modules (``extractor``, ``head``, ``co``).
        params: Flat dict with ``extractor.*``, ``head.*`` and (for CML) ``co.*`` entries; optional ``lrs.*``
            learned inner step sizes. These are the tensors the returned losses are differentiable in.
        episodes: The meta-batch.
        loss_fn: Task loss ``(pred, y) -> scalar`` (cross-entropy or MSE).
        inner: Inner-loop settings (steps, step size, order, which groups adapt; ``"co"`` in ``adapt`` = CL).
        gamma: Weight γ of the co-learner term.
        cml: Whether to add the co-learner term (needs ``co.*`` entries).
        batched: Run the tasks together with ``vmap`` (default: when there are several episodes and they stack;
            a single episode runs without vmap, which only adds overhead for one task).
        first_order: Override of ``inner.first_order``.
        step_weights: MAML++ multi-step loss weights, one per inner step.

    Returns:
        :class:`OuterLoss` with the meta term, the co-learner term and their total, each a mean over tasks.
    """
    if not episodes:
        raise ValueError("outer_objective needs at least one episode")

    def per_task(p: Mapping[str, Tensor], ep: Episode, batch: bool) -> tuple[Tensor, Tensor]:
        return _meta_and_co(model, p, ep, loss_fn, inner, batched=batch, cml=cml, first_order=first_order,
                            step_weights=step_weights)

    meta, co = mean_over_tasks(per_task, params, episodes, batched)
    return OuterLoss(meta=meta, co=co, total=meta + gamma * co if cml else meta)


#: ``(params, episode, batched) -> (meta, co)``: one task's (or, batched, each stacked task's) losses.
TaskLosses = Callable[[Mapping[str, Tensor], Episode, bool], tuple[Tensor, Tensor]]


def expand_tasks(params: Mapping[str, Tensor], batch: int) -> dict[str, Tensor]:
    """``params`` for ``batch`` stacked tasks: every entry expanded along a new leading task dimension (views, no
    copies), except the learned inner rates (``lrs.*``), which all tasks of one run share as they are."""
    return {**_expand(params, batch), **{k: v for k, v in params.items() if group_of(k) == "lrs"}}


def mean_over_tasks(task_losses: TaskLosses, params: Mapping[str, Tensor], episodes: Sequence[Episode],
                    batched: bool | None = None) -> tuple[Tensor, Tensor]:
    """The meta-batch means of the per-task losses ``task_losses`` gives, all tasks at once or one by one.

    Args:
        task_losses: Per-task meta and co-learner losses (:data:`TaskLosses`).
        params: The meta-parameters (no task dimension).
        episodes: The meta-batch (non-empty).
        batched: Stack the episodes and run them together (default: when there are several and they stack).

    Returns:
        ``(meta, co)``, each a scalar mean over the episodes.
    """
    if batched is None:
        batched = len(episodes) > 1 and can_stack(list(episodes))
    if batched:
        meta, co = task_losses(expand_tasks(params, len(episodes)), stack(list(episodes)), True)
        return meta.mean(), co.mean()
    metas, cos = zip(*(task_losses(params, ep, False) for ep in episodes), strict=True)
    return torch.stack(metas).mean(), torch.stack(cos).mean()
