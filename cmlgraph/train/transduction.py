"""Is a model transductive? Predict each query in its query set and alone, and count what changes.

Why: with batch-statistics BatchNorm (MAML's Conv4, :mod:`cmlgraph.backbones.conv_norm`) a query's prediction
depends on the other queries of its task, so the test accuracy depends on how many queries are scored together
(cf. github.com/facebookresearch/higher issue #107). This module measures it on a run's fixed test tasks: the
accuracy with the whole query set in one batch (how ``cmlgraph train`` evaluates) and with one query at a time
(how a deployed model meets a new image), and how many predictions differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cmlgraph.algorithms.base import MetaAlgorithm
from cmlgraph.core.episode import Episode
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.domains.base import Domain


def select_queries(x: Any, index: slice) -> Any:
    """Some of an episode's query inputs (a tensor, or an input type with ``select``, e.g. queries with their
    support set), keeping whatever they carry."""
    return x[index] if isinstance(x, Tensor) else x.select(index)


def predictions_in_batch_and_alone(algo: MetaAlgorithm, model: MetaModel, params: Mapping[str, Tensor],
                                   ep: Episode, loss_fn: Any) -> tuple[Tensor, Tensor]:
    """The meta-learner's logits of every query: ``(all queries in one batch, each query alone)``.

    Each single-query prediction adapts on the same support set, so only the other queries differ.
    """
    together, _ = algo.predict(model, params, ep, loss_fn)
    alone = [algo.predict(model, params, Episode(ep.support_x, ep.support_y, select_queries(ep.query_x,
                                                                                           slice(i, i + 1)),
                                                 ep.query_y[i:i + 1]), loss_fn)[0]
             for i in range(len(ep.query_y))]
    return together, torch.cat(alone)


def transduction_report(algo: MetaAlgorithm, model: MetaModel, params: Mapping[str, Tensor], domain: Domain,
                        raws: Sequence[Any], device: torch.device | str = "cpu") -> dict[str, Any]:
    """Accuracy in batch and one query at a time on fixed episodes, and how many predictions change.

    Returns:
        ``in_batch`` and ``one_at_a_time`` (mean accuracy over tasks), ``changed`` (query predictions whose class
        differs), ``predictions`` (all query predictions), ``max_abs_logit_diff`` and ``num_tasks``.
    """
    was_training = model.training
    model.eval()
    batch_scores, alone_scores = [], []
    changed = total = 0
    max_diff = 0.0
    try:
        for raw in raws:
            ep = domain.materialize(raw, device)
            together, alone = predictions_in_batch_and_alone(algo, model, params, ep, domain.loss_fn)
            batch_scores.append(domain.score(together, ep.query_y))
            alone_scores.append(domain.score(alone, ep.query_y))
            changed += int((together.argmax(-1) != alone.argmax(-1)).sum())
            total += len(ep.query_y)
            max_diff = max(max_diff, float((together - alone).abs().max()))
    finally:
        model.train(was_training)
    n = len(batch_scores)
    return {"in_batch": sum(batch_scores) / n, "one_at_a_time": sum(alone_scores) / n, "changed": changed,
            "predictions": total, "max_abs_logit_diff": max_diff, "num_tasks": n}


def run_transduction_report(run_dir: str | Path, tasks: int | None = None) -> dict[str, Any]:
    """:func:`transduction_report` of a finished run folder's saved model on its saved test tasks (the first
    ``tasks`` of them when given)."""
    from cmlgraph.train.reeval import load_inference_model

    (cfg, algo, domain), model, state = load_inference_model(run_dir)
    raws = domain.from_state(state)[:tasks]
    report = transduction_report(algo, model, parameters_of(model), domain, raws, cfg.train.device)
    return {"run": str(run_dir), "norm": getattr(domain, "norm", None), **report}


__all__ = ["predictions_in_batch_and_alone", "run_transduction_report", "select_queries", "transduction_report"]
