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


@pytest.mark.parametrize("settings", [dict(subgraph="full", gnn="gat", gat_heads=2, hidden=8),
                                      dict(subgraph="full", gnn="gcn", hidden=8)])
def test_large_passes_are_split_by_their_activations_with_the_same_scores(settings, monkeypatch):
    """Whole-graph passes (GAT: its per-edge messages) compute far more values than the weights: a chunk's tasks
    run in passes of at most ``eval_values`` activation values (a whole-graph GAT on Amazon-Photo evaluated 100 tasks
    at once and the kernel killed the run for memory); the scores, alone and fused, equal one pass's."""
    import cmlgraph.train.evaluate as ev

    exps, raws = _runs(**settings)
    params = [parameters_of(e.model) for e in exps]
    e = exps[0]
    per_task = e.model.extractor.pass_values(e.domain.materialize(raws[0][0], "cpu").support_x)
    graph = e.domain.graph
    edges = graph.num_edges + graph.num_nodes if settings["gnn"] == "gat" else 0  # GAT: self-looped edges
    assert per_task is not None and per_task >= 2 * 8 * (graph.num_nodes + edges) * 0.9
    whole = evaluate(e.algo, e.model, params[0], e.domain, raws[0], "cpu")
    fused = evaluate_runs(e.algo, e.model, [(p, x.domain, r) for p, x, r in zip(params, exps, raws, strict=True)],
                          "cpu")
    sizes: list[int] = []
    stacked = ev.stack
    monkeypatch.setattr(ev, "stack", lambda eps: sizes.append(len(eps)) or stacked(eps))
    monkeypatch.setattr(ev, "memory_budget", lambda device: 3 * per_task * ev.EVAL_BYTES_PER_VALUE)
    split = evaluate(e.algo, e.model, params[0], e.domain, raws[0], "cpu")
    assert sizes == [3, 3, 1]  # 7 tasks, at most 3 a pass
    sizes.clear()
    split_fused = evaluate_runs(e.algo, e.model, [(p, x.domain, r) for p, x, r in zip(params, exps, raws,
                                                                                       strict=True)], "cpu")
    assert sizes == [3, 3, 3, 3, 2]  # the two runs' 14 tasks
    torch.testing.assert_close(torch.tensor(split["scores"]), torch.tensor(whole["scores"]), rtol=1e-5, atol=1e-6)
    for a, b in zip(split_fused, fused, strict=True):
        torch.testing.assert_close(torch.tensor(a["scores"]), torch.tensor(b["scores"]), rtol=1e-5, atol=1e-6)


def test_computation_trees_and_sgc_rows_are_not_split():
    from cmlgraph.train.evaluate import fit_activations

    for settings in (dict(subgraph="khop"), dict(subgraph="full", gnn="sgc")):
        exps, raws = _runs(seeds=(0,), **settings)
        e = exps[0]
        eps = [e.domain.materialize(r, "cpu") for r in raws[0]]
        assert e.model.extractor.pass_values(eps[0].support_x) is None
        assert fit_activations(e.model, eps, "cpu") == [eps]


def test_each_task_counts_its_own_subgraph(monkeypatch):
    """GAT's k-hop subgraphs differ in size: a pass is filled task by task, by each task's own values, so no pass
    holds more than the cap (unless one task alone does)."""
    import cmlgraph.train.evaluate as ev

    exps, raws = _runs(seeds=(0,), subgraph="khop", gnn="gat", gat_heads=2, hidden=8)
    e = exps[0]
    eps = [e.domain.materialize(r, "cpu") for r in raws[0]]
    own = [max(e.model.extractor.pass_values(ep.support_x), e.model.extractor.pass_values(ep.query_x)) for ep in eps]
    assert len(set(own)) > 1  # the subgraphs differ
    cap = 2 * max(own)
    monkeypatch.setattr(ev, "memory_budget", lambda device: cap * ev.EVAL_BYTES_PER_VALUE)
    parts = ev.fit_activations(e.model, eps, "cpu")
    index = {id(ep): i for i, ep in enumerate(eps)}
    assert [index[id(ep)] for part in parts for ep in part] == list(range(len(eps))) and len(parts) > 1
    sums = [sum(own[index[id(ep)]] for ep in part) for part in parts]
    assert all(v <= cap for v in sums), (sums, cap)
