"""FewShotGraph properties and conversion to PyG."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.errors import ConfigError


def test_properties_and_pyg(triangles) -> None:
    g = triangles()
    assert (g.num_nodes, g.num_features, g.num_classes) == (6, 2, 2)
    assert g.classes_with_at_least(3) == [0, 1] and g.classes_with_at_least(4) == []
    assert g.episode_classes("val") == [0]
    with pytest.raises(ConfigError, match="split 'dev' is unknown"):
        g.episode_classes("dev")
    data = g.to_pyg()
    assert torch.equal(data.edge_index, g.edge_index) and data.num_nodes == 6
    assert data.class_splits == g.splits
    rowptr, col = g.adjacency()
    assert rowptr.tolist()[-1] == g.num_edges and sorted(col[rowptr[2]:rowptr[3]].tolist()) == [0, 1, 3]
    assert g.summary()["classes"] == 2
