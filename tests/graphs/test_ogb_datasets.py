"""The OGB loader on a tiny hand-written raw folder in OGB's layout (no real ogbn data is available offline)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from cmlgraph.errors import DataError
from cmlgraph.graphs import load_graph


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")


def test_tiny_ogb_layout(tmp_path: Path) -> None:
    raw = tmp_path / "root" / "ogbn_arxiv" / "raw"
    n, classes = 50, 40
    edges = [f"{i},{(i + 1) % n}" for i in range(n)]  # directed cycle
    _write(raw / "edge.csv.gz", edges)
    _write(raw / "num-node-list.csv.gz", [str(n)])
    _write(raw / "num-edge-list.csv.gz", [str(len(edges))])
    _write(raw / "node-feat.csv.gz", [",".join(["0.5"] * 3) for _ in range(n)])
    _write(raw / "node-label.csv.gz", [str(i % classes) for i in range(n)])
    cache = tmp_path / "cache"
    g = load_graph("ogbn-arxiv", tmp_path / "root", cache=cache)
    assert (g.num_nodes, g.num_edges, g.num_features, g.num_classes) == (n, 2 * n, 3, classes)
    assert [len(g.splits[k]) for k in ("train", "val", "test")] == [20, 10, 10]
    assert g.x.dtype == torch.float32
    assert (cache / "processed" / "ogbn-arxiv.pt").is_file()
    g2 = load_graph("ogbn-arxiv", tmp_path / "root", cache=cache)  # from the processed cache
    assert torch.equal(g2.edge_index, g.edge_index)


def test_missing_ogb(shared_root: Path) -> None:
    with pytest.raises(DataError, match=r"edge\.csv\.gz.*snap\.stanford\.edu/ogb/data/nodeproppred/arxiv\.zip"):
        load_graph("ogbn-arxiv", shared_root)
