"""GPN loader on the real partial Amazon-Clothing files and the edges-only Amazon-Electronics."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from cmlgraph.errors import DataError
from cmlgraph.graphs import load_graph

TRAIN_URL = "https://github.com/kaize0409/GPN_Few-shot/raw/master/few_shot_data/Amazon_clothing_train.mat"


@pytest.mark.slow
def test_clothing_without_train_mat_fails_clearly(shared_root: Path) -> None:
    with pytest.raises(DataError) as err:
        load_graph("amazon-clothing", shared_root)
    msg = str(err.value)
    assert "Amazon_clothing_train.mat" in msg and TRAIN_URL in msg and "--allow-partial" in msg


@pytest.mark.slow
def test_clothing_partial(shared_root: Path) -> None:
    g = load_graph("amazon-clothing", shared_root, allow_partial=True)
    assert (g.num_nodes, g.num_edges, g.num_features, g.num_classes) == (24919, 183360, 9034, 20)
    assert g.partial and any("PARTIAL" in n for n in g.notes)
    assert g.x.layout == torch.sparse_coo
    assert int((g.y >= 0).sum()) == 9360
    assert [len(g.splits[k]) for k in ("train", "val", "test")] == [10, 5, 5]
    assert set(sum(g.splits.values(), [])) == set(g.class_counts())
    assert g.splits == load_graph("amazon-clothing", shared_root, allow_partial=True).splits
    assert g.splits != load_graph("amazon-clothing", shared_root, allow_partial=True, seed=1).splits
    nnz_rows = torch.unique(g.x.indices()[0])
    assert torch.equal(nnz_rows, torch.nonzero(g.y >= 0).view(-1))  # features exactly on the test.mat nodes
    g2 = load_graph("amazon-clothing", shared_root, allow_partial=True, split="12/4/4")
    assert [len(g2.splits[k]) for k in ("train", "val", "test")] == [12, 4, 4]


@pytest.mark.slow
def test_electronics_edges_only_fails_even_with_allow_partial(shared_root: Path) -> None:
    for allow in (False, True):
        with pytest.raises(DataError, match=r"no labels or features.*Amazon_eletronics_train\.mat.*"
                                             r"Amazon_eletronics_test\.mat"):
            load_graph("amazon-electronics", shared_root, allow_partial=allow)


@pytest.mark.slow
def test_corrupted_network(shared_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "root" / "Amazon_clothing"
    folder.mkdir(parents=True)
    for f in ("Amazon_clothing_network", "Amazon_clothing_test.mat"):
        shutil.copy(shared_root / "Amazon_clothing" / f, folder / f)
        (folder / f).chmod(0o644)
    data = bytearray((folder / "Amazon_clothing_network").read_bytes())
    data[10] = ord("9") if data[10] != ord("9") else ord("8")
    (folder / "Amazon_clothing_network").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"Amazon_clothing_network.*fails its checksum: expected sha256:6362cf42"):
        load_graph("amazon-clothing", tmp_path / "root", allow_partial=True)


def test_gpn_layout_with_full_files(tmp_path: Path) -> None:
    """A tiny hand-made GPN dataset in the repository layout (few_shot_data/) loads with the GPN split."""
    import dataclasses

    import numpy as np
    import scipy.io
    import scipy.sparse as sp

    from cmlgraph.graphs.registry import REGISTRY

    data = tmp_path / "root" / "few_shot_data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = 60
    edges = np.array([[i, (i + 1) % n] for i in range(n)] + [[(i + 1) % n, i] for i in range(n)])
    np.savetxt(data / "dblp_network", edges, fmt="%d", delimiter="\t")
    labels = np.arange(n) % 6
    train_nodes, test_nodes = np.nonzero(labels < 4)[0], np.nonzero(labels >= 4)[0]
    for nodes, fname in ((train_nodes, "dblp_train.mat"), (test_nodes, "dblp_test.mat")):
        attrs = sp.csc_matrix(rng.integers(0, 2, size=(nodes.size, 7)).astype(np.float64))
        scipy.io.savemat(data / fname, {"Index": nodes.reshape(1, -1), "Attributes": attrs,
                                        "Label": labels[nodes].reshape(-1, 1).astype(np.float64)})
    spec = dataclasses.replace(REGISTRY["dblp"], params={"num_val": 1, "partial_split": "1/0/1"})
    g = spec.loader(_request(spec, tmp_path))
    assert g.num_nodes == n and g.num_edges == 2 * n and g.num_features == 7 and not g.partial
    assert g.splits["test"] == [4, 5] and len(g.splits["val"]) == 1 and len(g.splits["train"]) == 3


def _request(spec, tmp_path: Path):
    from cmlgraph.graphs.spec import LoadRequest

    return LoadRequest(spec=spec, root=tmp_path / "root", cache=tmp_path / "cache")
