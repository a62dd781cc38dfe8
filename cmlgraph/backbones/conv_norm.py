"""Normalisation layers of Conv4, and whether each makes a query's prediction depend on the other queries.

Why a choice: MAML's Conv4 (Finn et al. 2017; the CML reference code ``maml/model_cml.py``) uses BatchNorm with
the statistics of the batch it is given and no running statistics. At test time that batch is the whole query
set, so each query is normalised with statistics of the other queries: the method is *transductive* (a query's
prediction changes when the other queries change; cf. github.com/facebookresearch/higher issue #107 and Bronskill
et al. 2020, "TaskNorm: Rethinking Batch Normalization for Meta-Learning", ICML). The non-transductive choices:

* ``instance``: InstanceNorm2d (affine), statistics of each image alone (Ulyanov et al. 2016);
* ``group``: GroupNorm, statistics of each image over groups of channels (Wu & He 2018);
* ``support``: batch statistics of the task's *support set*, applied to the queries: TaskNorm's "MetaBN"
  baseline (Bronskill et al. 2020, §3). The support set is normalised with its own statistics, as with ``batch``.

Every choice keeps the parameter names ``weight``/``bias`` (BN's affine), so Conv4's state dict layout is the
same for all of them; none holds buffers, so ``torch.func.functional_call`` with adapted parameters stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cmlgraph.errors import ConfigError

#: The choices of ``model.norm``, and whether each is transductive (a query's output depends on other queries).
TRANSDUCTIVE: dict[str, bool] = {"batch": True, "instance": False, "group": False, "support": False}
NORMS = tuple(TRANSDUCTIVE)
#: Most channel groups of ``group`` (GroupNorm's paper default is 32 groups at 64+ channels; 8 keeps 8 channels
#: per group at Conv4's width 64).
MAX_GROUPS = 8


def check_norm(norm: str) -> str:
    """``norm`` if it is a valid choice; ConfigError naming the valid ones otherwise."""
    if norm not in TRANSDUCTIVE:
        raise ConfigError(f"model.norm = {norm!r} is not a normalisation of Conv4; valid: {', '.join(NORMS)} "
                          f"(batch = the paper's, transductive; instance/group/support are not)")
    return norm


class SupportBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose queries are normalised with the support set's batch statistics (TaskNorm's MetaBN).

    On a plain tensor it is BatchNorm with the batch's statistics (the support set in the inner loop);
    :meth:`forward_pair` normalises a query batch with the statistics of a reference (support) batch.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, track_running_stats=False)

    def forward_pair(self, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """``(support normalised by its own statistics, query normalised by the support's statistics)``."""
        mean = support.mean(dim=(0, 2, 3), keepdim=True)
        var = support.var(dim=(0, 2, 3), unbiased=False, keepdim=True)  # what BatchNorm normalises with
        scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)
        shift = self.bias.view(1, -1, 1, 1) - mean * scale
        return support * scale + shift, query * scale + shift


def make_norm(norm: str, channels: int) -> nn.Module:
    """The normalisation layer of one Conv4 block (affine parameters named ``weight`` and ``bias``)."""
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=False)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    if norm == "group":
        groups = next(g for g in range(min(MAX_GROUPS, channels), 0, -1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return SupportBatchNorm2d(channels)


@dataclass
class QueriesWithSupport:
    """Query images that travel with their task's support images, for the ``support`` norm.

    Conv4 normalises ``query`` with the statistics of ``support`` at every norm layer and returns the queries'
    features only. Several tasks stack (:meth:`stack_tasks`) into one object with a leading task dimension that
    Conv4 runs itself (``forward_tasks``, with ``vmap``).

    Attributes:
        query: Query images ``[n_q, c, h, w]`` (``[B, n_q, c, h, w]`` when ``task_batch``).
        support: Support images ``[n_s, c, h, w]`` (``[B, n_s, c, h, w]`` when ``task_batch``).
        task_batch: Whether the tensors carry a leading task dimension.
    """

    query: Tensor
    support: Tensor
    task_batch: bool = False

    def __len__(self) -> int:
        return int(self.query.shape[-4])

    def select(self, index: Tensor | slice) -> QueriesWithSupport:
        """Some of the queries, with the same support set (one query at a time: ``select(slice(i, i + 1))``)."""
        return QueriesWithSupport(self.query[index], self.support, self.task_batch)

    def to(self, device: torch.device | str) -> QueriesWithSupport:
        """Both tensors on ``device``."""
        return QueriesWithSupport(self.query.to(device), self.support.to(device), self.task_batch)

    @staticmethod
    def can_stack_tasks(xs: list[QueriesWithSupport]) -> bool:
        """Whether per-task inputs have equal shapes (so they stack for ``vmap``)."""
        return all(x.query.shape == xs[0].query.shape and x.support.shape == xs[0].support.shape
                   and not x.task_batch for x in xs)

    @staticmethod
    def stack_tasks(xs: list[QueriesWithSupport]) -> QueriesWithSupport:
        """The per-task inputs along a new leading task dimension."""
        return QueriesWithSupport(torch.stack([x.query for x in xs]), torch.stack([x.support for x in xs]), True)


def _apply_layer(layer: nn.Module, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    if isinstance(layer, SupportBatchNorm2d):
        return layer.forward_pair(support, query)
    return layer(support), layer(query)


def run_block_pair(block: nn.Sequential, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    """One conv block on the support and the query images, queries normalised with the support's statistics."""
    for layer in block:
        support, query = _apply_layer(layer, support, query)
    return support, query


__all__ = ["MAX_GROUPS", "NORMS", "TRANSDUCTIVE", "QueriesWithSupport", "SupportBatchNorm2d", "check_norm",
           "make_norm", "run_block_pair"]

