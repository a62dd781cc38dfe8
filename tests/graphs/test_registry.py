"""Registry names, dataset listing and the download path of load_graph against a local HTTP server."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from cmlgraph.errors import ConfigError, DataError
from cmlgraph.graphs import REGISTRY, dataset_names, get_spec, list_datasets, load_graph

NAMES = ["amazon-clothing", "amazon-electronics", "dblp", "cora-full", "cora", "citeseer", "pubmed", "coauthor-cs",
         "amazon-computers", "amazon-photo", "ogbn-arxiv", "ogbn-products", "synthetic"]


def test_names() -> None:
    assert sorted(dataset_names()) == sorted(NAMES)
    assert get_spec("Amazon_Clothing").name == "amazon-clothing"


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'corra'; valid names: .*cora.*synthetic"):
        load_graph("corra")


def test_options_only_for_synthetic(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="takes no options"):
        load_graph("cora", tmp_path, num_nodes=5)


def test_list_datasets(shared_root: Path) -> None:
    rows = {r["name"]: r for r in list_datasets(shared_root)}
    assert set(rows) == set(NAMES)
    for name in ("cora", "citeseer", "coauthor-cs", "amazon-computers", "amazon-photo", "synthetic"):
        assert rows[name]["available"], name
    assert not rows["amazon-clothing"]["available"] and rows["amazon-clothing"]["partial"]
    assert rows["amazon-clothing"]["missing"] == ["Amazon_clothing_train.mat"]
    assert rows["pubmed"]["missing"] == ["ind.pubmed.allx"]
    assert not rows["ogbn-arxiv"]["available"] and not rows["amazon-electronics"]["partial"]
    assert rows["cora"]["stats"] == {"nodes": 2708, "edges": 10556, "features": 1433, "classes": 7}
    assert rows["cora"]["nodes"] == 2708 and rows["cora"]["classes"] == 7
    assert rows["cora"]["url"].startswith("https://")


def _cora_from(url: str):
    spec = REGISTRY["cora"]
    files = tuple(dataclasses.replace(f, url=url + f.name) for f in spec.files)
    return dataclasses.replace(spec, files=files)


@pytest.mark.slow
def test_download_then_load(http_dir, shared_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, url = http_dir
    for f in (shared_root / "planetoid").glob("ind.cora.*"):
        shutil.copy(f, folder / f.name)
    monkeypatch.setitem(REGISTRY, "cora", _cora_from(url))
    cache = tmp_path / "cache"
    g = load_graph("cora", tmp_path / "empty_root", download=True, cache=cache)
    assert (g.num_nodes, g.num_edges) == (2708, 10556)
    assert (cache / "raw" / "Cora" / "raw" / "ind.cora.x").is_file()
    assert not (tmp_path / "empty_root").exists()  # nothing written into the data root


@pytest.mark.slow
def test_corrupted_download_not_kept(http_dir, shared_root: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    folder, url = http_dir
    for f in (shared_root / "planetoid").glob("ind.cora.*"):
        shutil.copy(f, folder / f.name)
    bad = bytearray((folder / "ind.cora.tx").read_bytes())
    bad[1000] ^= 0xFF
    (folder / "ind.cora.tx").write_bytes(bytes(bad))
    monkeypatch.setitem(REGISTRY, "cora", _cora_from(url))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"ind\.cora\.tx.*corrupted.*expected sha256:b9afbaa4"):
        load_graph("cora", tmp_path / "empty_root", download=True, cache=cache)
    raw = cache / "raw" / "Cora" / "raw"
    assert not (raw / "ind.cora.tx").exists()
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # no temporary leftovers
