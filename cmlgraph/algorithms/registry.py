"""Algorithms keyed by the CLI's names."""

from __future__ import annotations

from cmlgraph.algorithms.base import MetaAlgorithm
from cmlgraph.algorithms.baselines import BASELINE_ALGORITHMS
from cmlgraph.algorithms.mamlpp import MAMLPlusPlus
from cmlgraph.algorithms.protonet import ProtoNet
from cmlgraph.algorithms.sharp import SharpMAML
from cmlgraph.algorithms.tlp import AMMGNN, GMeta
from cmlgraph.algorithms.variants import ANIL, BOIL
from cmlgraph.config import AlgoConfig
from cmlgraph.errors import ConfigError

ALGORITHMS: dict[str, type[MetaAlgorithm]] = {
    "maml": MetaAlgorithm,
    "anil": ANIL,
    "boil": BOIL,
    "maml++": MAMLPlusPlus,
    "mamlpp": MAMLPlusPlus,
    "sharp-maml": SharpMAML,
    "protonet": ProtoNet,
    "gmeta": GMeta,
    "ammgnn": AMMGNN,
    **BASELINE_ALGORITHMS,  # training-free: sgc-proto, label-prop, sgc-logreg, gcl-probe (graph task)
}


def get_algorithm(cfg: AlgoConfig, total_steps: int = 1, seed: int = 0) -> MetaAlgorithm:
    """Build the algorithm named ``cfg.algo``; an unknown name lists the valid ones."""
    try:
        cls = ALGORITHMS[cfg.algo]
    except KeyError:
        raise ConfigError(f"unknown algorithm {cfg.algo!r}; valid algorithms: {', '.join(ALGORITHMS)}") from None
    return cls(cfg, total_steps=total_steps, seed=seed)
