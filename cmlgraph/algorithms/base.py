"""Meta-learning algorithms as small configurations of the shared inner loop and outer objective.

Every algorithm turns a meta-batch into meta-gradients on the flat parameter dict. CML is not an algorithm but a
switch (``cml``, ``gamma``, ``co_depth``) that every algorithm honours through :func:`outer_objective`; the
paper's controls are switches too: ``control="cl"`` adapts the co-learner in the inner loop, ``control="noise"``
replaces the co-learner term by Gaussian noise on the meta-gradients of ψ and θ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from cmlgraph.config import AlgoConfig
from cmlgraph.core.episode import Episode, can_stack
from cmlgraph.core.functional import LossFn, co_head, features, head
from cmlgraph.core.inner_loop import InnerLoopConfig, inner_loop
from cmlgraph.core.memory import training_spans
from cmlgraph.core.model import MetaModel, group_of, sub
from cmlgraph.core.objective import OuterLoss, _meta_and_co, mean_over_tasks
from cmlgraph.core.transfer import to_device


@dataclass
class MetaStep:
    """The result of one meta-gradient computation.

    Attributes:
        grads: Meta-gradient per trained parameter name.
        loss: The outer objective's parts.
        diagnostics: Gradient diagnostics (only when requested).
    """

    grads: dict[str, Tensor]
    loss: OuterLoss
    diagnostics: dict[str, Any] = field(default_factory=dict)


class MetaAlgorithm:
    """MAML (Finn et al., 2017) and the base of every MAML-family algorithm.

    Subclasses change :attr:`default_adapt`, the inner-loop config, the objective's step weights or the way
    meta-gradients are formed (Sharp-MAML), without touching the CML term.

    Args:
        cfg: Algorithm settings; ``inner_steps`` and ``inner_lr`` must be resolved (not ``None``).
        total_steps: Meta-iterations of the run (for annealing schedules).
        seed: Seed of the algorithm's own random generator (noise control).
    """

    name = "maml"
    default_adapt: tuple[str, ...] = ("extractor", "head")
    uses_inner_loop = True
    #: Whether a run meta-trains; the training-free baselines (:mod:`cmlgraph.algorithms.baselines`) run 0 steps.
    trains = True
    #: Whether :meth:`predict` may leave a query unanswered (a NaN row: scored as wrong, counted as abstained).
    abstains = False

    def __init__(self, cfg: AlgoConfig, total_steps: int = 1, seed: int = 0) -> None:
        self.cfg = cfg
        self.total_steps = max(1, total_steps)
        self.generator = torch.Generator().manual_seed(seed + 7919)

    # --- configuration -------------------------------------------------------------------------------------
    @property
    def cml(self) -> bool:
        """Whether the objective carries a co-learner term (CML, or the CL and frozen-co controls)."""
        return self.cfg.cml or self.cfg.control in ("cl", "frozen-co")

    def adapt_groups(self) -> tuple[str, ...]:
        """Groups that adapt in the inner loop (the CL control adds the co-learner)."""
        groups = {"auto": self.default_adapt, "all": ("extractor", "head"), "head": ("head",),
                  "extractor": ("extractor",)}[self.cfg.adapt]
        return groups + ("co",) if self.cfg.control == "cl" else groups

    def inner_config(self, step: int = 0, evaluation: bool = False) -> InnerLoopConfig:
        """The inner-loop settings at a meta-iteration (evaluation uses ``eval_inner_steps``)."""
        steps = self.cfg.eval_inner_steps if evaluation and self.cfg.eval_inner_steps else self.cfg.inner_steps
        group_lr = {g: float(v) for g, v in (("extractor", self.cfg.inner_lr_extractor),
                                             ("head", self.cfg.inner_lr_head)) if v is not None}
        return InnerLoopConfig(steps=int(steps), lr=float(self.cfg.inner_lr), first_order=self.cfg.first_order,
                               adapt=self.adapt_groups(), group_lr=group_lr,
                               proto_head=self.cfg.head_init == "proto",
                               proto_partial=self.cfg.proto_inner == "partial")

    def prepare(self, model: MetaModel) -> None:
        """Add algorithm-owned parameters to the model (MAML++'s learned rates); nothing for MAML."""

    def run_warnings(self) -> list[str]:
        """Warnings about this algorithm's settings for the run's console, ``summary.json`` and ``fit``'s
        warnings (MAML++: evaluating with more inner steps than it learned rates for); none for MAML."""
        return []

    def step_weights(self, step: int) -> Sequence[float] | None:
        """Multi-step loss weights (MAML++); ``None`` uses the final step only."""
        return None

    def first_order_at(self, step: int) -> bool | None:
        """Derivative order override at a meta-iteration (MAML++); ``None`` keeps the config's."""
        return None

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        """Meta learning-rate schedule (MAML++: cosine); ``None`` keeps it constant."""
        return None

    # --- training ------------------------------------------------------------------------------------------
    def task_losses(self, model: MetaModel, params: Mapping[str, Tensor], ep: Episode, loss_fn: LossFn, step: int,
                    batched: bool = False) -> tuple[Tensor, Tensor]:
        """Each task's meta-learner and co-learner query losses at a meta-iteration, before the meta-batch mean.

        MAML's: the inner loop on the support set, then the adapted model's query loss (MAML++'s step weights
        included) and, with CML, the unadapted co-learner's on the adapted features (DESIGN §1). Runs trained
        together (``--parallel-runs``) call this on their stacked tasks, so an algorithm whose objective is the
        mean of its task losses (plus :meth:`regulariser`) fuses.

        Args:
            model: The meta-model.
            params: Flat parameter dict; with ``batched``, a leading task dimension on every entry but ``lrs.*``
                (which may carry one too: one row of rates per task).
            ep: One episode, or (``batched``) a stacked batch of them.
            loss_fn: The domain's task loss.
            step: The meta-iteration (for schedules: MAML++'s annealing).
            batched: Whether ``ep`` and ``params`` carry a leading task dimension.

        Returns:
            ``(meta, co)``: scalars, or ``Tensor[T]`` when batched; ``co`` is zero without a co-learner term.
        """
        return _meta_and_co(model, params, ep, loss_fn, self.inner_config(step), cml=self.cml, batched=batched,
                            first_order=self.first_order_at(step), step_weights=self.step_weights(step))

    def objective(self, model: MetaModel, params: Mapping[str, Tensor], episodes: Sequence[Episode],
                  loss_fn: LossFn, step: int, batched: bool | None = None) -> OuterLoss:
        """The outer objective at a meta-iteration: the meta-batch mean of :meth:`task_losses` (for MAML, exactly
        :func:`~cmlgraph.core.objective.outer_objective`), plus :meth:`regulariser` on the meta-learner's term
        where the algorithm has one."""
        meta, co = mean_over_tasks(lambda p, ep, b: self.task_losses(model, p, ep, loss_fn, step, b), params,
                                   episodes, batched)
        return self._outer_loss(meta, co, self.regulariser(params, episodes))

    def _outer_loss(self, meta: Tensor, co: Tensor, reg: Tensor | None) -> OuterLoss:
        """The outer loss's parts from the task means: the regulariser (if any) on the meta-learner's term, and the
        total ``meta + γ·co`` with CML."""
        if reg is not None:
            meta = meta + reg
        return OuterLoss(meta=meta, co=co, total=meta + self.cfg.gamma * co if self.cml else meta)

    def regulariser(self, params: Mapping[str, Tensor], episodes: Sequence[Episode]) -> Tensor | None:
        """A term of the outer loss on the meta-parameters, added to the meta-learner's loss (AMM-GNN's); ``None``
        for MAML. A fused meta-step of several runs (``--parallel-runs``) adds each run's on its own parameters."""
        return None

    def gradient_point(self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor]
                       ) -> dict[str, Tensor] | None:
        """Where the meta-gradient is taken, given the objective's gradient ``grads`` at ``params``; ``None``
        (MAML): at ``params``. Sharp-MAML returns its SAM point, a function of ``params`` so that the gradient
        there flows back to them, and the meta-gradient is the objective's gradient at that point."""
        return None

    def kept_passes(self, step: int = 0) -> int:
        """Forward passes of a task a meta-step keeps for its backward (for :mod:`cmlgraph.core.memory`'s
        estimates): second order, every inner step's support pass and the query pass; first order, the query pass
        and the support pass in flight; MAML++'s per-step query losses add one pass an inner step, Sharp-MAML's
        inner perturbation (``sam_inner``) one more support pass an inner step."""
        inner = self.inner_config(step)
        first = self.first_order_at(step)
        first = inner.first_order if first is None else first
        per_step = 2 if inner.sam_rho > 0 else 1  # Sharp-MAML's inner perturbation: a second pass each step
        passes = 2 if first else inner.steps * per_step + 1
        return passes + (inner.steps if self.step_weights(step) is not None else 0)

    def meta_gradients(self, model: MetaModel, params: Mapping[str, Tensor], episodes: Sequence[Episode],
                       loss_fn: LossFn, step: int, *, diagnostics: bool = False,
                       batched: bool | None = None) -> MetaStep:
        """Meta-gradients of every trained parameter for one meta-batch (at :meth:`gradient_point`), with the
        noise control's noise added last; the returned loss is the objective at ``params``.

        A meta-batch whose tasks would hold more activations than the device's budget together (whole-graph GNN
        passes on a large graph: :func:`cmlgraph.core.memory.training_spans`) runs in task groups whose weighted
        gradients are summed (:meth:`objective_gradients`): the same meta-gradient up to float rounding.
        """
        device = next(iter(params.values())).device
        spans = training_spans(model.extractor, episodes, self.kept_passes(step), device)
        split = diagnostics and self.cml and self.cfg.gamma > 0
        grads, loss, diag = self.objective_gradients(model, params, params, episodes, loss_fn, step, batched,
                                                     split, spans)
        point = self.gradient_point(params, grads)
        if point is not None:
            grads, _, _ = self.objective_gradients(model, point, params, episodes, loss_fn, step, batched, False,
                                                   spans)
        if self.cfg.control == "noise":
            grads = add_gradient_noise(grads, self.cfg.noise_std, self.generator)
        return MetaStep(grads=grads, loss=loss, diagnostics=diag)

    def objective_gradients(self, model: MetaModel, at: Mapping[str, Tensor], wrt: Mapping[str, Tensor],
                            episodes: Sequence[Episode], loss_fn: LossFn, step: int, batched: bool | None,
                            split: bool = False, spans: Sequence[tuple[int, int]] | None = None
                            ) -> tuple[dict[str, Tensor], OuterLoss, dict[str, Any]]:
        """Gradients w.r.t. ``wrt`` of the objective at ``at`` (``at`` is ``wrt`` or a function of it), with the
        objective's parts and, with ``split``, the CML gradient diagnostics (task groups: :meth:`objective_parts`)."""
        parts, loss = self.objective_parts(model, at, wrt, episodes, loss_fn, step, batched, split, spans)
        if not split:
            return parts[0], loss, {}
        from cmlgraph.train.diagnostics import gradient_diagnostics
        g_meta, g_co = parts
        gamma = self.cfg.gamma
        return {k: g_meta[k] + gamma * g_co[k] for k in g_meta}, loss, gradient_diagnostics(g_meta, g_co)

    def objective_parts(self, model: MetaModel, at: Mapping[str, Tensor], wrt: Mapping[str, Tensor],
                        episodes: Sequence[Episode], loss_fn: LossFn, step: int, batched: bool | None,
                        split: bool = False, spans: Sequence[tuple[int, int]] | None = None
                        ) -> tuple[list[dict[str, Tensor]], OuterLoss]:
        """The objective's gradients w.r.t. ``wrt`` at ``at``: ``[total]``, or with ``split`` ``[meta, co]`` (the
        two terms' gradients, for CML's diagnostics), and the objective's parts.

        With ``spans`` of several task groups ``[a, b)``, each group's task means are weighted by its share of the
        meta-batch and differentiated on their own, so that only one group's activations are alive at a time
        (:func:`cmlgraph.core.memory.training_spans`); the regulariser joins the last group; gradients and losses
        are summed, and the returned losses are detached.
        """
        names = list(wrt)
        if spans is None or len(spans) < 2:
            loss = self.objective(model, at, episodes, loss_fn, step, batched)
            if split:
                return [gradients(loss.meta, wrt, retain=True), gradients(loss.co, wrt)], loss
            return [gradients(loss.total, wrt)], loss
        n = len(episodes)
        if batched is None:  # decided for the whole meta-batch, so that every group runs the same kernels
            batched = n > 1 and can_stack(list(episodes))
        sums: list[dict[str, Tensor]] | None = None
        losses = torch.zeros(3, device=next(iter(wrt.values())).device)
        for i, (a, b) in enumerate(spans):
            meta, co = mean_over_tasks(lambda p, ep, bt: self.task_losses(model, p, ep, loss_fn, step, bt), at,
                                       episodes[a:b], batched)
            last = i == len(spans) - 1  # the regulariser joins the last group
            part = self._outer_loss(meta * ((b - a) / n), co * ((b - a) / n),
                                    self.regulariser(at, episodes) if last else None)
            losses = losses + torch.stack([part.meta.detach(), part.co.detach(), part.total.detach()])
            # retain_graph: a gradient point (Sharp-MAML's) is shared by the groups; each group's own graph is
            # freed when its losses are dropped at the next group
            parts = ([gradients(part.meta, wrt, retain=True), gradients(part.co, wrt, retain=True)] if split
                     else [gradients(part.total, wrt, retain=True)])
            sums = parts if sums is None else [{k: s[k] + p[k] for k in names} for s, p in zip(sums, parts,
                                                                                                strict=True)]
            del meta, co, part, parts
        assert sums is not None
        return sums, OuterLoss(meta=losses[0], co=losses[1], total=losses[2])

    def run_summary(self, res: Mapping[str, Any]) -> dict[str, Any]:
        """Keys this algorithm adds to ``summary.json`` given the test result ``res``; none for MAML."""
        return {}

    # --- evaluation ----------------------------------------------------------------------------------------
    def predict(self, model: MetaModel, params: Mapping[str, Tensor], ep: Episode, loss_fn: LossFn,
                batched: bool = False, task_params: bool = False) -> tuple[Tensor, Tensor | None]:
        """Adapt on the support set and predict the query set: ``(meta-learner, co-learner on ψ')``.

        The second output is the "CML†" predictor (the frozen co-learner on the adapted features), ``None``
        without a co-learner. Runs first-order without a graph to the meta-parameters. With ``batched``, ``ep``
        is a stacked batch of episodes (leading task dimension) adapted together with ``vmap``; with
        ``task_params`` too, ``params`` already carry that task dimension (each task its own run's parameters:
        several runs' validations in one pass, :func:`cmlgraph.train.evaluate.evaluate_runs`; no learned rates).
        """
        if task_params and (not batched or any(group_of(k) == "lrs" for k in params)):
            raise ValueError("task_params needs batched episodes and parameters without learned rates (lrs.*)")
        body = {k: v.detach() for k, v in params.items() if group_of(k) != "lrs"}
        if batched and not task_params:
            batch = ep.support_y.shape[0]
            body = {k: v.unsqueeze(0).expand(batch, *v.shape) for k, v in body.items()}
        body = {k: v.requires_grad_(True) if not batched else v.clone().requires_grad_(True)
                for k, v in body.items()}
        rates = {k: v.detach() for k, v in sub(params, "lrs").items()} or None
        cfg = replace(self.inner_config(evaluation=True), first_order=True)
        with torch.enable_grad():
            fast = inner_loop(model, body, ep.support_x, ep.support_y, loss_fn, cfg, rates=rates,
                              batched=batched)[-1]
        with torch.no_grad():
            feats = features(model, fast, ep.query_x, batched)
            out = head(model, fast, feats, batched)
            co = co_head(model, fast, feats, batched) if model.co is not None else None
        return out, co


def gradients(loss: Tensor, params: Mapping[str, Tensor], retain: bool = False) -> dict[str, Tensor]:
    """``d loss / d params`` per name; zeros for a parameter the loss does not reach (``retain``: keep the
    graph)."""
    names = list(params)
    raw = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True, retain_graph=retain)
    return {k: (g if g is not None else torch.zeros_like(params[k])) for k, g in zip(names, raw, strict=True)}


def add_gradient_noise(grads: Mapping[str, Tensor], noise_std: float, generator: torch.Generator
                       ) -> dict[str, Tensor]:
    """The MAML + noise control: add N(0, σ_t²) to each meta-gradient of ψ and θ.

    σ_t = ``noise_std`` · ‖g_t‖ / √numel(g_t), i.e. ``noise_std`` times the root-mean-square of that tensor's
    gradient, so the perturbation has the same relative size at every layer and every point of training.
    Co-learner and learned-rate gradients are left alone.
    """
    out = dict(grads)
    for k, g in grads.items():
        if group_of(k) not in ("extractor", "head"):
            continue
        sigma = noise_std * g.norm() / math.sqrt(max(1, g.numel()))
        # drawn on the host (the run's CPU generator: the same noise on any device), sent pinned and non_blocking:
        # a plain .to("cuda") from pageable memory would synchronise the stream once per tensor and step
        z = to_device(torch.randn(g.shape, generator=generator, dtype=g.dtype), g.device)
        out[k] = g + sigma * z
    return out
