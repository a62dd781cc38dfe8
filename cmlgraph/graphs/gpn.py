"""Loader of the GPN few-shot node-classification files (Ding et al., CIKM 2020): Amazon-Clothing,
Amazon-Electronics and DBLP.

Why a custom loader: no library ships these files. Each dataset is ``<Prefix>_network`` (tab-separated edge list,
both directions), ``<Prefix>_train.mat`` (train + validation classes) and ``<Prefix>_test.mat`` (test classes),
read with ``np.loadtxt`` and ``scipy.io.loadmat`` (keys ``Index``, ``Attributes`` (sparse csc), ``Label``), as in
GPN's ``utils.load_data``. The split follows GPN: test classes are those of ``*_test.mat``; validation is a
seeded sample of 17 / 36 / 27 classes of ``*_train.mat``; the rest train.

Partial data is handled honestly: when a ``.mat`` file is missing, loading fails with a :class:`DataError` naming
the file and its URL, unless ``allow_partial=True``, which loads the classes that are present (with a seeded split
over them), sets ``partial=True`` and says so in ``notes``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp
import torch

from cmlgraph.errors import DataError
from cmlgraph.graphs.assemble import assemble, undirected_edges
from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.sparse import scipy_to_torch
from cmlgraph.graphs.spec import DatasetSpec, LoadRequest, RawFile, root_hint

GPN_URL = "https://github.com/kaize0409/GPN_Few-shot/raw/master/few_shot_data/"
GPN_CITATION = (
    "Kaize Ding, Jianling Wang, Jundong Li, Kai Shu, Chenghao Liu, Huan Liu. Graph Prototypical Networks for "
    "Few-shot Learning on Attributed Networks. CIKM 2020. arXiv:2006.12739"
)


def _raw(prefix: str, suffix: str, checksum: str | None, size: int | None = None) -> RawFile:
    fname = f"{prefix}{suffix}"
    return RawFile(
        name=suffix.lstrip("_"),
        url=GPN_URL + fname,
        checksum=checksum,
        locations=(f"few_shot_data/{fname}", fname, f"{prefix}/{fname}"),
        size=size,
    )


def read_network(path: Path) -> np.ndarray:
    """Read a GPN edge list (``src<TAB>dst`` per line) as an ``int64 [E, 2]`` array.

    Raises:
        DataError: The file is not a two-column integer edge list.
    """
    try:
        edges = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
    except ValueError as exc:
        raise DataError(f"edge list {str(path)!r} is not 'src<TAB>dst' integer lines ({exc}); replace it with the "
                        "original GPN file") from exc
    if edges.shape[1] != 2 or (edges.size and edges.min() < 0):
        raise DataError(f"edge list {str(path)!r} must have two non-negative id columns, got shape {edges.shape}")
    return edges


def read_mat(path: Path) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """Read a GPN ``.mat`` file: global node ids, sparse attributes (rows in the same order) and class ids.

    Raises:
        DataError: Missing keys or inconsistent shapes.
    """
    mat = scipy.io.loadmat(path)
    missing = [k for k in ("Index", "Attributes", "Label") if k not in mat]
    if missing:
        raise DataError(f"{str(path)!r} lacks keys {missing}; it is not a GPN few-shot .mat file")
    index = np.asarray(mat["Index"], dtype=np.int64).reshape(-1)
    attrs = sp.csr_matrix(mat["Attributes"])
    labels = np.asarray(mat["Label"]).reshape(-1).astype(np.int64)
    if not (index.shape[0] == attrs.shape[0] == labels.shape[0]):
        raise DataError(f"{str(path)!r} has {index.shape[0]} Index, {attrs.shape[0]} Attributes rows and "
                        f"{labels.shape[0]} Label entries; they must match. Replace it with the original file")
    return index, attrs, labels


def _gpn_split(train_classes: list[int], test_classes: list[int], num_val: int, seed: int) -> dict[str, list[int]]:
    gen = torch.Generator().manual_seed(int(seed))
    pool = sorted(set(train_classes) - set(test_classes))
    perm = torch.randperm(len(pool), generator=gen).tolist()
    val = sorted(pool[i] for i in perm[:num_val])
    return {"train": sorted(set(pool) - set(val)), "val": val, "test": sorted(set(test_classes))}


def load_gpn(req: LoadRequest) -> FewShotGraph:
    """Load a GPN dataset described by ``req.spec`` (see the module docstring).

    Raises:
        DataError: The network is missing; a ``.mat`` file is missing without ``allow_partial``; both are missing.
    """
    spec = req.spec
    network = req.require("network")
    train_path, test_path = req.find("train.mat"), req.find("test.mat")
    train_raw, test_raw = spec.file("train.mat"), spec.file("test.mat")
    if train_path is None and test_path is None:
        raise DataError(
            f"dataset '{spec.name}' has no labels or features here: both {train_raw.url.rsplit('/', 1)[-1]} and "
            f"{test_raw.url.rsplit('/', 1)[-1]} are missing (only the edge list was found), so it cannot be loaded "
            f"even with --allow-partial. Download them from {train_raw.url} and {test_raw.url} "
            f"(`cmlgraph datasets download {spec.name}`). {root_hint(req.root)}"
        )
    missing = [r for r, p in ((train_raw, train_path), (test_raw, test_path)) if p is None]
    if missing and not req.allow_partial:
        raw = missing[0]
        fname = raw.url.rsplit("/", 1)[-1]
        present = (test_raw if raw is train_raw else train_raw).url.rsplit("/", 1)[-1]
        raise DataError(
            f"dataset '{spec.name}' is incomplete: {fname} is missing under {req.root} (looked in "
            f"{', '.join(str(req.root / loc) for loc in raw.locations)}). Download it from {raw.url} "
            f"(`cmlgraph datasets download {spec.name}`), or pass --allow-partial (allow_partial=True) to load only "
            f"the classes of {present}. {root_hint(req.root)}"
        )
    edges = read_network(network)
    parts = {name: read_mat(p) for name, p in (("train", train_path), ("test", test_path)) if p is not None}
    num_feats = {a.shape[1] for _, a, _ in parts.values()}
    if len(num_feats) != 1:
        raise DataError(f"dataset '{spec.name}': train.mat and test.mat disagree on the feature dimension "
                        f"({sorted(num_feats)}); use files from the same GPN release")
    num_nodes = int(max([edges.max() if edges.size else -1] + [int(i.max()) for i, _, _ in parts.values()])) + 1
    num_features = num_feats.pop()
    index = np.concatenate([i for i, _, _ in parts.values()])
    labels = np.concatenate([lab for _, _, lab in parts.values()])
    if np.unique(index).shape[0] != index.shape[0]:
        raise DataError(f"dataset '{spec.name}': a node id appears twice in the .mat files; use the original files")
    attrs = sp.vstack([a for _, a, _ in parts.values()]).tocoo()
    feats = sp.coo_matrix((attrs.data, (index[attrs.row], attrs.col)), shape=(num_nodes, num_features))
    x = scipy_to_torch(feats)
    y = torch.full((num_nodes,), -1, dtype=torch.long)
    y[torch.from_numpy(index)] = torch.from_numpy(labels)
    edge_index = undirected_edges(torch.from_numpy(edges.T.copy()), num_nodes)

    notes: list[str] = []
    info = {"source": GPN_URL, "citation": spec.citation, "files": {k: str(p) for k, p in
                                                                    (("network", network), ("train.mat", train_path),
                                                                     ("test.mat", test_path)) if p is not None}}
    unlabelled = int((y < 0).sum())
    present_classes = sorted(set(labels.tolist()))
    if missing:
        names = ", ".join(r.url.rsplit("/", 1)[-1] for r in missing)
        split = req.split if req.split is not None else spec.params["partial_split"]
        notes.append(
            f"PARTIAL DATA: {names} missing; loaded only the {len(present_classes)} classes of the present .mat file "
            f"with class split {split!r} (seed {req.seed}) over them. {unlabelled} of {num_nodes} nodes have no "
            "label and all-zero features. Results are not comparable with the literature."
        )
        return assemble(spec.name, x, edge_index, y, split=split, seed=req.seed, partial=True, notes=notes,
                        info=info, classes=present_classes)
    if req.split is not None:
        return assemble(spec.name, x, edge_index, y, split=req.split, seed=req.seed, notes=notes, info=info,
                        classes=present_classes)
    split = _gpn_split(sorted(set(parts["train"][2].tolist())), sorted(set(parts["test"][2].tolist())),
                       spec.params["num_val"], req.seed)
    info["split"] = spec.split_doc
    return assemble(spec.name, x, edge_index, y, split=split, seed=req.seed, notes=notes, info=info,
                    classes=present_classes)


def _gpn_spec(name: str, prefix: str, stats: dict[str, int], num_val: int, partial_split: str,
              checksums: dict[str, str | None], sizes: dict[str, int | None]) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        title=prefix,
        files=tuple(_raw(prefix, f"_{key}", checksums.get(key), sizes.get(key))
                    for key in ("network", "train.mat", "test.mat")),
        stats=stats,
        citation=GPN_CITATION,
        default_split=f"gpn:{num_val}",
        split_doc=(f"GPN split: test = the classes of {prefix}_test.mat; val = a seeded sample of {num_val} classes "
                   f"of {prefix}_train.mat; train = the rest. Partial data: counts {partial_split} (seeded) over "
                   "the classes present"),
        loader=load_gpn,
        optional=("train.mat", "test.mat"),
        url="https://github.com/kaize0409/GPN_Few-shot",
        params={"num_val": num_val, "partial_split": partial_split},
    )


def gpn_specs() -> list[DatasetSpec]:
    """Registry entries of the three GPN datasets (checksums from the shared MANIFESTs; DBLP has none)."""
    return [
        _gpn_spec(
            "amazon-clothing", "Amazon_clothing",
            {"nodes": 24919, "edges": 183360, "features": 9034, "classes": 77}, 17, "10/5/5",
            {"network": "sha256:6362cf42e3d2eda602a6e237e1be0dfaa35efe7ab8eca0a9027a133c23954b2c",
             "test.mat": "sha256:7656d0831b4a41f7aad1a9fc7cfb1434b920fa5ed5275a1e74aaefaea68eae81",
             "train.mat": "gitblob:c6b954abbf44b9ab48d393949b7d2900345671f6"},
            {"network": 2036322, "test.mat": 3808608, "train.mat": 6155520},
        ),
        _gpn_spec(
            "amazon-electronics", "Amazon_eletronics",
            {"nodes": 42318, "edges": 87112, "features": 8669, "classes": 167}, 36, "20/10/10",
            {"network": "sha256:4aa2042f22bf88204552d770b9b8e4d65c6e19b188d44d216525a466ab23f4e1",
             "train.mat": "gitblob:e1f86759374345bfbb250ef5ababa3b5686209a7",
             "test.mat": "gitblob:a7d46745f30e910aac6aabe8321d0b3c8f6087dd"},
            {"network": 999514, "train.mat": 16218608, "test.mat": 4971904},
        ),
        _gpn_spec(
            "dblp", "dblp",
            {"nodes": 40672, "edges": 576540, "features": 7202, "classes": 137}, 27, "14/8/8",
            {}, {"network": 6635708, "train.mat": 17711600, "test.mat": 5728224},
        ),
    ]


__all__ = ["GPN_URL", "gpn_specs", "load_gpn", "read_mat", "read_network"]
