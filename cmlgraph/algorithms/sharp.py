"""Sharp-MAML (Abbas et al., ICML 2022): a sharpness-aware (SAM) outer step, optionally also in the inner loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
from torch import Tensor

from cmlgraph.algorithms.base import MetaAlgorithm, MetaStep
from cmlgraph.core.episode import Episode
from cmlgraph.core.functional import LossFn
from cmlgraph.core.inner_loop import InnerLoopConfig


def sam_perturbation(grads: Mapping[str, Tensor], rho: float) -> dict[str, Tensor]:
    """ε = ρ · g / ‖g‖ with the global norm over all tensors (constant: detached)."""
    norm = torch.sqrt(sum(g.detach().pow(2).sum() for g in grads.values())).clamp_min(1e-12)
    return {k: rho * g.detach() / norm for k, g in grads.items()}


class SharpMAML(MetaAlgorithm):
    """MAML whose meta-gradient is taken at the SAM-perturbed point w + ρ g/‖g‖ and applied at w."""

    name = "sharp-maml"

    def inner_config(self, step: int = 0, evaluation: bool = False) -> InnerLoopConfig:
        """MAML's inner loop, with the perturbation inside each inner step when ``sam_inner`` is set."""
        cfg = super().inner_config(step, evaluation)
        return replace(cfg, sam_rho=self.cfg.sam_rho if self.cfg.sam_inner and not evaluation else 0.0)

    def meta_gradients(self, model, params: Mapping[str, Tensor], episodes: Sequence[Episode],
                       loss_fn: LossFn, step: int, *, diagnostics: bool = False,
                       batched: bool | None = None) -> MetaStep:
        """Two passes: gradient g at w, then the gradient at w + ε(g), returned as the meta-gradient at w."""
        first = super().meta_gradients(model, params, episodes, loss_fn, step, diagnostics=diagnostics,
                                       batched=batched)
        eps = sam_perturbation(first.grads, self.cfg.sam_rho)
        perturbed = {k: v + eps[k] for k, v in params.items()}
        loss = self.objective(model, perturbed, episodes, loss_fn, step, batched)
        names = list(params)
        raw = torch.autograd.grad(loss.total, [params[k] for k in names], allow_unused=True)
        grads = {k: (g if g is not None else torch.zeros_like(params[k])) for k, g in zip(names, raw, strict=True)}
        return MetaStep(grads=grads, loss=first.loss, diagnostics=first.diagnostics)
