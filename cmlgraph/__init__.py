"""cmlgraph: few-shot node classification with gradient-based meta-learning and Cooperative Meta-Learning.

The public API:
    - :func:`fit`, :func:`fit_config`, :func:`make_config`: train and evaluate from Python; :func:`resume` continues
      a stopped run.
    - :func:`from_arrays`, :func:`from_pyg`, :func:`from_networkx`, :func:`load_graph`: graphs
      (``graph.save(PATH)`` / ``load_graph(PATH)`` store and read a graph without pickle).
    - :func:`adapt`, :func:`embed`: use a trained run on a new few-shot task / read its node features;
      :func:`predict_with_method`: label a graph's nodes with a training-free method, no run folder.
    - :func:`outer_objective`, :func:`inner_loop`, :class:`InnerLoopConfig`: the functional CML core.
    - :class:`MetaModel`, :func:`get_algorithm`: models and algorithms.

Names are imported on first use (PEP 562), so ``import cmlgraph`` and ``cmlgraph --help`` load neither torch nor
torch-geometric; ``cmlgraph.fit`` (say) imports what it needs when it is first touched.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import cmlgraph._warnings  # noqa: F401  (filters torch's sparse-CSR notices; imports no torch)

__version__ = "0.1.0"

#: Public name → the module that defines it (imported on first attribute access).
_LAZY = {
    "ALGORITHMS": "cmlgraph.algorithms", "get_algorithm": "cmlgraph.algorithms",
    "fit": "cmlgraph.api", "fit_config": "cmlgraph.api", "make_config": "cmlgraph.api", "resume": "cmlgraph.api",
    "Config": "cmlgraph.config",
    "Episode": "cmlgraph.core.episode",
    "InnerLoopConfig": "cmlgraph.core.inner_loop", "inner_loop": "cmlgraph.core.inner_loop",
    "MetaModel": "cmlgraph.core.model", "inference_state": "cmlgraph.core.model",
    "parameters_of": "cmlgraph.core.model",
    "OuterLoss": "cmlgraph.core.objective", "outer_objective": "cmlgraph.core.objective",
    "CmlgraphError": "cmlgraph.errors", "ConfigError": "cmlgraph.errors", "DataError": "cmlgraph.errors",
    "NumericalError": "cmlgraph.errors",
    "FewShotGraph": "cmlgraph.graphs", "from_arrays": "cmlgraph.graphs", "from_networkx": "cmlgraph.graphs",
    "from_pyg": "cmlgraph.graphs", "list_datasets": "cmlgraph.graphs", "load_graph": "cmlgraph.graphs",
    "Prediction": "cmlgraph.predict", "adapt": "cmlgraph.predict", "embed": "cmlgraph.predict",
    "predict_with_method": "cmlgraph.predict",
    "list_runs": "cmlgraph.runs",
}

__all__ = [
    "ALGORITHMS", "CmlgraphError", "Config", "ConfigError", "DataError", "Episode", "FewShotGraph",
    "InnerLoopConfig", "MetaModel", "NumericalError", "OuterLoss", "Prediction", "adapt", "embed", "fit",
    "fit_config", "from_arrays", "from_networkx", "from_pyg", "get_algorithm", "inference_state", "inner_loop",
    "list_datasets", "list_runs", "load_graph", "make_config", "outer_objective", "parameters_of",
    "predict_with_method", "resume",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name in this module."""
    module = _LAZY.get(name)
    if module is None:
        if importlib.util.find_spec(f"cmlgraph.{name}") is not None:  # a subpackage: ``cmlgraph.graphs.…``
            return importlib.import_module(f"cmlgraph.{name}")
        raise AttributeError(f"module 'cmlgraph' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
