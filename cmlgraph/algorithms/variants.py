"""ANIL and BOIL: MAML with a different set of groups adapting in the inner loop."""

from __future__ import annotations

from cmlgraph.algorithms.base import MetaAlgorithm


class ANIL(MetaAlgorithm):
    """Almost No Inner Loop (Raghu et al., 2020): only the head θ adapts; ψ is fixed within a task."""

    name = "anil"
    default_adapt = ("head",)


class BOIL(MetaAlgorithm):
    """Body Only update in Inner Loop (Oh et al., 2021): the head θ is frozen in the inner loop, ψ adapts."""

    name = "boil"
    default_adapt = ("extractor",)
