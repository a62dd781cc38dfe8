"""The dataset object every graph loader returns: one graph, its labels and its few-shot class split.

Why one type: registry loaders, the synthetic generator and user graphs (``custom.py``) all produce a
:class:`FewShotGraph`, so the episode sampler, the subgraph extractor and the training loop see one interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from cmlgraph.errors import ConfigError
from cmlgraph.graphs.sparse import is_sparse

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class FewShotGraph:
    """A node-classification graph with a class-disjoint train/val/test split for few-shot episodes.

    Attributes:
        name: Dataset name (the registry's CLI name, or the user's name for a custom graph).
        x: Node features ``[num_nodes, F]``: dense float, or torch sparse COO/CSR (bag-of-words stays sparse).
        edge_index: ``LongTensor[2, E]``; undirected edges appear in both directions, no duplicates.
        y: ``LongTensor[num_nodes]`` class ids, ``-1`` for nodes without a label.
        splits: ``{"train", "val", "test"}`` → lists of original class ids, pairwise disjoint. ``val`` may be
            empty for graphs with too few classes; then validation episodes come from the train classes
            (see :meth:`episode_classes`).
        partial: True when some of the dataset's files were missing and only part of it was loaded.
        notes: Human-readable notes (what was dropped, symmetrised, partial, how the split was chosen).
        info: Provenance: source URLs, citation, split description, label names...
        full_graph_cache: The ``GraphInput.cache`` shared by every full-graph episode input of this graph, so a
            backbone's per-graph precomputation (e.g. the normalised adjacency) is done once.
    """

    name: str
    x: Tensor
    edge_index: Tensor
    y: Tensor
    splits: dict[str, list[int]]
    partial: bool = False
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    _adjacency: tuple[Tensor, Tensor] | None = field(default=None, repr=False, compare=False)
    full_graph_cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return int(self.y.numel())

    @property
    def num_edges(self) -> int:
        """Number of directed edges in ``edge_index`` (twice the undirected count)."""
        return int(self.edge_index.shape[1])

    @property
    def num_features(self) -> int:
        """Feature dimension F."""
        return int(self.x.shape[1])

    @property
    def num_classes(self) -> int:
        """Number of distinct labelled classes (present in ``y``)."""
        labelled = self.y[self.y >= 0]
        return int(torch.unique(labelled).numel())

    @property
    def sparse_features(self) -> bool:
        """Whether ``x`` is a torch sparse tensor."""
        return is_sparse(self.x)

    def class_counts(self) -> dict[int, int]:
        """Number of labelled nodes per class id."""
        labelled = self.y[self.y >= 0]
        ids, counts = torch.unique(labelled, return_counts=True)
        return {int(c): int(n) for c, n in zip(ids.tolist(), counts.tolist(), strict=True)}

    def classes_with_at_least(self, n: int) -> list[int]:
        """Class ids with at least ``n`` labelled nodes (e.g. ``shots + queries``), sorted."""
        return sorted(c for c, k in self.class_counts().items() if k >= n)

    def episode_classes(self, split: str) -> list[int]:
        """Classes to draw ``split`` episodes from; an empty ``val`` falls back to the train classes.

        Raises:
            ConfigError: ``split`` is not one of train/val/test.
        """
        if split not in SPLIT_NAMES:
            raise ConfigError(f"split {split!r} is unknown; use one of {list(SPLIT_NAMES)}")
        classes = list(self.splits.get(split, []))
        if split == "val" and not classes:
            return list(self.splits.get("train", []))
        return classes

    def adjacency(self) -> tuple[Tensor, Tensor]:
        """CSR adjacency ``(rowptr[N+1], col[E])`` of ``edge_index``, computed once and cached.

        Used by :func:`cmlgraph.graphs.subgraph.episode_input` for fast k-hop expansion on large graphs.
        """
        if self._adjacency is None:
            row, col = self.edge_index
            if row.numel() and bool((row[1:] < row[:-1]).any()):
                col_sorted = col[torch.argsort(row, stable=True)].contiguous()
            else:
                col_sorted = col.contiguous()
            counts = torch.bincount(row, minlength=self.num_nodes)
            rowptr = torch.zeros(self.num_nodes + 1, dtype=torch.long)
            torch.cumsum(counts, 0, out=rowptr[1:])
            self._adjacency = (rowptr, col_sorted)
        return self._adjacency

    def homophily(self) -> float:
        """Edge homophily: the fraction of edges between labelled nodes that join nodes of the same class."""
        row, col = self.edge_index
        mask = (self.y[row] >= 0) & (self.y[col] >= 0)
        if not bool(mask.any()):
            return float("nan")
        return float((self.y[row[mask]] == self.y[col[mask]]).float().mean())

    def to_pyg(self) -> Any:
        """Return a ``torch_geometric.data.Data`` with ``x``, ``edge_index``, ``y`` and the split as attributes."""
        from torch_geometric.data import Data

        data = Data(x=self.x, edge_index=self.edge_index, y=self.y, num_nodes=self.num_nodes)
        data.class_splits = {k: list(v) for k, v in self.splits.items()}
        data.name = self.name
        return data

    def __repr__(self) -> str:
        """A short PyG-style description (no tensors, no node ids)."""
        split = ", ".join(f"{k}={len(self.splits.get(k, []))}" for k in SPLIT_NAMES)
        unlabelled = int((self.y < 0).sum())
        return (f"FewShotGraph(name={self.name!r}, nodes={self.num_nodes}, edges={self.num_edges}, "
                f"features={self.num_features}{' sparse' if self.sparse_features else ''}, "
                f"classes={self.num_classes} [{split}], unlabelled={unlabelled}, partial={self.partial}, "
                f"notes={len(self.notes)})")

    def summary(self) -> dict[str, Any]:
        """A JSON-able description: counts, split sizes, partial flag and notes."""
        return {
            "name": self.name,
            "nodes": self.num_nodes,
            "edges": self.num_edges,
            "features": self.num_features,
            "classes": self.num_classes,
            "sparse_features": self.sparse_features,
            "split": {k: len(v) for k, v in self.splits.items()},
            "partial": self.partial,
            "notes": list(self.notes),
        }

    def save(self, path: Any) -> Any:
        """Write the graph to a ``.npz`` file (no pickle) that :func:`cmlgraph.load_graph` reads back with its
        node ids and label names; see :mod:`cmlgraph.graphs.storage` for what round-trips. Returns the path."""
        from cmlgraph.graphs.storage import save_graph

        return save_graph(self, path)


__all__ = ["SPLIT_NAMES", "FewShotGraph"]
