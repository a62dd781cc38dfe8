"""PyG-backed loaders on the real shared files: counts from the MANIFESTs, sparse features, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from cmlgraph.errors import DataError
from cmlgraph.graphs import load_graph

EXPECTED = {
    "cora": (2708, 10556, 1433, 7),
    "citeseer": (3327, 9104, 3703, 6),
    "coauthor-cs": (18333, 163788, 6805, 15),
    "amazon-computers": (13752, 491722, 767, 10),
    "amazon-photo": (7650, 238162, 745, 8),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_counts_match_manifest(name: str, shared_root: Path) -> None:
    g = load_graph(name, shared_root)
    assert (g.num_nodes, g.num_edges, g.num_features, g.num_classes) == EXPECTED[name]
    assert g.x.layout == torch.sparse_coo and g.sparse_features
    assert not g.partial
    assert int((g.y < 0).sum()) == (15 if name == "citeseer" else 0)  # CiteSeer: 15 ids without a label (issue 12)
    parts = [set(g.splits[k]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    row, col = g.edge_index
    assert bool((row != col).all())
    assert torch.unique(row * g.num_nodes + col).numel() == g.num_edges  # no duplicates


@pytest.mark.slow
def test_amazon_computers_val_falls_back_to_train(shared_root: Path) -> None:
    g = load_graph("amazon-computers", shared_root)
    assert len(g.splits["train"]) == 5 and len(g.splits["test"]) == 5 and g.splits["val"] == []
    assert g.episode_classes("val") == g.splits["train"]
    assert any("'val' split is empty" in n for n in g.notes)


@pytest.mark.slow
def test_split_override_by_counts_and_file(shared_root: Path, tmp_path: Path) -> None:
    g = load_graph("cora", shared_root, split="3/3/1", seed=4)
    assert [len(g.splits[k]) for k in ("train", "val", "test")] == [3, 3, 1]
    f = tmp_path / "split.json"
    f.write_text('{"train": [0, 1, 2, 3], "val": [4], "test": [5, 6]}')
    g = load_graph("cora", shared_root, split=str(f))
    assert g.splits == {"train": [0, 1, 2, 3], "val": [4], "test": [5, 6]}


@pytest.mark.slow
def test_pubmed_missing_allx(shared_root: Path) -> None:
    with pytest.raises(DataError, match=r"ind\.pubmed\.allx.*https://github\.com/kimiyoung/planetoid/raw/master/"
                                         r"data/ind\.pubmed\.allx"):
        load_graph("pubmed", shared_root)


@pytest.mark.slow
def test_corrupted_planetoid_file(shared_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(shared_root / "planetoid", root / "planetoid",
                    ignore=shutil.ignore_patterns("*pubmed*", "*citeseer*", "MANIFEST.md"))
    target = root / "planetoid" / "ind.cora.graph"
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[500] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"ind\.cora\.graph.*fails its checksum: expected sha256:58f13302"):
        load_graph("cora", root)


@pytest.mark.slow
def test_corrupted_archive(shared_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "amazon_photo").mkdir(parents=True)
    data = bytearray((shared_root / "amazon_photo" / "amazon-photo.zip").read_bytes())
    data[-200] ^= 0xFF
    (root / "amazon_photo" / "amazon-photo.zip").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"amazon-photo\.zip.*fails its checksum"):
        load_graph("amazon-photo", root, cache=tmp_path / "cache")


def test_missing_root_names_file_and_url(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"ms_academic_cs\.npz.*gnn-benchmark/raw/master/data/npz/ms_academic_cs"):
        load_graph("coauthor-cs", tmp_path / "empty")
