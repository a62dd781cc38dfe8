"""Save a :class:`FewShotGraph` to one ``.npz`` file and read it back, safely (no pickle anywhere).

Why: ``cmlgraph predict --graph FILE`` and ``cmlgraph.load_graph(PATH)`` need a user's graph, with the user's own
node ids and label names, in a file that can be opened without running code. The file is a numpy ``.npz``
archive read with ``allow_pickle=False``: numeric arrays for the features (dense, or the COO parts of sparse
features), the edges and the labels, plus one ``meta`` entry holding UTF-8 JSON for the name, the class split,
the notes and ``info`` (node ids, class names, provenance).

What round-trips: node ids (``info["node_ids"]``) and label names (``info["class_names"]``) that JSON keeps as
they are: ``str``, ``int``, ``float`` (finite), ``bool`` and ``None``. Tuples or other objects would come back as
something else (a tuple as a list), so saving them is refused with a :class:`DataError` naming the value. Other
``info`` entries that JSON cannot hold are left out of the file and listed in a warning.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmlgraph.errors import DataError
from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.sparse import is_sparse
from cmlgraph.user_warnings import warn_user

FORMAT = "cmlgraph-graph"
FORMAT_VERSION = 1
#: ``info`` entries whose values must survive the file exactly (they name the user's nodes and classes).
EXACT_KEYS = ("node_ids", "class_names")


def _json_scalar_ok(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return False


def _plain(value: Any) -> Any:
    """numpy scalars → Python scalars (JSON cannot write ``np.int64``)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_exact(key: str, values: Any) -> list[Any]:
    values = [_plain(v) for v in list(values)]
    for i, v in enumerate(values):
        if not _json_scalar_ok(v):
            raise DataError(f"info[{key!r}][{i}] = {v!r} ({type(v).__name__}) cannot be stored exactly; graph.save "
                            f"keeps {key} of type str, int, float, bool or None. Convert them (e.g. to strings) "
                            f"before saving")
    return values


def _meta(graph: FewShotGraph) -> dict[str, Any]:
    info: dict[str, Any] = {}
    dropped = []
    for key, value in graph.info.items():
        if key in EXACT_KEYS:
            info[key] = _check_exact(key, value)
            continue
        try:
            text = json.dumps(value, allow_nan=False)
            if json.loads(text) != value:
                raise ValueError("changes under JSON")
        except (TypeError, ValueError):
            dropped.append(key)
            continue
        info[key] = value
    if dropped:
        warn_user(f"graph.save: info entries {dropped} are not plain JSON and were not saved")
    return {"format": FORMAT, "version": FORMAT_VERSION, "name": graph.name,
            "splits": {k: [int(c) for c in v] for k, v in graph.splits.items()}, "partial": bool(graph.partial),
            "notes": [str(n) for n in graph.notes], "info": info, "sparse": bool(is_sparse(graph.x))}


def save_graph(graph: FewShotGraph, path: str | os.PathLike[str]) -> Path:
    """Write ``graph`` to ``path`` (``.npz`` is appended when missing), atomically; returns the path written.

    Raises:
        DataError: Node ids or class names that would not come back the same (see the module docstring).
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = _meta(graph)
    arrays: dict[str, np.ndarray] = {
        "edge_index": graph.edge_index.detach().cpu().numpy().astype(np.int64),
        "y": graph.y.detach().cpu().numpy().astype(np.int64),
        "meta": np.frombuffer(json.dumps(meta, allow_nan=False).encode("utf-8"), dtype=np.uint8),
    }
    x = graph.x.detach().cpu()
    if meta["sparse"]:
        coo = (x.to_sparse_coo() if x.layout != torch.sparse_coo else x).coalesce()
        arrays["x_indices"] = coo.indices().numpy().astype(np.int64)
        arrays["x_values"] = coo.values().numpy().astype(np.float32)
        arrays["x_shape"] = np.asarray(coo.shape, dtype=np.int64)
    else:
        arrays["x"] = x.numpy().astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def is_graph_file(name: Any) -> bool:
    """Whether ``name`` refers to a saved graph file rather than a registry name."""
    return isinstance(name, (str, os.PathLike)) and Path(os.fspath(name)).suffix == ".npz"


def read_graph(path: str | os.PathLike[str]) -> FewShotGraph:
    """Read a graph written by :func:`save_graph` (``allow_pickle=False``: no code runs on load).

    Raises:
        DataError: The file is missing or is not a cmlgraph graph file (wrong keys, corrupted, other format).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"graph file {str(path)!r} does not exist; write one with graph.save(PATH) or give a "
                        f"registered dataset name (`cmlgraph datasets list`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError("no cmlgraph-graph metadata")
            if meta["sparse"]:
                # check_invariants: indices outside the shape are an error here, not a crash later
                x = torch.sparse_coo_tensor(torch.from_numpy(z["x_indices"]), torch.from_numpy(z["x_values"]),
                                            tuple(int(s) for s in z["x_shape"]), check_invariants=True).coalesce()
            else:
                x = torch.from_numpy(z["x"].astype(np.float32))
            edge_index = torch.from_numpy(z["edge_index"].astype(np.int64))
            y = torch.from_numpy(z["y"].astype(np.int64))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise DataError(f"{str(path)!r} is not a readable cmlgraph graph file ({exc.__class__.__name__}: {exc}); "
                        f"write it with graph.save(PATH)") from None
    if meta.get("version", 0) > FORMAT_VERSION:
        raise DataError(f"{str(path)!r} was written by a newer cmlgraph (format {meta['version']}); upgrade cmlgraph")
    n = int(y.numel())
    if x.shape[0] != n or edge_index.dim() != 2 or edge_index.shape[0] != 2 or (
            edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n)):
        raise DataError(f"{str(path)!r} is inconsistent (features {tuple(x.shape)}, {n} labels, edges "
                        f"{tuple(edge_index.shape)}, keys {sorted(files)}); write it again with graph.save(PATH)")
    info = dict(meta.get("info") or {})
    return FewShotGraph(name=str(meta["name"]), x=x, edge_index=edge_index, y=y,
                        splits={k: [int(c) for c in v] for k, v in meta["splits"].items()},
                        partial=bool(meta.get("partial", False)), notes=list(meta.get("notes") or []), info=info)


__all__ = ["is_graph_file", "read_graph", "save_graph"]
