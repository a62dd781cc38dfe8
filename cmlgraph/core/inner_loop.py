"""The one shared inner loop of every MAML-family algorithm.

Why one loop: MAML, ANIL, BOIL, MAML++ and Sharp-MAML differ only in which parameter groups adapt, the step
sizes, the derivative order and an optional sharpness-aware perturbation. Each algorithm configures this loop
through :class:`InnerLoopConfig`; nothing here knows about the co-learner except the CL control, where φ adapts too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from cmlgraph.core.functional import LossFn, co_head, features, head, task_loss
from cmlgraph.core.model import MetaModel, group_of, rate_key


@dataclass(frozen=True)
class InnerLoopConfig:
    """Settings of the inner loop.

    Attributes:
        steps: Number of inner gradient steps S.
        lr: Inner step size α (for every adapted group unless ``group_lr`` overrides it).
        first_order: Drop second-order terms (``create_graph=False``).
        adapt: Parameter groups that adapt: ``("extractor", "head")`` for MAML, ``("head",)`` for ANIL,
            ``("extractor",)`` for BOIL. The CL control adds ``"co"``.
        group_lr: Per-group step sizes, e.g. ``{"head": 0.5}``; groups not named use ``lr``.
        sam_rho: Radius of a sharpness-aware perturbation inside each inner step (Sharp-MAML's inner option);
            0 disables it.
        frozen: Parameter-name prefixes that never adapt even inside an adapted group (AMM-GNN's α and β).
        proto_head: Start the head from the support class means (Proto-MAML; :mod:`cmlgraph.core.proto_head`)
            before the first step; ``params_0`` of the trajectory is that head.
        proto_partial: With ``proto_head``, the inner gradients treat the head as a variable of its own started at
            the prototypes (the partial derivative for ψ); otherwise (default) ψ's inner gradient also runs through
            the prototype head, a function of ψ. Either way the outer gradient reaches ψ through the prototypes.
    """

    steps: int = 1
    lr: float = 0.01
    first_order: bool = False
    adapt: tuple[str, ...] = ("extractor", "head")
    group_lr: Mapping[str, float] = field(default_factory=dict)
    sam_rho: float = 0.0
    frozen: tuple[str, ...] = ()
    proto_head: bool = False
    proto_partial: bool = False

    def step_size(self, name: str) -> float:
        """The fixed inner step size of a parameter."""
        return float(self.group_lr.get(group_of(name), self.lr))


def support_loss(
    model: MetaModel,
    params: Mapping[str, Tensor],
    x: Any,
    y: Tensor,
    loss_fn: LossFn,
    batched: bool,
    with_co: bool,
) -> Tensor:
    """Inner-loop loss on the support set; summed over tasks when batched (so each task gets its own gradient)."""
    feats = features(model, params, x, batched)
    loss = task_loss(loss_fn, head(model, params, feats, batched), y, batched)
    if with_co:
        loss = loss + task_loss(loss_fn, co_head(model, params, feats, batched), y, batched)
    return loss.sum()


def _grads(loss: Tensor, tensors: list[Tensor], create_graph: bool, retain_graph: bool = False
           ) -> list[Tensor | None]:
    return list(torch.autograd.grad(loss, tensors, create_graph=create_graph, retain_graph=create_graph or retain_graph,
                                    allow_unused=True))


def inner_loop(
    model: MetaModel,
    params: Mapping[str, Tensor],
    x: Any,
    y: Tensor,
    loss_fn: LossFn,
    cfg: InnerLoopConfig,
    *,
    batched: bool = False,
    first_order: bool | None = None,
    rates: Mapping[str, Tensor] | None = None,
) -> list[dict[str, Tensor]]:
    """Adapt the groups ``cfg.adapt`` on one support set (or a batch of them) and return the trajectory.

    Args:
        model: The meta-model (supplies the modules; its own parameters are not read).
        params: Flat parameter dict (with a leading task dimension when ``batched``).
        x: Support inputs.
        y: Support targets.
        loss_fn: Task loss ``(pred, y) -> scalar``.
        cfg: Inner-loop settings.
        batched: Whether ``params``, ``x`` and ``y`` carry a leading task dimension.
        first_order: Overrides ``cfg.first_order`` (MAML++'s derivative-order annealing).
        rates: Learned per-parameter, per-step step sizes (``lrs.*`` entries, MAML++; ``Tensor[S]`` each, or, when
            ``batched``, ``Tensor[T, S]``: a row per task, as for runs fused by ``--parallel-runs``); override
            ``cfg``.

    Returns:
        ``[params_0, params_1, ..., params_S]``: the parameters after each inner step, ``params_0`` the input.
    """
    fo = cfg.first_order if first_order is None else first_order
    create_graph = not fo and torch.is_grad_enabled()
    # First order with Proto-MAML heads: the support gradient runs through the prototypes' forward pass (the head
    # starts as a function of ψ), which the outer gradient needs again (it reaches ψ through c_k): keep it.
    retain = cfg.proto_head and torch.is_grad_enabled()
    with_co = "co" in cfg.adapt
    names = [k for k in params if group_of(k) in cfg.adapt and not (cfg.frozen and k.startswith(cfg.frozen))]
    if cfg.proto_head:
        from cmlgraph.core.proto_head import proto_head

        params = proto_head(model, params, x, y, batched)
        if cfg.proto_partial:  # the fast ψ as an alias: gradients w.r.t. it skip the path through the prototypes
            params = {k: v if group_of(k) == "head" else v.view_as(v) for k, v in params.items()}
    fast = dict(params)
    trajectory = [fast]
    for s in range(cfg.steps):
        grads = _grads(support_loss(model, fast, x, y, loss_fn, batched, with_co), [fast[k] for k in names],
                       create_graph, retain)
        if cfg.sam_rho > 0:
            grads = _sam_inner_grads(model, fast, names, grads, x, y, loss_fn, cfg, batched, with_co,
                                     create_graph, retain)
        fast = dict(fast)
        for k, g in zip(names, grads, strict=True):
            if g is None:
                continue
            lr: Tensor | float
            if rates is not None and rate_key(k) in rates:
                rate = rates[rate_key(k)]  # [S], or [T, S]: one row per task (fused runs' own rates)
                lr = rate[..., min(s, rate.shape[-1] - 1)]
                if lr.dim() == 1:
                    lr = lr.view(-1, *([1] * (g.dim() - 1)))
            else:
                lr = cfg.step_size(k)
            fast[k] = fast[k] - lr * g
        trajectory.append(fast)
    return trajectory


def _sam_inner_grads(
    model: MetaModel,
    fast: dict[str, Tensor],
    names: list[str],
    grads: list[Tensor | None],
    x: Any,
    y: Tensor,
    loss_fn: LossFn,
    cfg: InnerLoopConfig,
    batched: bool,
    with_co: bool,
    create_graph: bool,
    retain: bool = False,
) -> list[Tensor | None]:
    """Sharp-MAML's inner option: the gradient at the point ``ρ g/‖g‖`` away (ε treated as a constant)."""
    present = [g for g in grads if g is not None]
    if batched:
        sq = sum(g.detach().pow(2).flatten(1).sum(1) for g in present)
        norm = sq.sqrt().clamp_min(1e-12)
    else:
        norm = torch.sqrt(sum(g.detach().pow(2).sum() for g in present)).clamp_min(1e-12)
    perturbed = dict(fast)
    for k, g in zip(names, grads, strict=True):
        if g is None:
            continue
        n = norm.view(-1, *([1] * (g.dim() - 1))) if batched else norm
        perturbed[k] = fast[k] + cfg.sam_rho * g.detach() / n
    return _grads(support_loss(model, perturbed, x, y, loss_fn, batched, with_co), [perturbed[k] for k in names],
                  create_graph, retain)
