"""User graphs from PyG Data, networkx and arrays; every bad input gets its own message."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.data import Data

from cmlgraph.errors import ConfigError, DataError
from cmlgraph.graphs import from_arrays, from_networkx, from_pyg


def test_arrays_labels_mapping_and_edges(triangles) -> None:
    g = triangles()
    assert g.info["class_names"] == ["a", "b"] and g.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert g.num_edges == 14  # 7 undirected edges, both directions
    assert any("reverse edges" in n for n in g.notes)


def test_duplicates_and_self_loops() -> None:
    ei = torch.tensor([[0, 1, 1, 0, 2], [1, 0, 0, 0, 2]])
    g = from_arrays(ei, np.ones((3, 2)), [0, 1, 1], split={"train": [0], "test": [1]})
    assert g.num_edges == 2
    assert any("removed 2 self loops" in n for n in g.notes)
    assert any("removed 1 duplicate edges" in n for n in g.notes)


def test_scipy_sparse_features_stay_sparse() -> None:
    x = sp.random(10, 30, density=0.1, format="csr", random_state=0)
    g = from_arrays(np.array([[0, 1], [1, 2]]).T, x, list(range(5)) * 2, split="3/1/1")
    assert g.x.layout == torch.sparse_coo and torch.allclose(g.x.to_dense(), torch.tensor(x.toarray()).float())


def test_from_pyg() -> None:
    data = Data(x=torch.randn(6, 3), edge_index=torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]),
                y=torch.tensor([0, 0, 1, 1, 2, -1]))
    g = from_pyg(data, split="1/1/1")
    assert g.num_nodes == 6 and g.y.tolist()[-1] == -1 and g.num_classes == 3
    with pytest.raises(DataError, match="has no 'y'"):
        from_pyg(Data(x=torch.randn(2, 2), edge_index=torch.zeros(2, 0, dtype=torch.long)))


def test_features_of_a_graph_on_a_gpu_come_to_the_host_like_its_edges_and_labels() -> None:
    """``from_pyg(data.to("cuda"))``: the edges and labels came to the host, the features stayed on the GPU (the
    host-side plan building then read device features). A tensor subclass stands in for a GPU tensor: its
    ``cpu()`` is the move."""

    class OnDevice(torch.Tensor):
        moved: list[bool] = []

        def cpu(self, *args, **kwargs):
            OnDevice.moved.append(True)
            return torch.Tensor(self.as_subclass(torch.Tensor)).clone()

    x = torch.randn(6, 3).as_subclass(OnDevice)
    data = Data(x=x, edge_index=torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]), y=torch.tensor([0, 0, 1, 1, 2, 2]))
    g = from_pyg(data, split="1/1/1")
    assert OnDevice.moved and type(g.x) is torch.Tensor


def test_from_networkx() -> None:
    G = nx.DiGraph()
    for i, name in enumerate("pqrstu"):
        G.add_node(name, x=[float(i), 1.0], y="cat" if i < 3 else "dog")
    G.add_edges_from([("p", "q"), ("q", "r"), ("s", "t"), ("t", "u"), ("r", "s")])
    g = from_networkx(G, split={"train": [0], "test": [1]})
    assert g.num_nodes == 6 and g.num_edges == 10 and g.info["node_ids"] == list("pqrstu")
    assert g.info["class_names"] == ["cat", "dog"]
    G.add_node("v")
    with pytest.raises(DataError, match=r"1 node has no 'x' attribute \(e.g. \['v'\]\)"):
        from_networkx(G)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"features": np.ones((5, 2))}, DataError, r"features have 5 rows, labels have 6"),
        ({"edge_index": [[0, 9], [1, 7]]}, DataError,
         r"1 of 2 edges have node ids outside \[0, 6\) \(e.g. \[\[9, 7\]\], max id 9\)"),
        ({"edge_index": np.array([[0, 1], [1, 2], [3, 4]])}, DataError, r"looks like \[E, 2\]: transpose"),
        ({"features": np.array([[np.nan, 1]] + [[0, 1]] * 5)}, DataError, r"1 NaN/inf values in 1 rows"),
        ({"ways": 3}, ConfigError, r"'train' split has 1 class \(0\) but ways=3"),
        ({"labels": [None] * 6}, DataError, r"no node has a label"),
    ],
)
def test_bad_inputs(kwargs, exc, match) -> None:
    args = {"edge_index": [[0, 1], [1, 2]], "features": np.ones((6, 2)), "labels": [0, 0, 0, 1, 1, 1],
            "split": {"train": [0], "test": [1]}}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        from_arrays(args.pop("edge_index"), args.pop("features"), args.pop("labels"), **args)


def test_small_classes_dropped_with_warning() -> None:
    labels = ["a"] * 10 + ["b"] * 10 + ["c"] * 2 + ["d"] * 10 + ["e"] * 10
    with pytest.warns(UserWarning, match=r"dropped 1 class with fewer than shots\+queries=4.*'c' \(2 nodes\)"):
        g = from_arrays([[0], [1]], np.ones((42, 2)), labels, ways=2, shots=1, queries=3, split="2/0/2")
    assert any("'c'" in n for n in g.notes)
    assert 2 not in sum(g.splits.values(), []) and (g.y == 2).sum() == 0
    with pytest.raises(ConfigError, match=r"only 0 classes have at least shots\+queries=20"), pytest.warns(UserWarning):
        from_arrays([[0], [1]], np.ones((42, 2)), labels, ways=2, shots=10, queries=10)


def test_default_split_with_few_classes() -> None:
    g = from_arrays([[0], [1]], np.ones((48, 2)), [i % 12 for i in range(48)], ways=5)
    assert len(g.splits["test"]) == 5 and g.splits["val"] == [] and len(g.splits["train"]) == 7
    assert any("'val' split is empty" in n for n in g.notes)
    with pytest.raises(ConfigError, match=r"'train' split has 3 classes .* but ways=5; use ways <= 4"):
        from_arrays([[0], [1]], np.ones((40, 2)), [i % 8 for i in range(40)], ways=5)


def test_labels_cast_from_nan_are_unlabelled_and_said() -> None:
    """Issue 19 item 2 (cf. pytorch_geometric #7860): float labels holding NaN, cast with ``.long()``, give int64's
    minimum; those nodes are unlabelled (never a class of their own) and a warning and a note say how many."""
    y = torch.tensor([0.0, 0, 0, 1, 1, 1, 2, 2, 2, float("nan"), float("nan"), float("nan"), float("nan")])
    cast = y.long()
    data = Data(x=torch.randn(13, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), y=cast)
    with pytest.warns(UserWarning, match=r"4 nodes have the label -9223372036854775808 or -2147483648, what NaN "
                                         r"becomes.*treated as unlabelled"):
        g = from_pyg(data, split="1/1/1")
    assert g.num_classes == 3 and g.info["class_names"] == [0, 1, 2] and g.y[9:].tolist() == [-1] * 4
    assert g.info["nan_cast_label_nodes"] == 4 and any("what NaN becomes" in n for n in g.notes)
    with pytest.warns(UserWarning, match="2 nodes have the label"):  # .int() casts give int32's minimum
        g32 = from_arrays([[0], [1]], np.ones((11, 2)), y[:11].int(), split="1/1/1")
    assert g32.num_classes == 3
    with pytest.warns(UserWarning, match="what NaN becomes"):  # even with missing_label=None: never a class
        assert from_pyg(data, split="1/1/1", missing_label=None).num_classes == 3


def test_other_negative_labels_stay_classes_with_a_warning() -> None:
    labels = [0] * 4 + [1] * 4 + [-100] * 4 + [-1] * 2
    with pytest.warns(UserWarning, match=r"negative labels kept as classes: -100 \(4 nodes\).*missing_label="):
        g = from_arrays([[0], [1]], np.ones((14, 2)), labels, split="1/1/1")
    assert g.num_classes == 3 and (g.y == -1).sum() == 2  # -1 is unlabelled (the default missing_label)
