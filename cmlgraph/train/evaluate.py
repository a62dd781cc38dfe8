"""Evaluation on fixed tasks: adapt on each support set, score the query set, report mean ± 95% CI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from itertools import groupby
from typing import Any

import torch
from torch import Tensor

from cmlgraph.algorithms.base import MetaAlgorithm
from cmlgraph.backbones.base import auto_batched
from cmlgraph.core.episode import can_stack, stack
from cmlgraph.core.memory import EVAL_BYTES_PER_VALUE, memory_budget, task_values
from cmlgraph.core.model import MetaModel
from cmlgraph.core.streams import group_tasks
from cmlgraph.domains.base import Domain
from cmlgraph.train.eval_chunks import EpisodeChunks, input_budget
from cmlgraph.train.guards import finite_rows, score_tasks
from cmlgraph.train.prefetch import Prefetcher
from cmlgraph.train.stats import mean_ci95

#: Default most tasks of one evaluation launch, per device type (:func:`evaluate`'s ``batch_size``).
EVAL_CHUNK = {"cuda": 500, "cpu": 100}


def eval_chunk(device: torch.device | str) -> int:
    """How many fixed tasks :func:`evaluate` adapts together by default on ``device``: on a GPU every launch of
    few-shot work is latency-bound, so the whole 500-task test set goes in one; on the CPU the work per task is
    the same either way and 100 keeps the prefetch worker's chunks small."""
    return EVAL_CHUNK.get(torch.device(device).type, EVAL_CHUNK["cpu"])


def eval_values(device: torch.device | str) -> int:
    """Most activation values one evaluation pass computes over its chunk of tasks (:meth:`Backbone.pass_values`
    per task): the device's :func:`~cmlgraph.core.memory.memory_budget` at
    :data:`~cmlgraph.core.memory.EVAL_BYTES_PER_VALUE` bytes a value: 2**27 on the CPU (whole-graph GAT on
    Amazon-Photo, about 33M values a task, evaluated 100 tasks at once and was killed for memory on a 24 GB machine;
    capped, its chunks hold 4 tasks), a 128th of a GPU's memory (in values) on a GPU."""
    return memory_budget(device) // EVAL_BYTES_PER_VALUE


def fit_activations(model: MetaModel, eps: list[Any], device: torch.device | str) -> list[list[Any]]:
    """``eps`` split into consecutive chunks whose tasks' passes compute at most :func:`eval_values` activation
    values together (each task counted by its own larger pass, support or query: :meth:`Backbone.pass_values`;
    k-hop subgraphs differ in size), a task heavier than the cap alone; one chunk where the backbone does not
    say."""
    if len(eps) < 2:
        return [eps]
    per_task = []
    for ep in eps:
        values = task_values(model.extractor, ep)
        if values is None:
            return [eps]
        per_task.append(values)
    return [eps[a:b] for a, b in group_tasks(per_task, eval_values(device))]


def evaluate(
    algo: MetaAlgorithm,
    model: MetaModel,
    params: Mapping[str, Tensor],
    domain: Domain,
    raws: Sequence[Any],
    device: torch.device | str = "cpu",
    progress: Any = None,
    batch_size: int | None = None,
    prefetch: bool = False,
) -> dict[str, Any]:
    """Score the meta-learner (and, with a co-learner, the CML† predictor) on fixed episodes.

    Args:
        algo: The algorithm (its inner loop adapts on each support set).
        model: The meta-model.
        params: The parameters to evaluate (e.g. the best-validation ones).
        domain: Supplies episodes, loss and metric.
        raws: Raw fixed episodes.
        device: Device of the run.
        progress: Optional callable invoked once per episode (progress bars).
        batch_size: Most episodes adapted together (vmap, or a graph batch) when they stack; fewer for large
            models (about 8M weight values per chunk), and one by one where ``train.batched: auto`` means so.
            Default :func:`eval_chunk` of the device: 500 on a GPU (a 500-task test set in one launch where the
            weight cap allows: issue 18), 100 on the CPU.
        prefetch: Materialize the next chunk of episodes (k-hop plans included) in a worker thread while the
            current one is adapted (:class:`cmlgraph.train.prefetch.Prefetcher`); same results.

    Returns:
        ``mean``, ``ci95``, ``num_tasks``, ``scores``, ``nonfinite_tasks`` (tasks with NaN/inf predictions,
        scored as wrong, or inf for MSE), ``queries`` (query count); for an algorithm that ``abstains``
        (label-prop: a NaN row is a query it cannot answer, scored as wrong) ``abstained_queries`` and
        ``abstained_tasks`` instead of non-finite tasks; plus ``dagger_mean``/``dagger_ci95`` with a co-learner, and for
        classification ``dagger_one_class_tasks``: tasks where the co-learner's output names one class for every
        query (a collapsed co-learner: its score there is chance by construction).
    """
    if batch_size is None:
        batch_size = eval_chunk(device)
    was_training = model.training
    model.eval()
    tally = Tally(domain.metric, bool(getattr(algo, "abstains", False)))
    exits = ExitStack()
    try:
        # Episodes adapted together hold one copy of the weights each: cap a chunk at ~8M values per copy.
        n_params = sum(v.numel() for v in params.values())
        many = getattr(algo, "predict_tasks", None)  # training-free methods: a chunk's tasks in one solve
        chunk = (max(1, min(batch_size, int(8e6 // max(n_params, 1))))
                 if algo.uses_inner_loop or getattr(algo, "predicts_batched", False)
                 else batch_size if many is not None else 1)
        together = auto_batched(model.extractor, device) is None
        # chunks also end where their episodes' own tensors fill the input budget (GAT's k-hop subgraphs)
        chunks = EpisodeChunks(raws, chunk, lambda raw: domain.materialize(raw, device), input_budget(device))

        def materialize(_: Any) -> list[Any]:
            eps = chunks()[1]  # StopIteration: the last chunk
            if hasattr(domain, "prepare_batch"):  # layouts built here, off the step (issue 18); duck-typed domains
                domain.prepare_batch(eps, None if together else False)
            return eps

        batches = exits.enter_context(Prefetcher(materialize, depth=1, enabled=prefetch, name="cmlgraph-eval"))
        for eps in batches:
            if many is not None:
                tally.add_pairs([(out, None, ep.query_y) for out, ep in zip(many(model, eps), eps, strict=True)])
            elif together and len(eps) > 1 and can_stack(eps):
                for part in fit_activations(model, eps, device):  # large graphs: fewer tasks a pass
                    ep = stack(part)
                    out, co = algo.predict(model, params, ep, domain.loss_fn, batched=True)
                    tally.add_tasks(out, co, ep.query_y)  # stacked already: scored as they are
            else:
                tally.add_pairs([(*algo.predict(model, params, ep, domain.loss_fn), ep.query_y) for ep in eps])
            if progress is not None:
                for _ in eps:
                    progress()
    finally:
        exits.close()  # stops the prefetch worker, also on an error
        model.train(was_training)
    return tally.result()


class Tally:
    """The scores of one run's evaluation tasks, added one task at a time (:func:`evaluate`'s result).

    Args:
        metric: The domain's metric (``accuracy`` or ``mse``).
        abstains: The algorithm abstains on queries it cannot answer (label-prop: NaN rows are counted apart).
    """

    def __init__(self, metric: str, abstains: bool) -> None:
        self.metric, self.abstains = metric, abstains
        self.scores: list[float] = []
        self.dagger: list[float] = []
        self.one_class = self.nonfinite = self.abstained = self.abstained_tasks = self.queries = 0

    def add(self, out: Tensor, co: Tensor | None, y: Tensor) -> None:
        """One task's meta-learner predictions ``out``, co-learner predictions ``co`` (or ``None``), targets ``y``."""
        self.add_tasks(out.unsqueeze(0), None if co is None else co.unsqueeze(0), y.unsqueeze(0))

    def add_tasks(self, out: Tensor, co: Tensor | None, y: Tensor) -> None:
        """``T`` tasks' predictions at once (``[T, q, ...]``, as :meth:`add` takes one), scored on their device and
        read back in one transfer (one sync on a GPU for the whole chunk, not several a task: issue 18)."""
        scores, finite = score_tasks(self.metric, out, y)  # NaN logits are never answers
        parts = [scores.double(), finite.double()]
        if self.abstains:  # unanswered queries (NaN rows) per task
            parts.append((~finite_rows(out)).flatten(1).sum(dim=1).double() if out.dim() > 2
                         else torch.zeros_like(parts[0]))
        if co is not None:
            parts.append(score_tasks(self.metric, co, y)[0].double())
            if self.metric == "accuracy" and co.dim() == 3 and co.shape[1] > 1:
                top = co.argmax(-1)
                parts.append((top == top[:, :1]).all(dim=1).double())
        values = torch.stack(parts).tolist()  # the chunk's one read-back
        scores_h, finite_h = values[0], [bool(f) for f in values[1]]
        self.scores += scores_h
        self.queries += len(scores_h) * (int(y.shape[1]) if y.dim() > 1 else 1)
        rest = iter(values[2:])
        if self.abstains:
            missing = next(rest)
            for ok, m in zip(finite_h, missing, strict=True):
                if not ok:  # unanswered queries: wrong, counted, not "diverged"
                    self.abstained += int(m)
                    self.abstained_tasks += 1
        else:
            self.nonfinite += finite_h.count(False)
        if co is not None:
            self.dagger += next(rest)
            one_class = next(rest, None)
            if one_class is not None:
                self.one_class += int(sum(one_class))

    def add_pairs(self, pairs: Sequence[tuple[Tensor, Tensor | None, Tensor]]) -> None:
        """Tasks as ``(out, co, y)`` triples: stacked and scored at once where their shapes agree (one read-back),
        else one by one."""
        if not pairs:
            return
        out0, co0, y0 = pairs[0]
        if len(pairs) > 1 and all(o.shape == out0.shape and y.shape == y0.shape and (c is None) == (co0 is None)
                                  and (c is None or c.shape == co0.shape) for o, c, y in pairs):
            self.add_tasks(torch.stack([o for o, _, _ in pairs]),
                           None if co0 is None else torch.stack([c for _, c, _ in pairs]),
                           torch.stack([y for _, _, y in pairs]))
            return
        for out, co, y in pairs:
            self.add(out, co, y)

    def result(self) -> dict[str, Any]:
        """The evaluation's summary (see :func:`evaluate`'s Returns)."""
        mean, ci = mean_ci95(self.scores)
        result: dict[str, Any] = {"mean": mean, "ci95": ci, "num_tasks": len(self.scores), "scores": self.scores,
                                  "nonfinite_tasks": self.nonfinite, "queries": self.queries}
        if self.abstains:
            result["abstained_queries"], result["abstained_tasks"] = self.abstained, self.abstained_tasks
        if self.dagger:
            result["dagger_mean"], result["dagger_ci95"] = mean_ci95(self.dagger)
            if self.metric == "accuracy":
                result["dagger_one_class_tasks"] = self.one_class
        return result


def runs_fusable(algo: MetaAlgorithm, model: MetaModel, params: Sequence[Mapping[str, Tensor]],
                 device: torch.device | str) -> bool:
    """Whether several runs' evaluations can run as one (:func:`evaluate_runs`): the shared MAML-family
    ``predict`` (not ProtoNet's, not a training-free method's), tasks batched on this device, parameters of one
    shape and no learned inner rates (MAML++)."""
    if type(algo).predict is not MetaAlgorithm.predict or not algo.uses_inner_loop:
        return False
    if auto_batched(model.extractor, device) is not None or len(params) < 2:
        return False
    first = params[0]
    return all(p.keys() == first.keys() and all(p[k].shape == first[k].shape for k in first) for p in params) \
        and not any(k.startswith("lrs.") for k in first)


def evaluate_runs(algo: MetaAlgorithm, model: MetaModel, runs: Sequence[tuple[Mapping[str, Tensor], Domain,
                                                                               Sequence[Any]]],
                  device: torch.device | str = "cpu", batch_size: int | None = None, prefetch: bool = False
                  ) -> list[dict[str, Any]] | None:
    """Several runs' evaluations as one (issue 18 item 5): every run's fixed tasks in chunks of one stacked batch,
    each task adapted from its own run's parameters (``predict(task_params=True)``), then scored per run.

    Same results as :func:`evaluate` on each run alone, up to float rounding (``tests/train/test_parallel_runs.py``
    compares whole runs; ``tests/train/test_evaluate_runs.py`` the scores). Runs of one shape only
    (:func:`runs_fusable`, checked by the caller); ``None`` when a chunk's episodes do not stack (another graph:
    the caller evaluates each run alone).

    Args:
        algo: The runs' algorithm (any one run's: they share the method and shape).
        model: A meta-model of the runs' shape (its modules run with each task's parameters).
        runs: Per run, ``(parameters, domain, raw fixed episodes)``.
        device: The runs' device.
        batch_size: Most tasks per chunk (default :func:`eval_chunk`), capped at about 8M weight values a chunk.
        prefetch: Materialize the next chunk in a worker thread while the current one is adapted (as
            :func:`evaluate`); same results.

    Returns:
        One :func:`evaluate` result per run, in order; or ``None``.
    """
    if batch_size is None:
        batch_size = eval_chunk(device)
    n_params = sum(v.numel() for v in runs[0][0].values())
    chunk = max(1, min(batch_size, int(8e6 // max(n_params, 1))))
    tasks = [(r, raw) for r, (_, _, raws) in enumerate(runs) for raw in raws]
    tallies = [Tally(domain.metric, bool(getattr(algo, "abstains", False))) for _, domain, _ in runs]
    parts = EpisodeChunks(tasks, chunk, lambda task: runs[task[0]][1].materialize(task[1], device),
                          input_budget(device))  # (as evaluate's chunks)

    def materialize(_: Any) -> tuple[list[tuple[int, Any]], list[Any]]:
        part, eps = parts()  # StopIteration: the last chunk
        domain = runs[part[0][0]][1]
        if hasattr(domain, "prepare_batch") and (len(eps) == 1 or can_stack(eps)):  # layouts built ahead
            domain.prepare_batch(eps, None)
        return part, eps

    was_training = model.training
    model.eval()
    exits = ExitStack()
    try:
        for part, eps in exits.enter_context(Prefetcher(materialize, depth=1, enabled=prefetch,
                                                        name="cmlgraph-eval-runs")):
            if len(eps) > 1 and not can_stack(eps):
                return None
            domain = runs[part[0][0]][1]
            start = 0
            for sub in fit_activations(model, eps, device):  # large graphs: fewer tasks a pass
                owners = [r for r, _ in part[start:start + len(sub)]]
                start += len(sub)
                params = {k: torch.stack([runs[r][0][k].detach() for r in owners]) for k in runs[0][0]}
                ep = stack(sub)
                out, co = algo.predict(model, params, ep, domain.loss_fn, batched=True, task_params=True)
                a = 0
                for r, span in groupby(owners):  # each run's consecutive tasks of the pass, scored together
                    b = a + len(list(span))
                    tallies[r].add_tasks(out[a:b], None if co is None else co[a:b], ep.query_y[a:b])
                    a = b
    finally:
        exits.close()  # stops the prefetch worker, also on an error or an early return
        model.train(was_training)
    return [t.result() for t in tallies]
