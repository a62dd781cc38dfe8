"""Sharp-MAML (Abbas et al., ICML 2022): a sharpness-aware (SAM) outer step, optionally also in the inner loop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor

from cmlgraph.algorithms.base import MetaAlgorithm
from cmlgraph.core.inner_loop import InnerLoopConfig


def sam_perturbation(grads: Mapping[str, Tensor], rho: float) -> dict[str, Tensor]:
    """ε = ρ · g / ‖g‖ with the global norm over all tensors (constant: detached)."""
    norm = torch.sqrt(sum(g.detach().pow(2).sum() for g in grads.values())).clamp_min(1e-12)
    return {k: rho * g.detach() / norm for k, g in grads.items()}


class SharpMAML(MetaAlgorithm):
    """MAML whose meta-gradient is taken at the SAM-perturbed point w + ρ g/‖g‖ and applied at w.

    Two passes of the objective per meta-step (:meth:`MetaAlgorithm.meta_gradients`); the noise control's noise
    goes on the returned meta-gradient, not on the gradient that sets the perturbation.
    """

    name = "sharp-maml"

    def inner_config(self, step: int = 0, evaluation: bool = False) -> InnerLoopConfig:
        """MAML's inner loop, with the perturbation inside each inner step when ``sam_inner`` is set."""
        cfg = super().inner_config(step, evaluation)
        return replace(cfg, sam_rho=self.cfg.sam_rho if self.cfg.sam_inner and not evaluation else 0.0)

    def gradient_point(self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The SAM point w + ε(g), ε = ρ g/‖g‖ (Abbas et al., 2022, Alg. 1): the meta-gradient is the objective's
        gradient there, applied at w (ε is a constant: the gradient flows back to w unchanged)."""
        eps = sam_perturbation(grads, self.cfg.sam_rho)
        return {k: v + eps[k] for k, v in params.items()}
