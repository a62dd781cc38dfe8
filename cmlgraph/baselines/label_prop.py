"""Label propagation as APPNP propagates (Klicpera et al., "Predict then Propagate: Graph Neural Networks meet
Personalized PageRank", ICLR 2019), applied to the support labels instead of a network's predictions.

``Z_0 = Y``, ``Z_{t+1} = (1 - α) S Z_t + α Y`` with ``S = D^-1/2 (A + I) D^-1/2`` and ``Y`` the one-hot labels of
the support nodes (zero rows elsewhere); a node is predicted as the arg-max of its row of ``Z_T``. This is the
``label-prop`` baseline of issue 17: no features and no training.

Unreached nodes: a node with no path of at most ``T`` edges to a support node keeps an all-zero row (every entry
of ``S`` is non-negative, and positive on each edge and self-loop, so every reached node has positive mass). Its
arg-max would be class 0, a lucky guess for a fraction 1/ways of such nodes; :func:`reached` names them, so
callers answer "no prediction" there (``label-prop`` scores them as wrong and counts them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cmlgraph.baselines.propagation import propagate, sym_norm_adj
from cmlgraph.errors import ConfigError, DataError


def check_settings(steps: int, alpha: float) -> None:
    """Raise :class:`ConfigError` unless ``steps >= 1`` and ``0 <= alpha < 1``."""
    if int(steps) < 1:
        raise ConfigError(f"label propagation needs steps >= 1, got {steps}")
    if not 0.0 <= float(alpha) < 1.0:
        raise ConfigError(f"label propagation's teleport α must be in [0, 1), got {alpha}")


def seed_labels(num_nodes: int, support: Tensor, support_y: Tensor, ways: int,
                dtype: torch.dtype = torch.float64) -> Tensor:
    """``Y``: ``[N, ways]`` one-hot rows at the support nodes, zeros elsewhere.

    Raises:
        DataError: A support node outside ``[0, num_nodes)`` or a label outside ``[0, ways)``.
    """
    nodes, y = support.long().cpu(), support_y.long().cpu()
    if nodes.numel() != y.numel():
        raise DataError(f"{nodes.numel()} support nodes but {y.numel()} support labels")
    if nodes.numel() and (int(nodes.min()) < 0 or int(nodes.max()) >= num_nodes):
        raise DataError(f"support nodes must lie in [0, {num_nodes}), got {nodes.tolist()[:10]}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= ways):
        raise DataError(f"support labels must lie in [0, {ways}), got {sorted(set(y.tolist()))}")
    out = torch.zeros(num_nodes, ways, dtype=dtype)
    out[nodes, y] = 1.0
    return out


def propagate_labels(adj: Tensor, seeds: Tensor, steps: int, alpha: float) -> Tensor:
    """APPNP's iteration ``Z ← (1 - α) S Z + α Y`` from ``Z = Y``, ``steps`` times.

    Args:
        adj: Sparse ``S`` (:func:`cmlgraph.baselines.propagation.sym_norm_adj`), of ``seeds``' dtype.
        seeds: ``[N, C]`` label matrix ``Y`` (several tasks may sit side by side as column blocks).
        steps: Iterations ``T >= 1``.
        alpha: Teleport probability ``α`` in ``[0, 1)``.

    Returns:
        ``[N, C]`` propagated scores ``Z_T`` (non-negative).
    """
    check_settings(steps, alpha)
    z = seeds
    for _ in range(int(steps)):
        z = (1.0 - alpha) * propagate(adj, z, 1) + alpha * seeds
    return z


def label_propagation(edge_index: Tensor, num_nodes: int, support: Tensor, support_y: Tensor, ways: int,
                      steps: int = 10, alpha: float = 0.1) -> Tensor:
    """Scores of every node after APPNP-style propagation of the support labels (float64).

    Args:
        edge_index: ``[2, E]`` edges (both directions for an undirected graph).
        num_nodes: Number of nodes ``N``.
        support: Support node indices.
        support_y: Their labels in ``0..ways-1``.
        ways: Number of classes.
        steps: Iterations ``T``.
        alpha: Teleport probability ``α``.

    Returns:
        ``[N, ways]`` non-negative scores; an all-zero row is a node the propagation never reached.
    """
    check_settings(steps, alpha)
    seeds = seed_labels(num_nodes, support, support_y, ways)
    return propagate_labels(sym_norm_adj(edge_index.cpu(), num_nodes, torch.float64), seeds, steps, alpha)


def reached(scores: Tensor) -> Tensor:
    """``bool[N]``: rows with any positive score (the propagation reached them)."""
    return (scores > 0).any(dim=-1)


__all__ = ["check_settings", "label_propagation", "propagate_labels", "reached", "seed_labels"]
