"""Build a :class:`FewShotGraph` from a user's own graph: PyG ``Data``, a networkx graph, or plain arrays.

Why: users bring graphs in many shapes and with many defects. Every input goes through :func:`from_arrays`, which
checks sizes, edge ids and feature values and explains each problem (:class:`DataError` for bad data,
:class:`ConfigError` for impossible settings); fixes it can make safely (directed or duplicate edges, self loops,
classes too small for the requested episodes) are made, recorded in ``notes`` and warned about.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.utils import coalesce, is_undirected, remove_self_loops, to_undirected

from cmlgraph.errors import ConfigError, DataError
from cmlgraph.graphs.assemble import assemble
from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.fit_classes import check_split_ways, default_split, split_by_labels
from cmlgraph.graphs.sparse import is_sparse, scipy_to_torch, to_coo
from cmlgraph.graphs.splits import SplitSpec
from cmlgraph.text import agree, counted, have
from cmlgraph.user_warnings import warn_user

#: What marks an unlabelled node in every entry point (besides None and NaN): -1, PyG's convention.
MISSING_LABEL = -1
#: What a NaN becomes when float labels are cast to integers (``y.long()``: int64's minimum; ``.int()``: int32's).
#: Never a class: nodes with these labels are unlabelled, and a warning says how many (issue 19 item 2, cf.
#: pytorch_geometric #7860).
NAN_CAST_LABELS = (-(2**63), -(2**31))


def _features(features: Any) -> Tensor:
    if sp.issparse(features):
        x = scipy_to_torch(features)
    elif isinstance(features, Tensor):
        features = features.detach().cpu()  # a graph lives on the host (as its edges and labels): runs copy it over
        x = to_coo(features).to(torch.float32) if is_sparse(features) else features.to(torch.float32)
    else:
        try:
            x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        except (TypeError, ValueError) as exc:
            raise DataError(f"features cannot be converted to a float matrix ({exc}); give a numpy array, a torch "
                            "tensor or a scipy.sparse matrix of shape [num_nodes, F]") from exc
    if x.dim() == 1:
        x = x.view(-1, 1)
    if x.dim() != 2:
        raise DataError(f"features must be 2-D [num_nodes, F], got shape {tuple(x.shape)}; reshape them")
    values = x.coalesce().values() if x.layout == torch.sparse_coo else x
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        if x.layout == torch.sparse_coo:
            rows = torch.unique(x.coalesce().indices()[0][bad])
        else:
            rows = torch.nonzero(bad.any(dim=1)).view(-1)
        raise DataError(
            f"features hold {int(bad.sum())} NaN/inf values in {rows.numel()} rows (e.g. nodes "
            f"{rows[:10].tolist()}); replace them (e.g. with 0 or the column mean) before building the graph"
        )
    return x


def _is_nan_cast(label: Any) -> bool:
    """Whether ``label`` is an integer a NaN becomes when cast to int64 or int32 (never a real class)."""
    return isinstance(label, int) and not isinstance(label, bool) and label in NAN_CAST_LABELS


def _is_blank(label: Any) -> bool:
    """No label at all: ``None``, a float NaN or an empty string (what a CSV's empty cell reads as; ``adapt``'s
    support labels treat it so too)."""
    return label is None or (isinstance(label, float) and math.isnan(label)) or (isinstance(label, str)
                                                                               and not label.strip())


def _is_missing(label: Any, missing_label: Any) -> bool:
    if _is_blank(label) or _is_nan_cast(label):
        return True
    return missing_label is not None and label == missing_label


def _labels(labels: Any, missing_label: Any) -> tuple[Tensor, list[Hashable], int, int, int]:
    """Class ids ``0..C-1`` (-1 unlabelled), the user's labels of the classes, the nodes unlabelled by
    ``missing_label``, the nodes whose label is a NaN cast to an integer, and the nodes with no label at all
    (:func:`_is_blank`)."""
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().view(-1).tolist()
    elif isinstance(labels, np.ndarray):
        labels = labels.reshape(-1).tolist()
    else:
        labels = list(labels)
    present = [lab for lab in labels if not _is_missing(lab, missing_label)]
    try:
        hash(tuple(present))
    except TypeError as exc:
        raise DataError(f"labels must be hashable (int, str, ...) ({exc}); convert them, e.g. to strings") from exc
    uniq = list(dict.fromkeys(present))
    try:
        uniq = sorted(uniq)
    except TypeError:
        pass  # mixed types: keep the order of first appearance
    mapping = {lab: i for i, lab in enumerate(uniq)}
    y = torch.tensor([-1 if _is_missing(lab, missing_label) else mapping[lab] for lab in labels], dtype=torch.long)
    nan_cast = sum(1 for lab in labels if _is_nan_cast(lab))
    by_value = 0 if missing_label is None else sum(
        1 for lab in labels if not _is_blank(lab) and not _is_nan_cast(lab) and _is_missing(lab, missing_label))
    return y, uniq, by_value, nan_cast, sum(1 for lab in labels if _is_blank(lab))


def _negative_labels_note(class_names: Sequence[Hashable], y: Tensor) -> str | None:
    """A warning naming integer classes below zero kept as classes (e.g. -100, PyTorch's ``ignore_index``)."""
    neg = [(i, lab) for i, lab in enumerate(class_names)
           if isinstance(lab, int) and not isinstance(lab, bool) and lab < 0]
    if not neg:
        return None
    desc = ", ".join(f"{lab} ({int((y == i).sum())} nodes)" for i, lab in neg[:10])
    return (f"negative labels kept as classes: {desc}{' ...' if len(neg) > 10 else ''}; if they mean "
            f"\"unlabelled\" (e.g. -100, PyTorch's ignore_index), pass missing_label=<that value>")


def _edges(edge_index: Any, num_nodes: int, self_loops: str, notes: list[str]) -> Tensor:
    ei = torch.as_tensor(np.asarray(edge_index.cpu() if isinstance(edge_index, Tensor) else edge_index))
    if ei.numel() == 0:
        return torch.empty(2, 0, dtype=torch.long)
    if ei.dim() != 2 or ei.shape[0] != 2:
        hint = " (it looks like [E, 2]: transpose it)" if ei.dim() == 2 and ei.shape[1] == 2 else ""
        raise DataError(f"edge_index must have shape [2, E], got {tuple(ei.shape)}{hint}")
    if ei.is_floating_point():
        if not bool(torch.all(ei == ei.round())):
            raise DataError("edge_index holds non-integer node ids; give integer ids in [0, num_nodes)")
    ei = ei.to(torch.long)
    bad = (ei < 0) | (ei >= num_nodes)
    if bool(bad.any()):
        cols = bad.any(dim=0)
        examples = ei[:, cols][:, :5].t().tolist()
        raise DataError(
            f"{int(cols.sum())} of {ei.shape[1]} edges have node ids outside [0, {num_nodes}) (e.g. {examples}, "
            f"max id {int(ei.max())}); the graph has {num_nodes} nodes (rows of features/labels). Fix the ids or "
            "pass num_nodes"
        )
    loops = int((ei[0] == ei[1]).sum())
    if loops:
        if self_loops == "remove":
            ei, _ = remove_self_loops(ei)
            notes.append(f"removed {loops} self loops (GNN layers add their own)")
        elif self_loops != "keep":
            raise ConfigError(f"self_loops={self_loops!r} is invalid; use 'remove' or 'keep'")
    deduped = coalesce(ei, num_nodes=num_nodes)
    dups = ei.shape[1] - deduped.shape[1]
    if dups:
        notes.append(f"removed {dups} duplicate edges")
    if not is_undirected(deduped, num_nodes=num_nodes):
        sym = to_undirected(deduped, num_nodes=num_nodes)
        notes.append(f"the edges were directed: added {sym.shape[1] - deduped.shape[1]} reverse edges to make the "
                     "graph undirected")
        deduped = sym
    return deduped


def from_arrays(
    edge_index: Any,
    features: Any,
    labels: Any,
    *,
    name: str = "custom",
    num_nodes: int | None = None,
    split: SplitSpec | None = None,
    seed: int = 0,
    ways: int | None = None,
    shots: int | None = None,
    queries: int | None = None,
    missing_label: Any = MISSING_LABEL,
    self_loops: str = "remove",
    info: Mapping[str, Any] | None = None,
) -> FewShotGraph:
    """Build a few-shot graph from arrays, validating and explaining every problem.

    Args:
        edge_index: ``[2, E]`` integer node ids (numpy, torch or nested lists). Directed or duplicate edges are
            symmetrised / removed (and noted).
        features: ``[num_nodes, F]`` dense numpy/torch or scipy.sparse (kept sparse).
        labels: ``num_nodes`` labels of any hashable type; ``None``, NaN and ``missing_label`` mark unlabelled
            nodes, as do int64's and int32's minimum (a NaN cast with ``.long()``/``.int()``; warned). Other
            negative integer labels stay classes, with a warning. Labels are mapped to ``0..C-1`` in sorted
            order; ``info["class_names"][i]`` is class i's label.
        name: Graph name.
        num_nodes: Number of nodes; default: the number of feature rows.
        split: Class split over the mapped ids (``"a/b/c"`` counts, mapping, or JSON file); default about
            60/20/20 % of the classes with at least ``ways`` in each, or ``C-ways/0/ways`` when there are fewer
            than ``3 * ways`` classes. ``cmlgraph.fit`` redraws a default split for the ways it is given.
        seed: Seed of a counts split.
        ways: Episode ways to check feasibility for (optional).
        shots: Episode shots (optional; with ``queries``, classes with fewer labelled nodes are dropped).
        queries: Episode queries per class (optional).
        missing_label: Label value meaning "unlabelled" (default -1, as in PyG, for every entry point; None
            to keep every value as a class). Nodes treated as unlabelled this way are counted in a warning and
            in ``notes``.
        self_loops: ``"remove"`` (default) or ``"keep"``.
        info: Extra provenance stored in ``info``.

    Raises:
        DataError: Size mismatches, edge ids out of range, NaN/inf features, unusable labels.
        ConfigError: Too few classes for ``ways`` in a split, or a bad split/setting.
    """
    notes: list[str] = []
    x = _features(features)
    y, class_names, by_value, nan_cast, blank = _labels(labels, missing_label)
    n = int(num_nodes) if num_nodes is not None else int(x.shape[0])
    if x.shape[0] != n or y.numel() != n:
        raise DataError(
            f"size mismatch: features have {x.shape[0]} rows, labels have {y.numel()} entries and num_nodes is {n}; "
            "give one feature row and one label (None for unlabelled) per node"
        )
    ei = _edges(edge_index, n, self_loops, notes)
    if blank:  # said as docs/python-api.md promises (it was only a note): an empty label is easily a mistake
        msg = (f"{blank} of {n} nodes {agree(blank, 'has', 'have')} no label (None, NaN or a blank string): "
               f"{agree(blank, 'it is', 'they are')} unlabelled, kept as graph context but never drawn into a task")
        warn_user(msg)  # graph.notes says it too (assemble's count of unlabelled nodes)
    if by_value:
        msg = (f"{have(by_value, 'node')} the label {missing_label!r} and {agree(by_value, 'was', 'were')} "
               f"treated as unlabelled (missing_label={missing_label!r}); pass missing_label=None to keep "
               f"{missing_label!r} as a class")
        warn_user(msg)
        notes.append(msg)
    if nan_cast:
        msg = (f"{have(nan_cast, 'node')} the label {NAN_CAST_LABELS[0]} or {NAN_CAST_LABELS[1]}, what NaN "
               f"becomes when float labels are cast to integers (y.long(), y.int()); "
               f"{agree(nan_cast, 'it was', 'they were')} treated as unlabelled. Mark unlabelled nodes with "
               f"{MISSING_LABEL} (or keep the float labels: NaN is unlabelled)")
        warn_user(msg)
        notes.append(msg)
    negative = _negative_labels_note(class_names, y) if missing_label is not None else None  # None: kept on purpose
    if negative:
        warn_user(negative)
        notes.append(negative)
    if not class_names:
        raise DataError("no node has a label; give labels (None/NaN, or missing_label, marks unlabelled nodes) "
                        "for at least 2 classes" + (f" (all were {missing_label!r}: pass missing_label=None to keep "
                                                   "them)" if by_value else ""))
    classes = list(range(len(class_names)))
    if shots is not None or queries is not None:
        need = int(shots or 0) + int(queries or 0)
        counts = torch.bincount(y[y >= 0], minlength=len(class_names))
        small = [c for c in classes if int(counts[c]) < need]
        if small:
            desc = ", ".join(f"{class_names[c]!r} ({int(counts[c])} nodes)" for c in small[:20])  # the user's labels
            msg = (f"dropped {counted(len(small), 'class', 'classes')} with fewer than shots+queries={need} labelled "
                   f"nodes: {desc}"
                   f"{' ...' if len(small) > 20 else ''}")
            warn_user(msg)
            notes.append(msg)
            classes = [c for c in classes if c not in set(small)]
            y = torch.where(torch.isin(y, torch.tensor(small, dtype=torch.long)), torch.full_like(y, -1), y)
        if ways is not None and len(classes) < ways:
            hint = (f"; {by_value} nodes labelled {missing_label!r} were treated as unlabelled: pass "
                    f"missing_label=None to keep them as a class" if by_value else "")
            raise ConfigError(
                f"only {have(len(classes), 'class')} at least shots+queries={need} labelled nodes, fewer than "
                f"ways={ways}; lower shots or queries, or label more nodes{hint}"
            )
    split = split_by_labels(split, class_names)  # a mapping may list the user's labels
    meta = dict(info or {})
    meta.update(class_names=class_names, custom=True, split_spec=split, missing_label=missing_label,
                missing_label_nodes=by_value, nan_cast_label_nodes=nan_cast)
    graph = assemble(name, x, ei, y, split=default_split(len(classes), ways) if split is None else split,
                     seed=seed, notes=notes, info=meta, classes=classes)
    if ways is not None:
        check_split_ways(graph, ways, int(shots or 0) + int(queries or 0), default=split is None)
    return graph


def from_pyg(data: Any, **kwargs: Any) -> FewShotGraph:
    """Build a few-shot graph from a ``torch_geometric.data.Data`` with ``x``, ``edge_index`` and ``y``.

    Keyword arguments are those of :func:`from_arrays`.

    Raises:
        DataError: ``data`` lacks ``x`` or ``y`` (plus everything :func:`from_arrays` checks).
    """
    for attr in ("x", "y", "edge_index"):
        if getattr(data, attr, None) is None:
            raise DataError(f"the Data object has no '{attr}'; set data.{attr} (features x, labels y, edge_index)")
    kwargs.setdefault("num_nodes", int(data.num_nodes))
    y = data.y.view(-1) if data.y.dim() > 1 and data.y.shape[-1] == 1 else data.y
    if y.dim() != 1:
        raise DataError(f"data.y must be one label per node, got shape {tuple(data.y.shape)}; "
                        "multi-label graphs are not supported")
    return from_arrays(data.edge_index, data.x, y, **kwargs)


def from_networkx(
    graph: Any, feature_attr: str = "x", label_attr: str = "y", **kwargs: Any
) -> FewShotGraph:
    """Build a few-shot graph from a networkx graph whose nodes carry feature and label attributes.

    Nodes are numbered in ``graph.nodes`` order (``info["node_ids"]`` keeps the original ids). A node without
    ``label_attr`` (or with the label ``missing_label``, -1 by default) is unlabelled. An undirected graph's edges
    are used in both directions; a directed graph is symmetrised (noted). Keyword arguments are those of
    :func:`from_arrays`.

    Raises:
        DataError: Nodes without ``feature_attr`` or with feature vectors of different lengths.
    """
    nodes: Sequence[Hashable] = list(graph.nodes)
    index = {v: i for i, v in enumerate(nodes)}
    no_feat = [v for v in nodes if graph.nodes[v].get(feature_attr) is None]
    if no_feat:
        raise DataError(f"{have(len(no_feat), 'node')} no '{feature_attr}' attribute (e.g. {no_feat[:5]}); give every "
                        f"node a feature vector, or pass feature_attr=<the attribute name>")
    rows = [np.asarray(graph.nodes[v][feature_attr], dtype=np.float32).reshape(-1) for v in nodes]
    lengths = sorted({r.shape[0] for r in rows})
    if len(lengths) > 1:
        raise DataError(f"node feature vectors ('{feature_attr}') have different lengths {lengths}; make them equal")
    x = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    labels = [graph.nodes[v].get(label_attr) for v in nodes]
    pairs = [(index[u], index[v]) for u, v in graph.edges()]
    if not graph.is_directed():  # networkx lists an undirected edge once: both directions are meant
        pairs += [(v, u) for u, v in pairs if u != v]
    edges = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    meta = dict(kwargs.pop("info", None) or {})
    meta["node_ids"] = nodes
    if graph.is_directed():
        meta["directed_input"] = True
    return from_arrays(edges, x, labels, info=meta, **kwargs)


__all__ = ["from_arrays", "from_networkx", "from_pyg"]
