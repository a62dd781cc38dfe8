"""Prototypical Networks (Snell et al., 2017): the metric-learning baseline, no inner loop.

With CML on, the co-learner reads the query features of the (never adapted) extractor and adds its
cross-entropy term, so the switch means the same thing as for the MAML family.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from cmlgraph.algorithms.base import MetaAlgorithm
from cmlgraph.core.episode import Episode
from cmlgraph.core.functional import LossFn, co_head, features, task_loss
from cmlgraph.core.model import MetaModel
from cmlgraph.core.objective import expand_tasks


def prototype_logits(support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
    """Negative squared Euclidean distances from query features to class prototypes (class-mean features).

    Args:
        support: Support features ``[Ns, ...]``, or ``[T, Ns, ...]`` for T tasks at once.
        support_y: Support labels ``[Ns]`` (``[T, Ns]``) in ``0..ways-1``.
        query: Query features ``[Nq, ...]`` (``[T, Nq, ...]``).
        ways: Classes per task.

    Returns:
        Logits ``[Nq, ways]`` (``[T, Nq, ways]``); a class without support rows has the zero vector as prototype.
    """
    lead = support_y.dim()  # 1: one task; 2: a leading task dimension
    support, query = support.flatten(lead), query.flatten(lead)
    onehot = F.one_hot(support_y, ways).to(support.dtype)
    protos = onehot.transpose(-1, -2) @ support / onehot.sum(-2).clamp_min(1).unsqueeze(-1)
    return -torch.cdist(query, protos).pow(2)


class ProtoNet(MetaAlgorithm):
    """ProtoNet: classify queries by the nearest class prototype in feature space."""

    name = "protonet"
    uses_inner_loop = False
    #: :meth:`predict` takes a stacked batch of episodes (evaluation runs a chunk of tasks per launch).
    predicts_batched = True

    def task_losses(self, model: MetaModel, params: Mapping[str, Tensor], ep: Episode, loss_fn: LossFn, step: int,
                    batched: bool = False) -> tuple[Tensor, Tensor]:
        """Each task's prototype cross-entropy on its queries, and with CML the co-learner's query loss on the
        same (never adapted) features; ``Tensor[T]`` each when ``batched``."""
        fs = features(model, params, ep.support_x, batched)
        fq = features(model, params, ep.query_x, batched)
        logits = prototype_logits(fs, ep.support_y, fq, model.out_dim)
        meta = task_loss(F.cross_entropy, logits, ep.query_y, batched)
        co = (task_loss(loss_fn, co_head(model, params, fq, batched), ep.query_y, batched) if self.cml
              else torch.zeros_like(meta))
        return meta, co

    def predict(self, model: MetaModel, params: Mapping[str, Tensor], ep: Episode, loss_fn: LossFn,
                batched: bool = False) -> tuple[Tensor, Tensor | None]:
        """Prototype logits for the query set (and the co-learner's logits with CML); with ``batched``, ``ep`` is
        a stacked batch of episodes and both outputs carry a leading task dimension."""
        with torch.no_grad():
            if batched:
                params = expand_tasks(params, int(ep.support_y.shape[0]))
            fs = features(model, params, ep.support_x, batched)
            fq = features(model, params, ep.query_x, batched)
            co = co_head(model, params, fq, batched) if model.co is not None else None
            return prototype_logits(fs, ep.support_y, fq, model.out_dim), co
