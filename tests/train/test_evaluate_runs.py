"""Several runs' evaluations as one pass (``evaluate_runs``, issue 18 item 5): the same scores as each run's own
:func:`evaluate`, each task adapted from its own run's parameters; which runs qualify; what it refuses."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.api import make_config
from cmlgraph.core.episode import stack
from cmlgraph.core.model import parameters_of
from cmlgraph.train.evaluate import evaluate, evaluate_runs, runs_fusable
from cmlgraph.train.trainer import build_experiment, prepare

GRAPH = dict(task="graph", graph="synthetic", synthetic_nodes=300, synthetic_classes=15, ways=3, shots=2, queries=3,
             val_tasks=7, steps=1)


def _runs(seeds=(0, 1), **settings):
    """Runs of one graph (as a group shares its graph's tensors: ``parallel._share_graph``) whose parameters
    differ, and each run's own validation tasks."""
    exps = [build_experiment(prepare(make_config(**{**GRAPH, **settings}))) for _ in seeds]
    for e in exps[1:]:
        e.domain = exps[0].domain
    for i, e in enumerate(exps):  # the runs' parameters differ (as trained runs' do)
        with torch.no_grad():
            for p in e.model.parameters():
                p.add_(0.05 * (i + 1) * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    raws = [e.domain.sample("val", 7, torch.Generator().manual_seed(10 + i)) for i, e in enumerate(exps)]
    return exps, raws


@pytest.mark.parametrize("settings,prefetch", [(dict(subgraph="khop"), False), (dict(subgraph="khop"), True),
                                               (dict(subgraph="full"), False),
                                               (dict(subgraph="full", gnn="gat", gat_heads=2, hidden=8), False)])
def test_runs_scored_in_one_pass_equal_each_run_alone(settings, prefetch):
    exps, raws = _runs(**settings)
    params = [parameters_of(e.model) for e in exps]
    assert runs_fusable(exps[0].algo, exps[0].model, params, "cpu")
    together = evaluate_runs(exps[0].algo, exps[0].model, [(p, e.domain, r) for p, e, r in
                                                          zip(params, exps, raws, strict=True)], "cpu", batch_size=5,
                              prefetch=prefetch)  # the next chunk materialized in a worker thread, or not
    assert together is not None
    for e, p, r, res in zip(exps, params, raws, together, strict=True):
        alone = evaluate(e.algo, e.model, p, e.domain, r, "cpu")
        assert res.keys() == alone.keys() and res["num_tasks"] == 7
        torch.testing.assert_close(torch.tensor(res["scores"]), torch.tensor(alone["scores"]), rtol=1e-5, atol=1e-6)
        assert res["mean"] == pytest.approx(alone["mean"], abs=1e-6)
        assert res["dagger_mean"] == pytest.approx(alone["dagger_mean"], abs=1e-6)
    assert together[0]["scores"] != together[1]["scores"]  # each task read its own run's parameters


def test_which_runs_qualify():
    exps, _ = _runs()
    params = [parameters_of(e.model) for e in exps]
    assert not runs_fusable(exps[0].algo, exps[0].model, params[:1], "cpu")  # one run: nothing to share
    proto, _ = _runs(algo="protonet")
    assert not runs_fusable(proto[0].algo, proto[0].model, [parameters_of(e.model) for e in proto], "cpu")
    mamlpp, _ = _runs(algo="maml++")
    assert not runs_fusable(mamlpp[0].algo, mamlpp[0].model, [parameters_of(e.model) for e in mamlpp], "cpu")
    wide, _ = _runs(seeds=(0,), hidden=32)
    assert not runs_fusable(exps[0].algo, exps[0].model, [params[0], parameters_of(wide[0].model)], "cpu")


def test_per_task_parameters_need_a_batch_and_no_learned_rates():
    exps, raws = _runs(seeds=(0,))
    e = exps[0]
    eps = [e.domain.materialize(r, "cpu") for r in raws[0][:2]]
    params = {k: torch.stack([v, v]) for k, v in parameters_of(e.model).items()}
    with pytest.raises(ValueError, match="task_params needs batched episodes"):
        e.algo.predict(e.model, params, eps[0], e.domain.loss_fn, task_params=True)
    out, _ = e.algo.predict(e.model, params, stack(eps), e.domain.loss_fn, batched=True, task_params=True)
    ref, _ = e.algo.predict(e.model, parameters_of(e.model), stack(eps), e.domain.loss_fn, batched=True)
    torch.testing.assert_close(out, ref)


def test_runs_of_other_graphs_are_refused_and_leave_no_worker_behind():
    """Two runs whose graphs are separate tensors (not shared by a group) do not stack: ``None`` (each run then
    evaluates alone), and the prefetch worker is stopped."""
    import threading

    exps = [build_experiment(prepare(make_config(**{**GRAPH, "subgraph": "full"}))) for _ in range(2)]
    raws = [e.domain.sample("val", 4, torch.Generator().manual_seed(3)) for e in exps]
    runs = [(parameters_of(e.model), e.domain, r) for e, r in zip(exps, raws, strict=True)]
    assert evaluate_runs(exps[0].algo, exps[0].model, runs, "cpu", prefetch=True) is None
    assert not [t for t in threading.enumerate() if t.name.startswith("cmlgraph-eval-runs")]
