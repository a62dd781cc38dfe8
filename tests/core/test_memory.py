"""Memory estimates of a meta-step's tasks (:mod:`cmlgraph.core.memory`): the budget per device, the task groups a
meta-batch runs in, the refusal of a task that cannot fit, and each algorithm's kept passes."""

from __future__ import annotations

import pytest
import torch

import cmlgraph.core.memory as mem
from cmlgraph.algorithms.registry import get_algorithm
from cmlgraph.api import make_config
from cmlgraph.errors import CmlgraphError, ResourceError
from cmlgraph.train.trainer import build_experiment, prepare

GRAPH = dict(task="graph", graph="synthetic", synthetic_nodes=300, synthetic_classes=15, ways=3, shots=2, queries=3,
             steps=1, hidden=8)


def _exp(**settings):
    e = build_experiment(prepare(make_config(**{**GRAPH, **settings})))
    raws = e.domain.sample("train", 5, torch.Generator().manual_seed(1))
    return e, [e.domain.materialize(r, "cpu") for r in raws]


def test_the_cpu_budget_is_fixed_and_the_cpu_evaluation_cap_unchanged():
    from cmlgraph.train.evaluate import eval_values

    assert mem.memory_budget("cpu") == 8 << 30
    assert eval_values("cpu") == 1 << 27  # the evaluation cap of session 30, now from the shared budget
    assert mem.device_memory("cpu") is None or mem.device_memory("cpu") > 1 << 30


@pytest.mark.parametrize("settings,expect", [(dict(algo="maml", inner_steps=2), 3),
                                             (dict(algo="maml", inner_steps=5), 6),
                                             (dict(algo="maml", inner_steps=5, first_order=True), 2),
                                             (dict(algo="sharp-maml", inner_steps=2), 3),
                                             (dict(algo="sharp-maml", inner_steps=2, sam_inner=True), 5),
                                             (dict(algo="maml++", inner_steps=3), (5, 2, 4))])
def test_kept_passes_follow_the_order_and_the_per_step_losses(settings, expect):
    """Second order keeps every inner step's pass and the query pass; first order two; MAML++ starts first order
    with its per-step query losses (+1 pass a step), drops them, then goes second order."""
    cfg = prepare(make_config(**{**GRAPH, **settings, "steps": 100}))
    algo = get_algorithm(cfg.algo, total_steps=100, seed=0)
    if isinstance(expect, tuple):
        msl_until = int(cfg.algo.msl_fraction * 100)
        assert 0 < msl_until < int(cfg.algo.first_order_fraction * 100) < 99
        assert (algo.kept_passes(0), algo.kept_passes(msl_until), algo.kept_passes(99)) == expect
    else:
        assert algo.kept_passes(0) == algo.kept_passes(99) == expect


def test_whole_graph_tasks_are_grouped_to_fit_the_budget(monkeypatch):
    e, eps = _exp(subgraph="full", gnn="gcn")
    values = mem.task_values(e.model.extractor, eps[0])
    graph = e.domain.graph
    assert values == 2 * 8 * graph.num_nodes  # two layers of 8 values a node
    per_task = mem.training_bytes(values, 3)
    assert mem.training_spans(e.model.extractor, eps, 3, "cpu") == [(0, 5)]  # small: one group
    monkeypatch.setattr(mem, "memory_budget", lambda device: 2 * per_task)
    assert mem.training_spans(e.model.extractor, eps, 3, "cpu") == [(0, 2), (2, 4), (4, 5)]
    monkeypatch.setattr(mem, "memory_budget", lambda device: per_task // 2)
    assert mem.training_spans(e.model.extractor, eps, 3, "cpu") == [(i, i + 1) for i in range(5)]  # each alone
    trees, tree_eps = _exp(subgraph="khop", gnn="gcn")  # computation trees: a task's own nodes, no estimate
    assert mem.task_values(trees.model.extractor, tree_eps[0]) is None
    assert mem.training_spans(trees.model.extractor, tree_eps, 3, "cpu") == [(0, 5)]


def test_a_task_larger_than_the_machine_is_refused_with_the_fix(monkeypatch):
    e, eps = _exp(subgraph="full", gnn="gat", gat_heads=2)
    fixes = ["--subgraph khop", "--first-order", "fewer --inner-steps (now 2)"]
    what = "GAT on the whole graph of synthetic"
    need = mem.check_task_memory(e.model.extractor, eps[0], 3, "cpu", what, fixes)
    values = mem.task_values(e.model.extractor, eps[0])
    assert need == mem.training_bytes(values, 3)
    monkeypatch.setattr(mem, "device_memory", lambda device: int(need / mem.REFUSE_SHARE) - 1)
    with pytest.raises(ResourceError, match=rf"{what} needs about .* GB for a meta-step \({values:,} activation "
                                            r"values a pass × 3 passes kept .*: --subgraph khop, --first-order, "
                                            r"fewer --inner-steps \(now 2\)$") as info:
        mem.check_task_memory(e.model.extractor, eps[0], 3, "cpu", what, fixes)
    assert isinstance(info.value, CmlgraphError) and isinstance(info.value, MemoryError)
    # first order (2 passes): evaluation's pass (64 B a value) is the larger: the order and the steps cannot help
    evaluation = values * mem.EVAL_BYTES_PER_VALUE
    monkeypatch.setattr(mem, "device_memory", lambda device: int(evaluation / mem.REFUSE_SHARE) - 1)
    with pytest.raises(ResourceError, match=r"to adapt it at evaluation .*: --subgraph khop$"):
        mem.check_task_memory(e.model.extractor, eps[0], 2, "cpu", what, fixes)
    monkeypatch.setattr(mem, "device_memory", lambda device: int(need / mem.REFUSE_SHARE) + 1)
    assert mem.check_task_memory(e.model.extractor, eps[0], 3, "cpu", what, fixes) == need  # fits: no refusal
    monkeypatch.setattr(mem, "device_memory", lambda device: None)  # unknown: nothing refused
    assert mem.check_task_memory(e.model.extractor, eps[0], 3, "cpu") == need


def test_a_gpu_runs_peak_memory_is_read_from_its_own_gpu(monkeypatch):
    """``summary.json`` of a CUDA run holds its peak GPU memory (``peak_gpu_mb``), read from the run's GPU; a CPU
    run has none. The CUDA calls are stood in (no GPU here)."""
    from cmlgraph.core.memory import gpu_peak_mb

    assert gpu_peak_mb("cpu") is None
    asked: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: (asked.append(d), 3 * 2**20 + 2**19)[1])
    assert gpu_peak_mb("cuda:1") == 3.5 and asked == [torch.device("cuda", 1)]
