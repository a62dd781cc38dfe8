"""graph.save(PATH) / load_graph(PATH): a safe .npz (no pickle) that keeps node ids, label names and the split."""

from __future__ import annotations

import json
import zipfile

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import cmlgraph
from cmlgraph.errors import DataError
from cmlgraph.graphs.storage import read_graph


def _same(a, b):
    assert a.name == b.name and a.splits == b.splits and a.partial == b.partial and a.notes == b.notes
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.y, b.y)
    xa = a.x.to_dense() if a.x.is_sparse else a.x
    xb = b.x.to_dense() if b.x.is_sparse else b.x
    assert a.x.is_sparse == b.x.is_sparse and torch.equal(xa, xb)


def test_networkx_ids_and_string_labels_round_trip(tmp_path):
    g = nx.Graph()
    ids = ["alice", 7, 2.5, True, "bob"]
    for i, v in enumerate(ids):
        g.add_node(v, x=[float(i), 1.0], y=["red", "blue", None, "red", "blue"][i])
    g.add_edges_from([("alice", 7), (7, 2.5), (True, "bob")])
    graph = cmlgraph.from_networkx(g, name="mixed", split="1/0/1")
    path = graph.save(tmp_path / "mixed")  # .npz is appended
    assert path.name == "mixed.npz"
    back = cmlgraph.load_graph(path)
    _same(graph, back)
    assert back.info["node_ids"] == ids and [type(v) for v in back.info["node_ids"]] == [type(v) for v in ids]
    assert back.info["class_names"] == ["blue", "red"]
    with np.load(path, allow_pickle=False) as z:  # plain arrays only: opens without pickle
        assert sorted(z.files) == ["edge_index", "meta", "x", "y"]
        assert all(z[k].dtype != object for k in z.files)


def test_sparse_features_stay_sparse(tmp_path):
    x = sp.random(30, 50, density=0.05, format="csr", random_state=0, dtype=np.float32)
    labels = np.arange(30) % 4
    edges = np.array([np.arange(29), np.arange(1, 30)])
    graph = cmlgraph.from_arrays(edges, x, labels, name="bow", split="2/1/1")
    back = cmlgraph.load_graph(str(graph.save(tmp_path / "bow.npz")))
    _same(graph, back)
    assert back.x.is_sparse


def test_ids_that_would_change_are_refused_and_bad_files_named(tmp_path):
    g = nx.Graph()
    g.add_node((1, 2), x=[0.0], y=0)
    g.add_node((3, 4), x=[1.0], y=1)
    graph = cmlgraph.from_networkx(g, split="1/0/1")
    with pytest.raises(DataError, match=r"info\['node_ids'\]\[0\] = \(1, 2\) \(tuple\) cannot be stored exactly"):
        graph.save(tmp_path / "tuples.npz")
    assert not list(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(DataError, match="does not exist; write one with graph.save"):
        cmlgraph.load_graph(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="is not a readable cmlgraph graph file"):
        read_graph(tmp_path / "junk.npz")
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as z:  # an .npz of someone else's
        z.writestr("meta.npy", b"")
    with pytest.raises(DataError, match="is not a readable cmlgraph graph file"):
        read_graph(tmp_path / "other.npz")


def test_sparse_indices_outside_the_shape_are_refused(tmp_path):
    graph = cmlgraph.from_arrays([[0], [1]], sp.eye(4, format="csr", dtype=np.float32), [0, 1, 0, 1], split="1/0/1")
    path = graph.save(tmp_path / "g.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["x_indices"][1, 0] = 10**6
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="is not a readable cmlgraph graph file"):
        read_graph(path)


def test_a_pickled_array_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    meta = np.frombuffer(json.dumps({"format": "cmlgraph-graph"}).encode(), dtype=np.uint8)
    np.savez(path, meta=meta, x=np.array([object()], dtype=object), y=np.zeros(1, np.int64),
             edge_index=np.zeros((2, 0), np.int64))
    with pytest.raises(DataError, match="not a readable cmlgraph graph file"):
        read_graph(path)
