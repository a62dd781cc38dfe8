"""The published numbers: one packaged file, read with safe_load, checked for shape, looked up by column."""

from __future__ import annotations

import pytest

from cmlgraph.errors import ConfigError
from cmlgraph.paper.published import PUBLISHED, load_published, table3_value


def test_packaged_file_has_every_block_with_a_source():
    pub = load_published()
    assert PUBLISHED.parent.name == "paper" and PUBLISHED.parent.parent.name == "cmlgraph"
    assert {"paper", "table3", "sinusoid", "images"} <= set(pub)
    assert all(pub[b]["source"] for b in ("table3", "sinusoid", "images"))
    assert "Tan et al." in pub["table3"]["note"]
    assert pub["sinusoid"]["published_mse"] is None and "no sinusoid MSE" in pub["sinusoid"]["note"]


def test_table3_has_four_rows_of_six_columns_and_lookup_by_setting():
    t = load_published()["table3"]
    assert len(t["columns"]) == 6 and len(t["rows"]) == 4
    assert {(r["algo"], r["cml"]) for r in t["rows"]} == {("gmeta", False), ("gmeta", True), ("ammgnn", False),
                                                          ("ammgnn", True)}
    assert table3_value("gmeta", False, "citeseer", 2, 1) == 55.15
    assert table3_value("ammgnn", True, "cora-full", 5, 5) == 76.19
    assert table3_value("gmeta", True, "amazon-computers", 2, 5) == 87.10
    assert table3_value("gmeta", False, "cora", 2, 1) is None
    assert table3_value("maml", False, "citeseer", 2, 1) is None


def test_a_row_with_a_missing_value_is_refused(tmp_path):
    text = PUBLISHED.read_text().replace("values: [55.15, 64.53, 70.57, 85.96, 60.44, 75.84]",
                                         "values: [55.15, 64.53]")
    bad = tmp_path / "published.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="'G-Meta' has 2 values for 6 columns"):
        load_published(bad)


def test_python_tags_are_refused(tmp_path):
    bad = tmp_path / "published.yaml"
    bad.write_text("paper: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="cannot read the published numbers"):
        load_published(bad)
