"""A user's graph named like a registered dataset does not shadow that dataset."""

from __future__ import annotations

from cmlgraph.api import make_config
from cmlgraph.domains.graph import CUSTOM_GRAPHS, graph_of, register_graph
from cmlgraph.domains.registry import fill_defaults
from cmlgraph.graphs import make_synthetic


def test_a_graph_named_like_a_dataset_is_registered_apart_and_the_dataset_still_loads():
    mine = make_synthetic(num_nodes=120, num_classes=6, seed=0, split="2/2/2")
    assert mine.name == "synthetic"
    name = register_graph(mine)
    try:
        assert name == "synthetic-in-memory" and CUSTOM_GRAPHS[name] is mine
        dataset, _ = graph_of(fill_defaults(make_config(task="graph", graph="synthetic", synthetic_nodes=300,
                                                        synthetic_classes=15, ways=3, shots=2)))
        assert dataset.num_nodes == 300  # the registered generator, not the user's 120-node graph
        own, _ = graph_of(fill_defaults(make_config(task="graph", graph=name, ways=2, shots=2)))
        assert own.num_nodes == 120
    finally:
        CUSTOM_GRAPHS.pop(name, None)


def test_other_names_are_kept():
    mine = make_synthetic(num_nodes=60, num_classes=6, seed=0, split="2/2/2")
    mine.name = "my-graph"
    try:
        assert register_graph(mine) == "my-graph"
    finally:
        CUSTOM_GRAPHS.pop("my-graph", None)
