"""Device ops of the meta-gradients do not grow with the meta-batch: its tasks run as batched ops (issue 18 item 3).

On a GPU an eager meta-iteration of small tasks costs about a launch per op, whatever the tensors' sizes, so a path
that runs its tasks one by one somewhere costs launches per task. Each hot path of the rehearsal
(:mod:`tests.train.test_device_placement`: model and device-side tensors on ``meta``, host work on CPU tensors, as
a GPU run) meta-steps the same settings at two meta-batch sizes, and :class:`LaunchCounter` counts the ops with a
device tensor in a meta-gradients call on a fresh meta-batch (the per-graph caches built, as after a run's first
step; the batch's layout built in the call, as in every step of a run). Their growth per added task must be zero,
or at most the budget below, whose reason names what still runs per task. Task loops planted back (AMM-GNN's
regulariser, one task at a time until session 37; the k-hop layout built task by task) fail.

Not counted here: each episode's copies to the device (``materialize``: its nodes, labels and k-hop plans, 8 to 10
copies a task since ``plan_to`` sends a plan in one copy per dtype), made by the prefetch worker ahead of the
step, nor the optimizer step.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from cmlgraph.backbones.gnn_plan import BATCH_LAYOUT_TASKS
from cmlgraph.core.model import parameters_of
from cmlgraph.train.launch_counter import LaunchCounter, launches
from tests.train.test_device_placement import ALL_PATHS, DEVICE, DevicePlacement, _experiment_on_device

#: Feature-dropout masks drawn task by task in the order each task's own pass draws them (so one pass equals the
#: task loop from the same RNG state, and each fused run draws from its own stream: ``GNNBackbone._task_scales``).
MASKS = "each task's dropout masks, drawn as its own pass draws them"
#: Per-task ops allowed for each added task, and why (measured with torch 2.13.0; zero: nothing runs per task).
PER_TASK: dict[str, tuple[int, str]] = {
    "khop-gat-sparse": (9, "each subgraph's sparse features made CSR blocks for the union's block diagonal"),
    "khop-gat-dropout": (40, f"{MASKS}, padded to the union's rows"),
    "full": (2, "each task's propagated rows gathered (SGC's whole-graph tasks, one index a task)"),
    "full-sgc-dropout": (2, "each task's propagated rows gathered (SGC's whole-graph tasks, one index a task)"),
    "full-gcn-dropout": (32, MASKS),  # (70 until session 37: each task's masked features projected on their own)
    "digits": (3, "PyTorch's vmap of Conv4's convolution double backward runs one convolution a task"),
    **{p: (0, "") for p in ("khop", "khop-gat", "khop-gcn", "khop-gcn-sparse", "khop-sgc-sparse", "khop-sage",
                            "khop-gin", "khop-gcn-dropout", "khop-gcn-sparse-dropout", "protonet", "ammgnn",
                            "ammgnn-sparse", "ammgnn-table3", "full-gcn", "full-gat", "gmeta", "gmeta-table3",
                            "sinusoid")},
}
#: The meta-batches compared: from ``BATCH_LAYOUT_TASKS`` tasks on, a k-hop batch's layout is built at once (below
#: it task by task, which launches fewer ops for so few tasks), as every evaluation chunk's is.
SIZES = (BATCH_LAYOUT_TASKS, BATCH_LAYOUT_TASKS + 4)


def device_ops(settings: dict[str, Any], batched: bool | None, meta_batch: int) -> LaunchCounter:
    """The device ops of a meta-gradients call of ``settings`` at ``meta_batch`` tasks on a fresh meta-batch, as
    every meta-iteration of a run has one: what the step builds once a batch (its layout) included."""
    e, episodes = _experiment_on_device(dict(settings, meta_batch=meta_batch), batched)
    params = parameters_of(e.model)
    with DevicePlacement():
        eps = episodes("train", e.batched)
        counter = LaunchCounter(DEVICE.type)
        with counter:
            ms = e.algo.meta_gradients(e.model, params, eps, e.domain.loss_fn, 1, batched=e.batched)
    assert ms.loss.total.device == DEVICE
    return counter


def growth_per_task(path: str) -> tuple[float, LaunchCounter, LaunchCounter]:
    settings, batched = ALL_PATHS[path]
    small, large = (device_ops(settings, batched, n) for n in SIZES)
    return (large.total - small.total) / (SIZES[1] - SIZES[0]), small, large


def test_every_rehearsed_path_has_a_budget() -> None:
    assert set(PER_TASK) == set(ALL_PATHS)


@pytest.mark.parametrize("path", list(ALL_PATHS))
def test_device_ops_of_a_meta_iteration_do_not_grow_with_the_meta_batch(path: str, monkeypatch) -> None:
    import cmlgraph.backbones.gnn as gnn

    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)  # whole-graph dropout as on a GPU
    per_task, small, large = growth_per_task(path)
    budget, why = PER_TASK[path]
    grown = {k: large.counts[k] - small.counts.get(k, 0) for k in large.counts
             if large.counts[k] != small.counts.get(k, 0)}
    assert small.total > 50, "the counter saw no device work: is the path still on the device?"
    assert per_task <= budget, (f"{path}: {per_task:g} device ops a task (budget {budget}: {why or 'none'}); "
                                f"grown by op from {SIZES[0]} to {SIZES[1]} tasks: {grown}")


def test_a_k_hop_layout_built_task_by_task_is_caught(monkeypatch) -> None:
    """The k-hop batch layout built task by task at any size (as before session 37: its block diagonals 3 ops a
    task, its constants 5) costs device ops per task past the budget of zero."""
    import cmlgraph.backbones.gnn_plan as gnn_plan

    monkeypatch.setattr(gnn_plan, "BATCH_LAYOUT_TASKS", 10**6)
    per_task, _, _ = growth_per_task("khop-gcn")
    assert per_task >= 5


def test_a_task_loop_planted_back_is_caught(monkeypatch) -> None:
    """AMM-GNN's regulariser one task at a time (as before session 37) costs device ops per task past its budget."""
    from cmlgraph.algorithms.tlp import AMMGNN
    from cmlgraph.backbones.ammgnn import match_regulariser
    from cmlgraph.core.model import sub

    def one_by_one(self, params, episodes):  # noqa: ANN001, ANN202
        enc = sub(params, "extractor")
        return torch.stack([match_regulariser(enc, ep.query_x) for ep in episodes]).mean()

    monkeypatch.setattr(AMMGNN, "regulariser", one_by_one)
    per_task, _, _ = growth_per_task("ammgnn")
    assert per_task > PER_TASK["ammgnn"][0] + 20


def test_the_counter_skips_views_and_host_tensors() -> None:
    """Views, reshapes and uninitialised allocations launch nothing; with a device type, host ops are not counted,
    nor device ops are missed when only the result is on the device (a factory, a copy)."""
    dev = torch.ones(4, 3, device=DEVICE)
    host = torch.ones(4, 3)
    with LaunchCounter(DEVICE.type) as c:
        dev.view(3, 4).t().unsqueeze(0)
        torch.empty(5, device=DEVICE)
        host + host
        dev + 1
        torch.zeros(3, device=DEVICE)
        host.to(DEVICE)
    assert dict(c.counts) == {"add": 1, "zeros": 1, "_to_copy": 1} or dict(c.counts) == {
        "add": 1, "zero_": 1, "_to_copy": 1}, dict(c.counts)
    with LaunchCounter() as every:
        host.view(12)
        host * 2
    assert every.total == 1
    assert not launches(torch.ops.aten.view.default) and launches(torch.ops.aten.mm.default)
