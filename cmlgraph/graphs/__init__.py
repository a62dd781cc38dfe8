"""The graph data layer: datasets, class splits, episodes and episode subgraphs for few-shot node classification.

Public API:
    - :func:`load_graph` / :func:`list_datasets` / :func:`download_dataset`: registered datasets by CLI name.
    - :func:`from_pyg` / :func:`from_networkx` / :func:`from_arrays`: a user's own graph.
    - :func:`make_synthetic`: the embedded contextual-SBM graph.
    - :class:`EpisodeSampler`, :func:`fixed_episodes`, :func:`episodes_to_state`, :func:`episodes_from_state`.
    - :func:`class_splits`: disjoint seeded class splits.
    - :func:`episode_input`: the full graph or the k-hop subgraph an episode's backbone sees.
"""

from cmlgraph.graphs.custom import from_arrays, from_networkx, from_pyg
from cmlgraph.graphs.download import download_file, extract_zip, file_checksum, verify_file
from cmlgraph.graphs.episodes import EpisodeSampler, episodes_from_state, episodes_to_state, fixed_episodes
from cmlgraph.graphs.fewshot_graph import SPLIT_NAMES, FewShotGraph
from cmlgraph.graphs.registry import (
    REGISTRY,
    dataset_names,
    download_dataset,
    get_spec,
    list_datasets,
    load_graph,
)
from cmlgraph.graphs.root import cache_dir, data_root
from cmlgraph.graphs.spec import DatasetSpec, RawFile
from cmlgraph.graphs.splits import check_ways, class_splits
from cmlgraph.graphs.subgraph import episode_input, k_hop_nodes
from cmlgraph.graphs.synthetic import make_synthetic
from cmlgraph.graphs.types import GraphInput, NodeEpisode

__all__ = [
    "REGISTRY",
    "SPLIT_NAMES",
    "DatasetSpec",
    "EpisodeSampler",
    "FewShotGraph",
    "GraphInput",
    "NodeEpisode",
    "RawFile",
    "cache_dir",
    "check_ways",
    "class_splits",
    "data_root",
    "dataset_names",
    "download_dataset",
    "download_file",
    "episode_input",
    "episodes_from_state",
    "episodes_to_state",
    "extract_zip",
    "file_checksum",
    "fixed_episodes",
    "from_arrays",
    "from_networkx",
    "from_pyg",
    "get_spec",
    "k_hop_nodes",
    "list_datasets",
    "load_graph",
    "make_synthetic",
    "verify_file",
]
