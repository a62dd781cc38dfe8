"""MAML-family algorithms and the ProtoNet baseline; CML is a switch on each."""

from cmlgraph.algorithms.base import MetaAlgorithm, MetaStep, add_gradient_noise
from cmlgraph.algorithms.mamlpp import MAMLPlusPlus, msl_weights
from cmlgraph.algorithms.protonet import ProtoNet, prototype_logits
from cmlgraph.algorithms.registry import ALGORITHMS, get_algorithm
from cmlgraph.algorithms.sharp import SharpMAML, sam_perturbation
from cmlgraph.algorithms.tlp import AMMGNN, GMeta
from cmlgraph.algorithms.variants import ANIL, BOIL

__all__ = ["ALGORITHMS", "AMMGNN", "ANIL", "BOIL", "GMeta", "MAMLPlusPlus", "MetaAlgorithm", "MetaStep", "ProtoNet",
           "SharpMAML", "add_gradient_noise", "get_algorithm", "msl_weights", "prototype_logits", "sam_perturbation"]
