"""The CML paper's graph base methods (Table 3): G-Meta and AMM-GNN as TLP codes them, on the shared inner loop.

Both are MAML on every encoder and head tensor (TLP: 20 plain SGD steps, first order; set ``first_order`` and the
steps in the config, ``configs/paper/table3-*.yaml``); what differs is the encoder, which the graph domain builds
from ``algo.algo`` (:class:`~cmlgraph.backbones.gmeta.BallGCN`, :class:`~cmlgraph.backbones.ammgnn.MatchedGCN`).
CML, γ, the co-learner's depth and width and the paper's controls compose with both exactly as with MAML.

AMM-GNN adds two things to MAML: its attribute-matching weights α, β never adapt in the inner loop (the loop's
``frozen`` prefixes), and the outer loss carries the regulariser ``−0.01·[cos(α₁, α₂) + cos(β₁, β₂)]`` of each task,
added to the meta-learner's term (so γ = 0 still equals AMM-GNN without CML).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from torch import Tensor

from cmlgraph.algorithms.base import MetaAlgorithm
from cmlgraph.core.episode import Episode
from cmlgraph.core.inner_loop import InnerLoopConfig
from cmlgraph.core.model import sub


class GMeta(MetaAlgorithm):
    """G-Meta (TLP's variant: linear head, ball-mean readout; see :mod:`cmlgraph.backbones.gmeta`)."""

    name = "gmeta"


class AMMGNN(MetaAlgorithm):
    """AMM-GNN (TLP's variant; see :mod:`cmlgraph.backbones.ammgnn`): α/β frozen inside a task, regularised outside."""

    name = "ammgnn"
    frozen = ("extractor.match_alpha.", "extractor.match_beta.")

    def inner_config(self, step: int = 0, evaluation: bool = False) -> InnerLoopConfig:
        """MAML's inner loop with α and β excluded from adaptation."""
        return replace(super().inner_config(step, evaluation), frozen=self.frozen)

    def regulariser(self, params: Mapping[str, Tensor], episodes: Sequence[Episode]) -> Tensor:
        """The mean attribute-matching regulariser of the meta-batch's tasks, added to MAML's (CML) objective."""
        from cmlgraph.backbones.ammgnn import match_regulariser_tasks

        return match_regulariser_tasks(sub(params, "extractor"), [ep.query_x for ep in episodes]).mean()


__all__ = ["AMMGNN", "GMeta"]
