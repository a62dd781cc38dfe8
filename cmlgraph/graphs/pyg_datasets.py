"""Loaders of the PyG benchmark graphs: Planetoid (Cora, CiteSeer, PubMed), Amazon Computers/Photo, Coauthor-CS
and CoraFull.

Why these choices: Planetoid's ``ind.*`` files are Python pickles; PyG's :class:`~torch_geometric.datasets.Planetoid`
reads them (unpickling is forced by that format, and the files are checksum-verified first). Because the data root
may be read-only, the verified raw files are copied to ``<cache>/pyg/<Name>/raw/`` and PyG processes them there.

The npz datasets (Amazon, Coauthor, CitationFull) use PyG's file layout (``<Name>/raw/<file>.npz``) and the same
processing as PyG's ``read_npz`` (features binarised, self loops removed, edges made undirected), but keep the
features sparse: PyG's reader densifies them (0.5 GB for Coauthor-CS, 0.7 GB for CoraFull). They are read with
``np.load(allow_pickle=False)``: only numeric arrays are touched. The shared collection stores them inside zips;
the member is extracted to ``<cache>/extracted/``.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from cmlgraph.errors import DataError
from cmlgraph.graphs.assemble import assemble, undirected_edges
from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.sparse import scipy_to_torch, to_coo
from cmlgraph.graphs.spec import ArchiveSource, DatasetSpec, LoadRequest, RawFile

PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data/"
GNN_BENCHMARK_URL = "https://github.com/shchur/gnn-benchmark/raw/master/data/npz/"
PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
PLANETOID_CITATION = ("Zhilin Yang, William W. Cohen, Ruslan Salakhutdinov. Revisiting Semi-Supervised Learning "
                      "with Graph Embeddings. ICML 2016")
SHCHUR_CITATION = ("Oleksandr Shchur, Maximilian Mumme, Aleksandar Bojchevski, Stephan Günnemann. Pitfalls of "
                   "Graph Neural Network Evaluation. NeurIPS 2018 R2L workshop")
G2G_CITATION = ("Aleksandar Bojchevski, Stephan Günnemann. Deep Gaussian Embedding of Graphs: Unsupervised "
                "Inductive Learning via Ranking. ICLR 2018")

_PLANETOID_SHA256 = {
    "citeseer": {
        "allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
        "ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
        "graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
        "test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
        "tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
        "ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
        "x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
        "y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    },
    "cora": {
        "allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
        "ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
        "graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
        "test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
        "tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
        "ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
        "x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
        "y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    },
    "pubmed": {
        "allx": None,  # blob 3b86bccf08111c37c632a9dd8ab63db25ea76361 per the MANIFEST, written below
        "ally": "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e",
        "graph": "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9",
        "test.index": "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5",
        "tx": "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d",
        "ty": "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd",
        "x": "fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33",
        "y": "e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3",
    },
}
_PUBMED_ALLX_BLOB = "gitblob:3b86bccf08111c37c632a9dd8ab63db25ea76361"
_PYG_NAME = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}


def load_planetoid(req: LoadRequest) -> FewShotGraph:
    """Load Cora / CiteSeer / PubMed through PyG's ``Planetoid`` from verified copies in the cache.

    Raises:
        DataError: A raw file is missing or fails its checksum.
    """
    from torch_geometric.datasets import Planetoid

    pyg_name = _PYG_NAME[req.spec.name]
    sources = {part: req.require(f"ind.{req.spec.name}.{part}") for part in PLANETOID_PARTS}
    raw_dir = req.cache / "pyg" / pyg_name / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    for path in sources.values():
        dest = raw_dir / path.name
        if not dest.is_file() or dest.stat().st_size != path.stat().st_size:
            tmp = dest.with_suffix(dest.suffix + ".part")
            shutil.copyfile(path, tmp)
            tmp.replace(dest)
    with contextlib.redirect_stderr(io.StringIO()):  # PyG's one-time "Processing... Done!" is not for our users
        data = Planetoid(str(req.cache / "pyg"), pyg_name)[0]
    x = to_coo(data.x.to_sparse())
    edge_index = undirected_edges(data.edge_index, data.num_nodes)
    info = {"source": PLANETOID_URL, "citation": req.spec.citation, "pyg_class": f"Planetoid(name='{pyg_name}')"}
    split = req.split if req.split is not None else req.spec.default_split
    y = torch.where(planetoid_labelled(raw_dir, req.spec.name), data.y, torch.full_like(data.y, -1))
    return assemble(req.spec.name, x, edge_index, y, split=split, seed=req.seed, info=info)


def planetoid_labelled(raw_dir: Path, name: str) -> torch.Tensor:
    """``BoolTensor[num_nodes]``: which nodes carry a label in the raw Planetoid files, in PyG's node order.

    CiteSeer's test ids skip 15 nodes that have no features and no label in the source; PyG fills them with zero
    rows, and the arg-max of a zero label row is class 0. They are unlabelled here, not members of class 0.
    """
    from torch_geometric.io.planetoid import read_file

    ally, ty = read_file(str(raw_dir), name, "ally"), read_file(str(raw_dir), name, "ty")
    test_index = read_file(str(raw_dir), name, "test.index")
    sorted_test = test_index.sort()[0]
    has_ty = ty.abs().sum(dim=1) > 0
    if name == "citeseer":  # the same extension PyG applies to tx/ty (see torch_geometric.io.planetoid)
        ext = torch.zeros(int(test_index.max() - test_index.min()) + 1, dtype=torch.bool)
        ext[sorted_test - test_index.min()] = has_ty
        has_ty = ext
    has = torch.cat([ally.abs().sum(dim=1) > 0, has_ty])
    has[test_index] = has[sorted_test]
    return has


def read_npz_sparse(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read a gnn-benchmark / graph2gauss npz like PyG's ``read_npz`` but with sparse features.

    Returns:
        ``(x, edge_index, y)``: binarised sparse COO features, undirected edges, labels.

    Raises:
        DataError: The npz lacks the expected arrays.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            attr = sp.csr_matrix((f["attr_data"], f["attr_indices"], f["attr_indptr"]), shape=tuple(f["attr_shape"]))
            adj = sp.csr_matrix((f["adj_data"], f["adj_indices"], f["adj_indptr"]), shape=tuple(f["adj_shape"]))
            labels = np.asarray(f["labels"], dtype=np.int64)
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"{str(path)!r} is not a gnn-benchmark npz with attr_*/adj_*/labels arrays ({exc}); "
                        "replace it with the original file") from exc
    attr.data = (attr.data > 0).astype(np.float32)
    attr.eliminate_zeros()
    x = scipy_to_torch(attr)
    adj = adj.tocoo()
    edge_index = torch.from_numpy(np.vstack([adj.row, adj.col]).astype(np.int64))
    return x, undirected_edges(edge_index, attr.shape[0]), torch.from_numpy(labels)


def load_npz_dataset(req: LoadRequest) -> FewShotGraph:
    """Load an Amazon / Coauthor / CoraFull npz dataset (see the module docstring)."""
    path = req.require("npz")
    x, edge_index, y = read_npz_sparse(path)
    info = {"source": req.spec.file("npz").url, "citation": req.spec.citation, "file": str(path)}
    split = req.split if req.split is not None else req.spec.default_split
    return assemble(req.spec.name, x, edge_index, y, split=split, seed=req.seed, info=info)


def _planetoid_spec(name: str, stats: dict[str, int], split: str, doc: str) -> DatasetSpec:
    files = []
    for part in PLANETOID_PARTS:
        fname = f"ind.{name}.{part}"
        digest = _PLANETOID_SHA256[name][part]
        checksum = f"sha256:{digest}" if digest else (_PUBMED_ALLX_BLOB if name == "pubmed" else None)
        files.append(RawFile(name=fname, url=PLANETOID_URL + fname, checksum=checksum,
                             locations=(f"planetoid/{fname}", f"{_PYG_NAME[name]}/raw/{fname}")))
    return DatasetSpec(name=name, title=_PYG_NAME[name], files=tuple(files), stats=stats,
                       citation=PLANETOID_CITATION, default_split=split, split_doc=doc, loader=load_planetoid,
                       url="https://github.com/kimiyoung/planetoid")


def _npz_spec(name: str, title: str, npz: str, pyg_dir: str, shared: tuple[str, str, str] | None,
              checksum: str | None, url: str, stats: dict[str, int], split: str, doc: str,
              citation: str, extra_locations: tuple[str, ...] = ()) -> DatasetSpec:
    archives = ()
    locations: tuple[str, ...] = extra_locations
    if shared is not None:
        folder, zip_name, zip_sha = shared
        archives = (ArchiveSource(path=f"{folder}/{zip_name}", member=npz, checksum=f"sha256:{zip_sha}"),)
        locations = (f"{folder}/{npz}",) + locations
    raw = RawFile(name="npz", url=url, checksum=checksum, locations=locations + (f"{pyg_dir}/raw/{npz}",),
                  archives=archives)
    return DatasetSpec(name=name, title=title, files=(raw,), stats=stats, citation=citation, default_split=split,
                       split_doc=doc, loader=load_npz_dataset, url=url)


def pyg_specs() -> list[DatasetSpec]:
    """Registry entries of the PyG benchmark graphs (checksums from the shared MANIFESTs)."""
    return [
        _planetoid_spec("cora", {"nodes": 2708, "edges": 10556, "features": 1433, "classes": 7}, "3/2/2",
                        "seeded 3/2/2 classes (7 classes: 2-way episodes in every split)"),
        _planetoid_spec("citeseer", {"nodes": 3327, "edges": 9104, "features": 3703, "classes": 6}, "2/2/2",
                        "seeded 2/2/2 classes (6 classes: 2-way episodes in every split)"),
        _planetoid_spec("pubmed", {"nodes": 19717, "edges": 88648, "features": 500, "classes": 3}, "1/1/1",
                        "seeded 1/1/1 classes: PubMed has only 3 classes, so no class-disjoint 2-way split exists; "
                        "give your own --split"),
        _npz_spec("coauthor-cs", "Coauthor-CS", "ms_academic_cs.npz", "CS",
                  ("coauthor_cs", "coauthor-cs.zip",
                   "a69e43a2a3418c44e7660f1405c4298ac270ac57884a4318d1deb8861c6ec935"),
                  "sha256:933c745734e78908c7eb77172a673fee0503f30e26e5a99b36814d88534c42e3",
                  GNN_BENCHMARK_URL + "ms_academic_cs.npz",
                  {"nodes": 18333, "edges": 163788, "features": 6805, "classes": 15}, "5/5/5",
                  "seeded 5/5/5 classes (15 classes: 5-way episodes in every split)", SHCHUR_CITATION),
        _npz_spec("amazon-computers", "Amazon Computers", "amazon_electronics_computers.npz", "Computers",
                  ("amazon_computers", "amazon-computers.zip",
                   "ef387b28234c0aae28f49a337d5ad4074ec31063ddd7650b8fd0ab986cecd155"),
                  "sha256:736ba1d9fd85eac2da83a5ad25c463f04b0031a6ca01563f90a7099d9e8ffb2c",
                  GNN_BENCHMARK_URL + "amazon_electronics_computers.npz",
                  {"nodes": 13752, "edges": 491722, "features": 767, "classes": 10}, "5/0/5",
                  "seeded 5/0/5 classes: 10 classes cannot give three disjoint 5-way splits, so val is empty and "
                  "validation episodes come from the train classes", SHCHUR_CITATION),
        _npz_spec("amazon-photo", "Amazon Photo", "amazon_electronics_photo.npz", "Photo",
                  ("amazon_photo", "amazon-photo.zip",
                   "9a1a31380c0480c87d4174f3e76e51956720da6e01ad5332b437e3dc99f11724"),
                  "sha256:bdb1feb8e6ff42ee44024b04479145029c563fd42fc31bff80af20887ba0439a",
                  GNN_BENCHMARK_URL + "amazon_electronics_photo.npz",
                  {"nodes": 7650, "edges": 238162, "features": 745, "classes": 8}, "4/2/2",
                  "seeded 4/2/2 classes (8 classes: 2-way episodes in every split)", SHCHUR_CITATION),
        _npz_spec("cora-full", "CoraFull", "cora.npz", "cora", None, None,
                  "https://github.com/abojchevski/graph2gauss/raw/master/data/cora.npz",
                  {"nodes": 19793, "edges": 126842, "features": 8710, "classes": 70}, "25/20/25",
                  "seeded 25/20/25 classes (as in TENT); no published checksum (the file is LFS-tracked upstream)",
                  G2G_CITATION, extra_locations=("cora_full/cora.npz", "CoraFull/raw/cora.npz")),
    ]


__all__ = ["load_npz_dataset", "load_planetoid", "pyg_specs", "read_npz_sparse"]
