"""The paper's cells as data: every Table 3 column per base method and the sinusoid K values; --only selects."""

from __future__ import annotations

import pytest

from cmlgraph.errors import ConfigError
from cmlgraph.paper.cells import paper_cells, select_cells


def test_cells_follow_published_table_and_sinusoid():
    cells = paper_cells()
    assert len(cells) == 15 and len({c.id for c in cells}) == 15
    g = next(c for c in cells if c.id == "table3/citeseer/gmeta/2way-1shot")
    assert (g.config, g.paper_base, g.paper_cml) == ("table3-gmeta.yaml", 55.15, 61.17)
    assert g.overrides(True, 3) == {"data": {"shots": 1, "graph": "citeseer", "ways": 2}, "algo": {"cml": True},
                                    "train": {"seed": 3}}
    s = next(c for c in cells if c.id == "sinusoid/maml/k10")
    assert (s.config, s.paper_base, s.paper_cml) == ("sinusoid.yaml", None, None)
    assert s.overrides(False, 0) == {"data": {"shots": 10}, "algo": {"cml": False}, "train": {"seed": 0}}


@pytest.mark.parametrize(("only", "ids"), [
    ("sinusoid", ["sinusoid/maml/k5", "sinusoid/maml/k10", "sinusoid/maml/k20"]),
    ("k20,citeseer+gmeta", ["table3/citeseer/gmeta/2way-1shot", "table3/citeseer/gmeta/2way-5shot",
                            "sinusoid/maml/k20"]),
    ("table3/amazon-computers/*/2way-5shot", ["table3/amazon-computers/gmeta/2way-5shot",
                                              "table3/amazon-computers/ammgnn/2way-5shot"]),
    ("CiteSeer+G-Meta".replace("-", ""), ["table3/citeseer/gmeta/2way-1shot", "table3/citeseer/gmeta/2way-5shot"]),
])
def test_only_selects_by_tag_conjunction_and_glob(only, ids):
    assert [c.id for c in select_cells(paper_cells(), only)] == ids


def test_only_with_no_match_names_the_valid_tags():
    with pytest.raises(ConfigError, match="'cifar' matches no experiment.*citeseer"):
        select_cells(paper_cells(), "sinusoid,cifar")
    assert len(select_cells(paper_cells(), None)) == 15
