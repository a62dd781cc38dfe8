"""MAML++ (Antoniou et al., ICLR 2019): multi-step loss, learned per-layer per-step inner rates,
derivative-order annealing and a cosine-annealed meta learning rate.

Per-step batch-norm statistics are not used: every backbone here normalises with batch statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cmlgraph.algorithms.base import MetaAlgorithm
from cmlgraph.core.model import MetaModel, group_of


def msl_weights(step: int, inner_steps: int, anneal_steps: int) -> list[float]:
    """Multi-step loss weights at a meta-iteration, as in the authors' code (``get_per_step_loss_importance``).

    Weights start uniform (1/S) and the non-final ones decay linearly to 0.03/S over ``anneal_steps``
    meta-iterations while the final one grows to ``1 − (S−1)·0.03/S``.
    """
    s = inner_steps
    decay = 1.0 / s / max(1, anneal_steps)
    floor = 0.03 / s
    w = [max(1.0 / s - step * decay, floor) for _ in range(s - 1)]
    w.append(min(1.0 / s + step * (s - 1) * decay, 1.0 - (s - 1) * floor))
    return w


class MAMLPlusPlus(MetaAlgorithm):
    """MAML++ on the shared inner loop; the learned rates live in the model's ``lrs`` group."""

    name = "maml++"

    def prepare(self, model: MetaModel) -> None:
        """Add one learnable rate per adapted tensor and inner step, initialised to ``inner_lr``."""
        adapt = set(self.adapt_groups())
        names = [k for k, _ in model.named_parameters() if group_of(k) in adapt]
        model.add_learned_rates(names, int(self.cfg.inner_steps), float(self.cfg.inner_lr))

    def run_warnings(self) -> list[str]:
        """A warning when evaluation takes more inner steps than training learned rates for.

        Why: the inner loop uses step ``min(s, S-1)``'s rate beyond the ``S = inner_steps`` learned ones, so the
        extra evaluation steps silently reuse the last learned rate, which was never trained for them
        (issue 19 item 8).
        """
        train, evaluate = int(self.cfg.inner_steps), int(self.cfg.eval_inner_steps or self.cfg.inner_steps)
        if evaluate <= train:
            return []
        extra = f"step {train + 1}" if evaluate == train + 1 else f"steps {train + 1}-{evaluate}"
        return [f"MAML++ learned its per-step inner rates for {train} inner step(s) (algo.inner_steps) but "
                f"evaluates with {evaluate} (algo.eval_inner_steps): {extra} reuse step {train}'s learned rate, "
                f"which was never trained for them; set algo.eval_inner_steps <= {train}, or train with "
                f"algo.inner_steps = {evaluate}"]

    def _anneal_steps(self) -> int:
        return max(1, int(self.cfg.msl_fraction * self.total_steps))

    def step_weights(self, step: int) -> Sequence[float] | None:
        """Multi-step loss weights while annealing; the final step only afterwards."""
        if int(self.cfg.inner_steps) < 2 or step >= self._anneal_steps():
            return None
        return msl_weights(step, int(self.cfg.inner_steps), self._anneal_steps())

    def first_order_at(self, step: int) -> bool | None:
        """First order during the first ``first_order_fraction`` of training, then the config's order."""
        if step < int(self.cfg.first_order_fraction * self.total_steps):
            return True
        return None

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """Cosine annealing of the meta learning rate down to 1% of its initial value."""
        base = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.total_steps, eta_min=base * 0.01)
