"""A meta-batch too large for the memory budget runs in task groups whose gradients are summed
(:meth:`MetaAlgorithm.meta_gradients`, :mod:`cmlgraph.core.memory`): the same meta-gradient and losses as one
pass, for every way the meta-gradient is formed (second and first order, CML diagnostics, Sharp-MAML's gradient
point, a regulariser, MAML++'s learned rates and per-step losses)."""

from __future__ import annotations

import pytest
import torch

import cmlgraph.core.memory as mem
from cmlgraph.api import make_config
from cmlgraph.core.model import parameters_of
from cmlgraph.train.trainer import build_experiment, prepare

GRAPH = dict(task="graph", graph="synthetic", synthetic_nodes=300, synthetic_classes=15, ways=3, shots=2, queries=3,
             steps=1, hidden=8, subgraph="full", gnn="gcn")


def _one_pass_and_groups(monkeypatch, settings, diagnostics=False, regulariser=False):
    e = build_experiment(prepare(make_config(**{**GRAPH, **settings})))
    if regulariser:  # as AMM-GNN's: a term on the meta-parameters, added once
        e.algo.regulariser = lambda params, eps: 0.01 * sum(v.pow(2).sum() for v in params.values()) * len(eps)
    raws = e.domain.sample("train", 5, torch.Generator().manual_seed(3))
    eps = [e.domain.materialize(r, "cpu") for r in raws]
    params = parameters_of(e.model)
    step = 0
    whole = e.algo.meta_gradients(e.model, params, eps, e.domain.loss_fn, step, diagnostics=diagnostics)
    per_task = mem.training_bytes(mem.task_values(e.model.extractor, eps[0]), e.algo.kept_passes(step))
    monkeypatch.setattr(mem, "memory_budget", lambda device: 2 * per_task)  # two tasks a group: 2 + 2 + 1
    groups: list[int] = []
    task_losses = e.algo.task_losses

    def counted(model, p, ep, loss_fn, s, batched=False):
        groups.append(int(ep.support_y.shape[0]) if batched else 1)
        return task_losses(model, p, ep, loss_fn, s, batched)

    monkeypatch.setattr(e.algo, "task_losses", counted)
    split = e.algo.meta_gradients(e.model, params, eps, e.domain.loss_fn, step, diagnostics=diagnostics)
    return whole, split, groups


@pytest.mark.parametrize("settings,regulariser", [
    (dict(algo="maml"), False),
    (dict(algo="maml", first_order=True), False),
    (dict(algo="maml", cml=False), False),
    (dict(algo="anil"), False),
    (dict(algo="sharp-maml"), False),
    (dict(algo="maml++", inner_steps=3), False),
    (dict(algo="maml", gnn="gat", gat_heads=2), False),
    (dict(algo="maml"), True)])
def test_grouped_meta_gradients_equal_one_pass(monkeypatch, settings, regulariser):
    whole, split, groups = _one_pass_and_groups(monkeypatch, settings, regulariser=regulariser)
    sharp = settings["algo"] == "sharp-maml"
    assert groups == ([2, 2, 1] * 2 if sharp else [2, 2, 1])  # Sharp-MAML: again at its SAM point
    assert whole.grads.keys() == split.grads.keys()
    for k in whole.grads:
        torch.testing.assert_close(split.grads[k], whole.grads[k], rtol=1e-4, atol=1e-6, msg=k)
    for part in ("meta", "co", "total"):
        torch.testing.assert_close(getattr(split.loss, part), getattr(whole.loss, part).detach(), rtol=1e-5,
                                   atol=1e-6)
    assert any(g.abs().sum() > 0 for g in split.grads.values())


def test_grouped_diagnostics_equal_one_pass(monkeypatch):
    whole, split, groups = _one_pass_and_groups(monkeypatch, dict(algo="maml"), diagnostics=True)
    assert groups == [2, 2, 1]
    assert whole.diagnostics and split.diagnostics.keys() == whole.diagnostics.keys()
    for k in ("cos_extractor", "norm_meta_extractor", "norm_co_extractor"):
        assert split.diagnostics[k] == pytest.approx(whole.diagnostics[k], rel=1e-4, abs=1e-6)
    for k in whole.grads:
        torch.testing.assert_close(split.grads[k], whole.grads[k], rtol=1e-4, atol=1e-6)
