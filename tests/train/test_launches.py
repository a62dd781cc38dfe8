"""Device ops of a meta-iteration do not grow with the meta-batch: its tasks run as batched ops (issue 18 item 3).

On a GPU an eager meta-iteration of small tasks costs about a launch per op, whatever the tensors' sizes, so a path
that runs its tasks one by one somewhere costs launches per task. Each hot path of the rehearsal
(:mod:`tests.train.test_device_placement`: model and device-side tensors on ``meta``, host work on CPU tensors, as
a GPU run) meta-steps the same settings at meta-batch 2 and 4, and :class:`LaunchCounter` counts the ops with a
device tensor in the second meta-gradients call of each (the per-graph caches and the batch's plans are built by
then, as in a run). Their growth per added task must be zero, or at most the budget below, whose reason names what
still runs per task. A task loop planted back (AMM-GNN's regulariser, one task at a time until session 37) fails.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from cmlgraph.core.model import parameters_of
from cmlgraph.train.launch_counter import LaunchCounter, launches
from tests.train.test_device_placement import ALL_PATHS, DEVICE, DevicePlacement, _experiment_on_device

#: The batch's block-diagonal layout, built once a meta-iteration from its tasks' plans (host-built CSR parts):
#: each task's row offsets shifted and padded (``gnn_plan._block_diag``) and its constant copied into a padded
#: block (``TaskLayout._stack``), a few ops a task per aggregation; GAT's subgraph union likewise (``_union_layout``).
LAYOUT = "the batch's block-diagonal layout from its tasks' plans, once a meta-iteration"
#: Feature-dropout masks drawn task by task in the order each task's own pass draws them (so one pass equals the
#: task loop from the same RNG state, and each fused run draws from its own stream: ``GNNBackbone._task_scales``).
MASKS = "each task's dropout masks, drawn as its own pass draws them"
#: Per-task ops allowed for each added task, and why (measured with torch 2.13.0; zero: nothing runs per task).
PER_TASK: dict[str, tuple[int, str]] = {
    "khop": (2, LAYOUT), "khop-gcn": (8, LAYOUT), "khop-gcn-sparse": (12, LAYOUT),
    "khop-sgc-sparse": (6, LAYOUT), "khop-sage": (10, LAYOUT), "khop-gin": (10, LAYOUT),
    "khop-gat": (6, LAYOUT), "khop-gat-sparse": (10, LAYOUT), "protonet": (2, LAYOUT),
    "ammgnn": (8, LAYOUT), "ammgnn-sparse": (12, LAYOUT), "ammgnn-table3": (12, LAYOUT),
    "full": (2, "each task's propagated rows gathered (SGC's whole-graph tasks, one index a task)"),
    "full-sgc-dropout": (2, "each task's propagated rows gathered (SGC's whole-graph tasks, one index a task)"),
    "khop-gcn-dropout": (14, f"{LAYOUT}; {MASKS}"), "khop-gcn-sparse-dropout": (18, f"{LAYOUT}; {MASKS}"),
    "khop-gat-dropout": (46, f"{LAYOUT}; {MASKS}, padded to the union's rows"),
    # each task's masked features projected by its own product, forward and both backwards (the CPU measured
    # that faster than one product over a [N, t, F] copy: GNNBackbone._whole_graph_chunk); left for the GPU
    "full-gcn-dropout": (70, f"{MASKS}; each task's masked features projected by its own product"),
    "digits": (3, "PyTorch's vmap of Conv4's convolution double backward runs one convolution a task"),
    "full-gcn": (0, ""), "full-gat": (0, ""), "gmeta": (0, ""), "gmeta-table3": (0, ""), "sinusoid": (0, ""),
}


def device_ops(settings: dict[str, Any], batched: bool | None, meta_batch: int) -> LaunchCounter:
    """The device ops of a meta-gradients call of ``settings`` at ``meta_batch`` tasks, after a first call on the
    same episodes (which builds what a run builds once a batch)."""
    e, episodes = _experiment_on_device(dict(settings, meta_batch=meta_batch), batched)
    params = parameters_of(e.model)
    with DevicePlacement():
        eps = episodes("train", e.batched)
        e.algo.meta_gradients(e.model, params, eps, e.domain.loss_fn, 1, batched=e.batched)
        counter = LaunchCounter(DEVICE.type)
        with counter:
            ms = e.algo.meta_gradients(e.model, params, eps, e.domain.loss_fn, 1, batched=e.batched)
    assert ms.loss.total.device == DEVICE
    return counter


def growth_per_task(path: str) -> tuple[float, LaunchCounter, LaunchCounter]:
    settings, batched = ALL_PATHS[path]
    two, four = device_ops(settings, batched, 2), device_ops(settings, batched, 4)
    return (four.total - two.total) / 2, two, four


def test_every_rehearsed_path_has_a_budget() -> None:
    assert set(PER_TASK) == set(ALL_PATHS)


@pytest.mark.parametrize("path", list(ALL_PATHS))
def test_device_ops_of_a_meta_iteration_do_not_grow_with_the_meta_batch(path: str, monkeypatch) -> None:
    import cmlgraph.backbones.gnn as gnn

    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)  # whole-graph dropout as on a GPU
    per_task, two, four = growth_per_task(path)
    budget, why = PER_TASK[path]
    grown = {k: four.counts[k] - two.counts.get(k, 0) for k in four.counts if four.counts[k] != two.counts.get(k, 0)}
    assert two.total > 50, "the counter saw no device work: is the path still on the device?"
    assert per_task <= budget, (f"{path}: {per_task:g} device ops a task (budget {budget}: {why or 'none'}); "
                                f"grown by op from 2 to 4 tasks: {grown}")


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
