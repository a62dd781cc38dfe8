"""How much memory the tasks of a meta-step or an evaluation pass take, and how tasks are grouped to fit.

A GNN pass over a whole graph (or a large k-hop subgraph) keeps per-node and, for GAT, per-edge activations for
every task, and autograd holds them until the backward pass: a meta-step keeps every inner step's forward (second
order) and the query pass. Whole-graph GAT on Amazon-Computers (491,722 edges, hidden 64, 2 inner steps, second
order) took 18.7 GB for one meta-batch of 4 tasks on the CPU (session 31), and on a larger graph the kernel kills
the process without a word. So a meta-batch whose tasks would hold more than :func:`memory_budget` runs in groups
whose gradients are summed (:meth:`~cmlgraph.algorithms.base.MetaAlgorithm.meta_gradients`; equal to one pass up
to float rounding), evaluation splits its chunks likewise, and a single task that cannot fit the machine at all is
refused before the run starts (:func:`check_task_memory`).

The estimates count :meth:`~cmlgraph.backbones.base.Backbone.pass_values` (activation values of one task's
forward pass) times the bytes each such value costs with everything autograd and the kernels keep beside it,
measured on the CPU (float32):

- training: 18.7 GB − 0.7 GB at the start for 4 tasks × 66.5M values × 3 kept passes (2 inner steps + query,
  second order): 22.6 B a value → :data:`TRAIN_BYTES_PER_VALUE` 24;
- evaluation (first order, one pass kept at a time): whole-graph GAT on Amazon-Photo, 4 tasks × 33M values a
  pass, peak 9.8 GB: about 67 B a value → :data:`EVAL_BYTES_PER_VALUE` 64.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from cmlgraph.core.streams import group_tasks
from cmlgraph.errors import ResourceError

#: Bytes of task activations one training meta-step (or evaluation pass) may hold on the CPU: 8 GiB, a third of
#: this project's 24 GB machines. Fixed (not a share of the machine's memory) so that a run splits its
#: meta-batches the same way on every CPU machine.
MEMORY_BUDGET_CPU = 8 << 30
#: Share of a GPU's memory the task activations of one pass may take (the rest: weights, the graph, the
#: allocator's cache, the optimizer state).
GPU_SHARE = 0.5
#: Bytes a counted activation value costs in a training meta-step, per kept pass (measured, module docstring).
TRAIN_BYTES_PER_VALUE = 24
#: Bytes a counted activation value costs in an evaluation pass (measured, module docstring).
EVAL_BYTES_PER_VALUE = 64


def memory_budget(device: torch.device | str) -> int:
    """Bytes the tasks of one meta-step or evaluation pass may hold on ``device``: :data:`GPU_SHARE` of a GPU's
    memory, :data:`MEMORY_BUDGET_CPU` elsewhere."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(device).total_memory * GPU_SHARE)
    return MEMORY_BUDGET_CPU


def device_memory(device: torch.device | str) -> int | None:
    """All the memory of ``device`` in bytes (a GPU's, or the machine's RAM); ``None`` where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory) if torch.cuda.is_available() else None
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


def gpu_peak_mb(device: torch.device | str) -> float | None:
    """The most memory this process has allocated on ``device``'s GPU, in MiB (``torch.cuda.max_memory_allocated``;
    one decimal); ``None`` for another device or without CUDA."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def task_values(extractor: Any, episode: Any) -> int | None:
    """Activation values of a task's larger forward pass, support or query (:meth:`Backbone.pass_values`);
    ``None`` where the backbone does not say (small passes: MLPs, Conv4, computation trees)."""
    values = getattr(extractor, "pass_values", None)
    if values is None:
        return None
    sizes = [v for v in (values(getattr(episode, side, None)) for side in ("support_x", "query_x")) if v is not None]
    return max(sizes) if sizes else None


def training_bytes(values: int, kept_passes: int) -> int:
    """Estimated bytes of one task in a meta-step: ``values`` a pass, ``kept_passes`` passes held for the backward."""
    return values * kept_passes * TRAIN_BYTES_PER_VALUE


def training_spans(extractor: Any, episodes: Sequence[Any], kept_passes: int, device: torch.device | str
                   ) -> list[tuple[int, int]]:
    """Consecutive task groups ``[a, b)`` of a meta-batch whose estimated meta-step memory
    (:func:`training_bytes`) fits :func:`memory_budget` together; the whole batch as one group where the backbone
    gives no estimate or it all fits. A task heavier than the budget alone is a group of its own."""
    n = len(episodes)
    if n < 2:
        return [(0, n)]
    per_task = []
    for ep in episodes:
        values = task_values(extractor, ep)
        if values is None:
            return [(0, n)]
        per_task.append(training_bytes(values, kept_passes))
    return group_tasks(per_task, memory_budget(device))


#: Share of the device's memory a single task may be estimated at before it is refused: the estimate runs about 15 %
#: low on some graphs (Amazon-Photo's GAT, session 31 review), and the process, the graph and the weights need room.
REFUSE_SHARE = 0.9


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_task_memory(extractor: Any, episode: Any, kept_passes: int, device: torch.device | str,
                      what: str = "this model", fixes: Sequence[str] = ()) -> int | None:
    """Refuse a task that cannot fit the device at all, before anything runs.

    Args:
        extractor: The feature extractor ψ (its :meth:`pass_values` sizes the task).
        episode: A materialised task of the run.
        kept_passes: Passes a meta-step keeps for its backward
            (:meth:`~cmlgraph.algorithms.base.MetaAlgorithm.kept_passes`).
        device: Where the run computes.
        what: The run's model in words, for the message ("GAT on the whole graph of amazon-computers").
        fixes: Settings that shrink the task, for the message; those that shrink only the meta-step's kept passes
            (``--first-order``, ``--inner-steps``) are dropped where evaluation's pass alone would not fit.

    Returns:
        The task's estimated meta-step bytes (:func:`training_bytes`; ``None`` where the backbone gives no
        estimate).

    Raises:
        ResourceError: One task's estimated meta-step or evaluation memory exceeds :data:`REFUSE_SHARE` of
            ``device``'s memory; the message names the estimate and the settings that shrink it.
    """
    values = task_values(extractor, episode)
    if values is None:
        return None
    train, evaluation = training_bytes(values, kept_passes), values * EVAL_BYTES_PER_VALUE
    have = device_memory(device)
    if have is not None and max(train, evaluation) > REFUSE_SHARE * have:
        where = "this GPU has" if torch.device(device).type == "cuda" else "this machine has"
        if train >= evaluation:
            how = (f"{_gb(train)} for a meta-step ({values:,} activation values a pass × {kept_passes} passes kept "
                   f"for the meta-gradient × {TRAIN_BYTES_PER_VALUE} B)")
        else:
            how = (f"{_gb(evaluation)} to adapt it at evaluation ({values:,} activation values a pass × "
                   f"{EVAL_BYTES_PER_VALUE} B)")
            fixes = [f for f in fixes if "--first-order" not in f and "--inner-steps" not in f]
        tail = f": {', '.join(fixes)}" if fixes else ""
        raise ResourceError(
            f"one task of {what} needs about {how} and {where} {_gb(have)}: the process would be killed. Shrink "
            f"the task's pass{tail}")
    return train


__all__ = ["EVAL_BYTES_PER_VALUE", "GPU_SHARE", "MEMORY_BUDGET_CPU", "REFUSE_SHARE", "TRAIN_BYTES_PER_VALUE",
           "check_task_memory", "device_memory", "gpu_peak_mb", "memory_budget", "task_values", "training_bytes",
           "training_spans"]
