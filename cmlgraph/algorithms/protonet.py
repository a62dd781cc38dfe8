"""Prototypical Networks (Snell et al., 2017): the metric-learning baseline, no inner loop.

With CML on, the co-learner reads the query features of the (never adapted) extractor and adds its
cross-entropy term, so the switch means the same thing as for the MAML family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cmlgraph.algorithms.base import MetaAlgorithm
from cmlgraph.core.episode import Episode
from cmlgraph.core.functional import LossFn, co_head, features
from cmlgraph.core.model import MetaModel
from cmlgraph.core.objective import OuterLoss


def prototype_logits(support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
    """Negative squared Euclidean distances from query features to class prototypes (class-mean features)."""
    support, query = support.flatten(1), query.flatten(1)
    onehot = F.one_hot(support_y, ways).to(support.dtype)
    protos = onehot.t() @ support / onehot.sum(0).clamp_min(1).unsqueeze(1)
    return -torch.cdist(query, protos).pow(2)


class ProtoNet(MetaAlgorithm):
    """ProtoNet: classify queries by the nearest class prototype in feature space."""

    name = "protonet"
    uses_inner_loop = False

    def objective(self, model: MetaModel, params: Mapping[str, Tensor], episodes: Sequence[Episode],
                  loss_fn: LossFn, step: int, batched: bool | None = None) -> OuterLoss:
        """Mean prototype cross-entropy over the meta-batch, plus γ · the co-learner's query loss with CML."""
        metas, cos = [], []
        for ep in episodes:
            fs = features(model, params, ep.support_x)
            fq = features(model, params, ep.query_x)
            metas.append(F.cross_entropy(prototype_logits(fs, ep.support_y, fq, model.out_dim), ep.query_y))
            if self.cml:
                cos.append(loss_fn(co_head(model, params, fq), ep.query_y))
        meta = torch.stack(metas).mean()
        co = torch.stack(cos).mean() if cos else torch.zeros_like(meta)
        return OuterLoss(meta=meta, co=co, total=meta + self.cfg.gamma * co if self.cml else meta)

    def predict(self, model: MetaModel, params: Mapping[str, Tensor], ep: Episode, loss_fn: LossFn,
                batched: bool = False) -> tuple[Tensor, Tensor | None]:
        """Prototype logits for the query set (and the co-learner's logits with CML)."""
        if batched:
            raise ValueError("ProtoNet predicts one episode at a time (batched=False)")
        with torch.no_grad():
            fs = features(model, params, ep.support_x)
            fq = features(model, params, ep.query_x)
            co = co_head(model, params, fq) if model.co is not None else None
            return prototype_logits(fs, ep.support_y, fq, model.out_dim), co
