"""cmlgraph: few-shot node classification with gradient-based meta-learning and Cooperative Meta-Learning.

The public API:
    - :func:`fit`, :func:`fit_config`, :func:`make_config`: train and evaluate from Python.
    - :func:`from_arrays`, :func:`from_pyg`, :func:`from_networkx`, :func:`load_graph`: graphs.
    - :func:`outer_objective`, :func:`inner_loop`, :class:`InnerLoopConfig`: the functional CML core.
    - :class:`MetaModel`, :func:`get_algorithm`: models and algorithms.
"""

import cmlgraph._warnings  # noqa: F401
from cmlgraph.algorithms import ALGORITHMS, get_algorithm
from cmlgraph.api import fit, fit_config, make_config
from cmlgraph.config import Config
from cmlgraph.core.episode import Episode
from cmlgraph.core.inner_loop import InnerLoopConfig, inner_loop
from cmlgraph.core.model import MetaModel, inference_state, parameters_of
from cmlgraph.core.objective import OuterLoss, outer_objective
from cmlgraph.errors import CmlgraphError, ConfigError, DataError, NumericalError
from cmlgraph.graphs import FewShotGraph, from_arrays, from_networkx, from_pyg, list_datasets, load_graph

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS", "CmlgraphError", "Config", "ConfigError", "DataError", "Episode", "FewShotGraph",
    "InnerLoopConfig", "MetaModel", "NumericalError", "OuterLoss", "fit", "fit_config", "from_arrays",
    "from_networkx", "from_pyg", "get_algorithm", "inference_state", "inner_loop", "list_datasets", "load_graph",
    "make_config", "outer_objective", "parameters_of",
]
