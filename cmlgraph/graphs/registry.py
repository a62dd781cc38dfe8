"""The dataset registry keyed by CLI name, and :func:`load_graph`, the one entry point for named graphs.

Why: the CLI and the Python API must agree on names, URLs, checksums, expected counts and default class splits.
Each :class:`~cmlgraph.graphs.spec.DatasetSpec` carries them; unknown names raise a :class:`ConfigError` listing
the valid ones.

Default class splits (seeded by ``seed``; override with ``split="a/b/c"`` counts or a JSON file):

================== ============ =====================================================================
name               split        why
================== ============ =====================================================================
amazon-clothing    GPN          test = test.mat classes (20); val = 17 seeded train.mat classes; rest
amazon-electronics GPN          test = test.mat classes (40); val = 36 seeded; rest train
dblp               GPN          test = test.mat classes (30); val = 27 seeded; rest train
cora-full          25/20/25     as in TENT
cora               3/2/2        7 classes: 2-way episodes in every split
citeseer           2/2/2        6 classes: 2-way episodes in every split
pubmed             1/1/1        3 classes: no class-disjoint 2-way split exists; give your own
coauthor-cs        5/5/5        15 classes: 5-way in every split
amazon-computers   5/0/5        10 classes: 5-way train and test; val empty → validation on train classes
amazon-photo       4/2/2        8 classes: 2-way in every split
ogbn-arxiv         20/10/10     as in few-shot ogbn-arxiv work (TENT)
ogbn-products      27/10/10     47 classes
synthetic          36/12/12     60% / 20% / 20% of the 60 generated classes
================== ============ =====================================================================
"""

from __future__ import annotations

import os
from typing import Any

from cmlgraph.errors import ConfigError
from cmlgraph.graphs.fewshot_graph import FewShotGraph
from cmlgraph.graphs.gpn import gpn_specs
from cmlgraph.graphs.ogb_datasets import ogb_specs
from cmlgraph.graphs.pyg_datasets import pyg_specs
from cmlgraph.graphs.root import cache_dir, data_root
from cmlgraph.graphs.spec import DatasetSpec, LoadRequest, download_missing, file_name, find_raw
from cmlgraph.graphs.splits import SplitSpec
from cmlgraph.graphs.synthetic import synthetic_spec

REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in [*gpn_specs(), *pyg_specs(), *ogb_specs(), synthetic_spec()]}


def dataset_names() -> list[str]:
    """The valid dataset names, in registry order."""
    return list(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``.

    Raises:
        ConfigError: Unknown name; the message lists the valid names.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(REGISTRY)} "
                          "(or build your own graph with cmlgraph.graphs.from_arrays / from_pyg / from_networkx)")
    return REGISTRY[key]


def load_graph(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    allow_partial: bool = False,
    split: SplitSpec | None = None,
    seed: int = 0,
    download: bool = False,
    cache: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> FewShotGraph:
    """Load a registered graph with its class split, or a graph file written by ``graph.save(PATH)``.

    Args:
        name: Registry name (see :func:`dataset_names`), or the path of a ``.npz`` graph file (read safely, no
            pickle; the other arguments are then ignored: the file holds its own split).
        root: Raw data root (read only); default ``$CMLGRAPH_DATA`` or ``<repo>/datasets``.
        allow_partial: Load what is present when some files are missing (GPN datasets); sets ``graph.partial``.
        split: Class split override: ``"a/b/c"`` counts (seeded), a mapping, or a JSON file path.
        seed: Seed of the class split (and of the synthetic graph).
        download: Download missing files (checksummed) into ``<cache>/raw`` first.
        cache: Writable cache folder; default ``$CMLGRAPH_CACHE`` or ``~/.cache/cmlgraph``.
        **kwargs: Loader options (synthetic: ``num_nodes``, ``num_classes``, ``num_edges``, ...).

    Raises:
        ConfigError: Unknown name or bad options.
        DataError: Missing, corrupted or partial data (the message names the file, its URL and the fix).
    """
    from cmlgraph.graphs.storage import is_graph_file, read_graph

    if is_graph_file(name):  # a graph saved with graph.save(PATH)
        return read_graph(name)
    spec = get_spec(name)
    if kwargs and spec.name != "synthetic":
        raise ConfigError(f"dataset {spec.name!r} takes no options {sorted(kwargs)}; only 'synthetic' does")
    raw_root, cache_path = data_root(root), cache_dir(cache)
    if download:
        download_dataset(spec.name, raw_root, cache=cache_path)
    req = LoadRequest(spec=spec, root=raw_root, cache=cache_path, allow_partial=allow_partial, split=split,
                      seed=seed, options=dict(kwargs))
    return spec.loader(req)


def download_dataset(
    name: str, root: str | os.PathLike[str] | None = None, *, cache: str | os.PathLike[str] | None = None
) -> list[str]:
    """Download the missing raw files of ``name`` (checksummed, atomic) into ``<cache>/raw``; return their paths."""
    spec = get_spec(name)
    raw_root, cache_path = data_root(root), cache_dir(cache)
    fetch = spec.downloader or download_missing
    return [str(p) for p in fetch(spec, raw_root, cache_path)]


def class_split(spec: DatasetSpec) -> str:
    """The default split's class counts, ``train/val/test`` (``3/2/2``), as ``cmlgraph datasets list`` shows them.

    A GPN dataset's test classes are those of its ``*_test.mat`` and its train classes the rest of ``*_train.mat``,
    known only from the files: ``rest/17/test.mat``.
    """
    split = str(spec.default_split)
    if split.startswith("gpn:"):
        return f"rest/{split.split(':', 1)[1]}/test.mat"
    return split


def list_datasets(
    root: str | os.PathLike[str] | None = None, *, cache: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """Describe every registered dataset for ``cmlgraph datasets list``.

    Each entry has ``name``, ``title``, ``stats`` (also flattened: ``nodes``, ``edges``, ``features``,
    ``classes``), ``url``, ``split`` (the default split's description),
    ``class_split`` (:func:`class_split`), ``available`` (all required files are present locally), ``partial``
    (only some are), ``missing`` (the
    missing file names) and ``citation``. Presence is checked by path only (no hashing).
    """
    raw_root, cache_path = data_root(root), cache_dir(cache, create=False)
    out = []
    for spec in REGISTRY.values():
        missing = []
        for raw in spec.files:
            bases = (raw_root, cache_path / "raw")
            found = any((b / loc).is_file() for b in bases for loc in raw.locations) or any(
                (b / a.path).is_file() for b in bases for a in raw.archives)
            if not found:
                missing.append(raw)
        required_missing = [m for m in missing if m.name not in spec.optional]
        optional_missing = [m for m in missing if m.name in spec.optional]
        complete = not missing
        partial = not complete and not required_missing and len(optional_missing) < len(spec.optional)
        out.append({
            "name": spec.name, "title": spec.title, "stats": dict(spec.stats), **spec.stats, "url": spec.url,
            "split": spec.split_doc, "class_split": class_split(spec), "available": complete, "partial": partial,
            "missing": [file_name(m) for m in missing],
            "citation": spec.citation,
        })
    return out


__all__ = ["REGISTRY", "class_split", "dataset_names", "download_dataset", "find_raw", "get_spec", "list_datasets",
           "load_graph"]
