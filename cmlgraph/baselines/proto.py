"""Nearest class mean with cosine similarity: the prototype classifier of Prototypical Networks (Snell et al.,
NeurIPS 2017) with a cosine instead of a Euclidean distance, on fixed (untrained) features.

On SGC's ``S^K X`` (:mod:`cmlgraph.baselines.propagation`) this is the ``sgc-proto`` baseline of issue 17.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cmlgraph.errors import DataError


def support_counts(support: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """``[ways]`` support rows per class, after checking the labels fit the support set.

    Raises:
        DataError: If the row and label counts differ, a label is outside ``[0, ways)`` or a class has no row.
    """
    y = support_y.long()
    if y.numel() != support.shape[0]:
        raise DataError(f"support has {support.shape[0]} rows but support_y has {y.numel()} labels")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= ways):
        raise DataError(f"support labels must lie in [0, {ways}), got {sorted(set(y.tolist()))}")
    counts = torch.bincount(y, minlength=ways)
    if bool((counts == 0).any()):
        missing = [c for c in range(ways) if int(counts[c]) == 0]
        raise DataError(f"classes {missing} have no support example; every one of the {ways} classes needs one")
    return counts


def class_means(support: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """``[ways, F]`` mean of the support rows of each class ``0..ways-1``.

    Raises:
        DataError: If a class has no support row or a label is outside ``[0, ways)``.
    """
    from cmlgraph.core.proto_head import class_means as means

    y = support_y.long()
    support_counts(support, y, ways)  # the checks; the arithmetic is the meta-learners' Proto-MAML head's
    return means(support, y, ways)


def cosine_prototype_logits(support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
    """Cosine similarity of each query row to each class mean of the support rows.

    Args:
        support: ``[S, F]`` support features.
        support_y: ``[S]`` support labels in ``0..ways-1``.
        query: ``[Q, F]`` query features.
        ways: Number of classes.

    Returns:
        ``[Q, ways]`` cosine similarities in ``[-1, 1]`` (argmax = nearest class mean); a zero row scores 0.
    """
    protos = class_means(support.float(), support_y, ways)
    return F.normalize(query.float(), dim=1) @ F.normalize(protos, dim=1).T


__all__ = ["class_means", "cosine_prototype_logits"]
