"""Shared last step of every loader: tidy the edges, apply the class split, record notes.

Why: all loaders (registry datasets, synthetic, user graphs) must return edges in both directions without
duplicates and a disjoint class split, and must say in ``notes`` when validation falls back to train classes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_geometric.utils import remove_self_loops, to_undirected

from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.splits import SplitSpec, class_splits
from cmlgraph.text import agree, have


def undirected_edges(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Drop self loops, add reverse edges and remove duplicates (PyG ``to_undirected`` coalesces and sorts)."""
    edge_index, _ = remove_self_loops(edge_index.to(torch.long))
    return to_undirected(edge_index, num_nodes=num_nodes)


def assemble(
    name: str,
    x: Tensor,
    edge_index: Tensor,
    y: Tensor,
    *,
    split: SplitSpec | dict[str, list[int]],
    seed: int,
    partial: bool = False,
    notes: list[str] | None = None,
    info: dict[str, Any] | None = None,
    classes: list[int] | None = None,
) -> FewShotGraph:
    """Build a :class:`FewShotGraph` with its class split.

    Args:
        name: Dataset name.
        x: Features (dense or sparse).
        edge_index: Edges already in both directions without duplicates.
        y: Labels, ``-1`` for unlabelled nodes.
        split: Counts ``"a/b/c"``, explicit lists, or a JSON path (see :func:`class_splits`).
        seed: Seed of a counts split.
        partial: Whether the data is partial.
        notes: Notes so far.
        info: Provenance so far.
        classes: Classes eligible for the split (default: all labelled classes).
    """
    notes = list(notes or [])
    info = dict(info or {})
    if classes is None:
        classes = sorted(torch.unique(y[y >= 0]).tolist())
    splits = class_splits(classes, split, seed)
    info.setdefault("split", split if isinstance(split, str) else "explicit")
    info["split_seed"] = seed
    unlabelled = int((y < 0).sum())
    if unlabelled:
        notes.append(f"{unlabelled} of {y.numel()} nodes {agree(unlabelled, 'has', 'have')} no label: "
                     f"{agree(unlabelled, 'it is', 'they are')} unlabelled (-1), kept as graph context but never drawn "
                     "into episodes")
    if not splits["val"]:
        notes.append(
            "the 'val' split is empty (too few classes for three disjoint splits): validation episodes are drawn "
            "from the train classes, so validation accuracy is not on unseen classes"
        )
    unused = sorted(set(classes) - set(splits["train"]) - set(splits["val"]) - set(splits["test"]))
    if unused:
        notes.append(f"{have(len(unused), 'class', 'is', 'are')} in no split and never used: "
                     f"{unused[:20]}"
                     f"{'...' if len(unused) > 20 else ''}")
    return FewShotGraph(name=name, x=x, edge_index=edge_index, y=y.to(torch.long), splits=splits,
                        partial=partial, notes=notes, info=info)


__all__ = ["assemble", "undirected_edges"]
