"""Loaders of the OGB node-property graphs ogbn-arxiv and ogbn-products.

Why not ``ogb.nodeproppred.NodePropPredDataset`` itself: it writes ``processed/`` into the dataset folder (the data
root may be read-only), asks questions on stdin (``input()``) when a version marker is missing or a download is
large, and reloads its processed file with ``torch.load`` in a form that ``weights_only=True`` refuses. We reuse
ogb's raw-file reader (``ogb.io.read_graph_raw.read_csv_graph_raw``) on the OGB layout ``<root>/ogbn_arxiv/raw/``
and cache plain tensors in ``<cache>/processed/`` (loaded with ``weights_only=True``). Downloads fetch OGB's zip
(no checksum is published) into ``<cache>/raw/`` and extract it there with path checks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from cmlgraph.errors import DataError
from cmlgraph.graphs.assemble import assemble, undirected_edges
from cmlgraph.graphs.download import download_file, extract_zip
from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.spec import DatasetSpec, LoadRequest, RawFile, find_raw

OGB_URL = "http://snap.stanford.edu/ogb/data/nodeproppred/"
OGB_CITATION = ("Weihua Hu, Matthias Fey, Marinka Zitnik, Yuxiao Dong, Hongyu Ren, Bowen Liu, Michele Catasta, "
                "Jure Leskovec. Open Graph Benchmark: Datasets for Machine Learning on Graphs. NeurIPS 2020")
_RAW_FILES = ("edge.csv.gz", "node-feat.csv.gz", "node-label.csv.gz", "num-node-list.csv.gz",
              "num-edge-list.csv.gz")


def load_ogb(req: LoadRequest) -> FewShotGraph:
    """Load an OGB node-property dataset from its raw csv files; edges are made undirected.

    Raises:
        DataError: A raw file is missing or unreadable.
    """
    paths = {name: req.require(name) for name in _RAW_FILES}
    raw_dir = paths["edge.csv.gz"].parent
    processed = req.cache / "processed" / f"{req.spec.name}.pt"
    stamp = [int(p.stat().st_size) for p in paths.values()]
    tensors = None
    if processed.is_file():
        saved = torch.load(processed, weights_only=True)
        if saved.get("stamp", torch.empty(0)).tolist() == stamp:
            tensors = saved
    if tensors is None:
        import pandas as pd
        from ogb.io.read_graph_raw import read_csv_graph_raw

        try:
            graph = read_csv_graph_raw(str(raw_dir), add_inverse_edge=False)[0]
            labels = pd.read_csv(paths["node-label.csv.gz"], compression="gzip", header=None).values
        except (OSError, ValueError) as exc:
            raise DataError(f"OGB raw files under {str(raw_dir)!r} cannot be read ({exc}); download them again "
                            f"from {req.spec.file('edge.csv.gz').url}") from exc
        num_nodes = int(graph["num_nodes"])
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        y = np.where(np.isnan(y), -1, y).astype(np.int64)
        tensors = {
            "x": torch.from_numpy(np.asarray(graph["node_feat"], dtype=np.float32)),
            "edge_index": undirected_edges(torch.from_numpy(graph["edge_index"].astype(np.int64)), num_nodes),
            "y": torch.from_numpy(y),
            "stamp": torch.tensor(stamp),
        }
        processed.parent.mkdir(parents=True, exist_ok=True)
        tmp = processed.with_suffix(".pt.part")
        torch.save(tensors, tmp)
        tmp.replace(processed)
    info = {"source": req.spec.file("edge.csv.gz").url, "citation": req.spec.citation, "raw_dir": str(raw_dir)}
    notes = ["edges loaded as undirected (both directions), as usual for few-shot node classification"]
    split = req.split if req.split is not None else req.spec.default_split
    return assemble(req.spec.name, tensors["x"], tensors["edge_index"], tensors["y"], split=split, seed=req.seed,
                    notes=notes, info=info)


def download_ogb(spec: DatasetSpec, root: Path, cache: Path) -> list[Path]:
    """Download OGB's zip for ``spec`` into ``<cache>/raw`` and extract it to the OGB layout there."""
    if all(find_raw(f, root, cache) is not None for f in spec.files):
        return []
    url = spec.file("edge.csv.gz").url
    assert url is not None
    download_name = spec.params["download_name"]
    raw_root = cache / "raw"
    archive = download_file(url, raw_root / f"{download_name}.zip", None)
    try:
        extract_zip(archive, raw_root)
    finally:
        archive.unlink(missing_ok=True)
    target = raw_root / spec.params["dir_name"]
    if target.exists():
        shutil.rmtree(target)
    (raw_root / download_name).rename(target)
    return [target]


def _ogb_spec(name: str, download_name: str, stats: dict[str, int], split: str, doc: str) -> DatasetSpec:
    dir_name = name.replace("-", "_")
    url = f"{OGB_URL}{download_name}.zip"
    files = tuple(
        RawFile(name=f, url=url, checksum=None,
                locations=(f"{name}/raw/{f}", f"{download_name}/raw/{f}", f"{dir_name}/raw/{f}"))
        for f in _RAW_FILES
    )
    return DatasetSpec(name=name, title=name, files=files, stats=stats, citation=OGB_CITATION, default_split=split,
                       split_doc=doc, loader=load_ogb, url=url,
                       params={"download_name": download_name, "dir_name": dir_name}, downloader=download_ogb)


def ogb_specs() -> list[DatasetSpec]:
    """Registry entries of ogbn-arxiv and ogbn-products (edges: OGB's published counts)."""
    return [
        _ogb_spec("ogbn-arxiv", "arxiv", {"nodes": 169343, "edges": 1166243, "features": 128, "classes": 40},
                  "20/10/10", "seeded 20/10/10 classes (as in TENT / few-shot ogbn-arxiv work)"),
        _ogb_spec("ogbn-products", "products",
                  {"nodes": 2449029, "edges": 61859140, "features": 100, "classes": 47},
                  "27/10/10", "seeded 27/10/10 classes"),
    ]


__all__ = ["download_ogb", "load_ogb", "ogb_specs"]
