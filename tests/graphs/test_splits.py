"""Class splits: disjoint, stable under a seed, overridable by counts, lists or a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmlgraph.errors import ConfigError
from cmlgraph.graphs import check_ways, class_splits


def test_counts_disjoint_and_seeded() -> None:
    a = class_splits(range(20), "10/5/5", seed=3)
    assert [len(a[k]) for k in ("train", "val", "test")] == [10, 5, 5]
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == set(range(20))
    assert not set(a["train"]) & set(a["val"]) and not set(a["val"]) & set(a["test"])
    assert a == class_splits(list(reversed(range(20))), (10, 5, 5), seed=3)
    assert a != class_splits(range(20), "10/5/5", seed=4)


def test_explicit_and_file(tmp_path: Path) -> None:
    spec = {"train": [3, 1], "val": [], "test": [2]}
    assert class_splits(range(4), spec) == {"train": [1, 3], "val": [], "test": [2]}
    f = tmp_path / "s.json"
    f.write_text(json.dumps(spec))
    assert class_splits(range(4), f) == class_splits(range(4), str(f))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("10/5/6", r"needs 21 classes but only 20"),
        ("10-5-5", r"not 'TRAIN/VAL/TEST' counts"),
        ({"train": [1, 2], "test": [2]}, r"classes \[2\] are in both 'train' and 'test'"),
        ({"train": [1], "test": [99]}, r"names classes \[99\]"),
        ({"train": [1], "tset": [2]}, r"unknown: \['tset'\]"),
        ("missing.json", r"does not exist"),
    ],
)
def test_bad_splits(spec, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        class_splits(range(20), spec)


def test_check_ways() -> None:
    check_ways({"train": [0, 1, 2], "val": [], "test": [3, 4, 5]}, 3)
    with pytest.raises(ConfigError, match=r"'test' split has 2 classes but ways=3"):
        check_ways({"train": [0, 1, 2], "val": [], "test": [3, 4]}, 3)
