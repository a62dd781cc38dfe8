"""The leaderboard's methods and settings: which runs it needs, named as on the command line.

A method is an algorithm of the run pipeline (``--algo`` name, :data:`cmlgraph.algorithms.registry.ALGORITHMS`),
with ``+cml`` for the same algorithm with Cooperative Meta-Learning. The training-free baselines of issue 17
(``sgc-proto``, ``label-prop``, ``sgc-logreg``, ``gcl-probe``) are algorithms too; they take no ``+cml`` (CML
shapes meta-training, which they do not have).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cmlgraph.errors import ConfigError

#: The training-free baselines: the reference every other method is paired against.
BASELINES: tuple[str, ...] = ("sgc-proto", "label-prop", "sgc-logreg", "gcl-probe")

#: Default ``--methods``: the four baselines, MAML ± CML, G-Meta ± CML, AMM-GNN ± CML and ProtoNet.
DEFAULT_METHODS: tuple[str, ...] = BASELINES + ("maml", "maml+cml", "gmeta", "gmeta+cml", "ammgnn", "ammgnn+cml",
                                                "protonet")

#: Per-graph settings when ``--ways``/``--shots`` are not given: (ways, shots), the local graphs of issue 17.
GRAPH_PRESETS: dict[str, tuple[int, tuple[int, ...]]] = {
    "cora": (2, (1, 3)),
    "citeseer": (2, (1, 3)),
    "amazon-computers": (2, (1, 5)),
    "amazon-photo": (2, (1, 3)),
    "coauthor-cs": (5, (1, 3)),
    "synthetic": (2, (1, 3)),
}


@dataclass(frozen=True)
class Method:
    """One leaderboard entry: an algorithm, with or without CML."""

    algo: str
    cml: bool = False

    @property
    def name(self) -> str:
        """The CLI name, e.g. ``maml+cml``."""
        return self.algo + ("+cml" if self.cml else "")

    @property
    def baseline(self) -> bool:
        """Whether this is a training-free baseline."""
        return self.algo in BASELINES


@dataclass(frozen=True)
class Setting:
    """One graph and few-shot setting: every method is run on its fixed test tasks."""

    graph: str
    ways: int
    shots: int

    @property
    def label(self) -> str:
        """E.g. ``cora 2-way 3-shot``."""
        return f"{self.graph} {self.ways}-way {self.shots}-shot"

    @property
    def slug(self) -> str:
        """E.g. ``cora-2w3s`` (run folder prefix); a graph file ``/data/mysbm.npz`` gives ``mysbm-2w3s`` (its path
        is no folder name: a new-user trial's leaderboard failed after it had started)."""
        graph = self.graph
        if graph.endswith(".npz"):
            graph = Path(graph).name.removesuffix(".npz") or "graph"
        return f"{graph}-{self.ways}w{self.shots}s"


def parse_methods(names: Sequence[str] | None, log: Callable[[str], None] = print) -> list[Method]:
    """Methods from CLI names (``None``: :data:`DEFAULT_METHODS`, leaving out those not registered yet, each named
    in ``log``).

    Raises:
        ConfigError: An unknown algorithm, ``+cml`` on a baseline, or a method given twice.
    """
    from cmlgraph.algorithms.registry import ALGORITHMS

    if names is None:
        missing = [n for n in DEFAULT_METHODS if n.removesuffix("+cml") not in ALGORITHMS]
        if missing:
            log(f"leaving out {', '.join(missing)}: not registered algorithms in this cmlgraph")
        names = [n for n in DEFAULT_METHODS if n not in missing]
    out: list[Method] = []
    for name in names:
        algo, cml = (name[: -len("+cml")], True) if name.endswith("+cml") else (name, False)
        if algo not in ALGORITHMS:
            raise ConfigError(f"unknown method {name!r}; valid: an algorithm ({', '.join(ALGORITHMS)}), "
                              f"optionally with +cml (e.g. maml+cml)")
        if cml and algo in BASELINES:
            raise ConfigError(f"method {name!r}: {algo} is a training-free baseline, CML does not apply; use {algo}")
        method = Method(algo, cml)
        if method in out:
            raise ConfigError(f"method {name!r} is given twice in --methods; list each once")
        out.append(method)
    if not out:
        raise ConfigError("no methods; give --methods as a comma-separated list, e.g. sgc-proto,maml,maml+cml")
    return out


def settings(graphs: Sequence[str], ways: int | None = None, shots: Sequence[int] | None = None) -> list[Setting]:
    """Every (graph, ways, shots) cell: ``ways``/``shots`` as given, else the graph's :data:`GRAPH_PRESETS`.

    Raises:
        ConfigError: A graph without a preset and no ``--ways``/``--shots``, or a non-positive ways/shots.
    """
    if not graphs:
        raise ConfigError("no graphs; give --graphs as a comma-separated list, e.g. cora,citeseer")
    if ways is not None and ways < 2:
        raise ConfigError(f"--ways {ways}: a few-shot task needs at least 2 classes")
    if shots is not None and any(k < 1 for k in shots):
        raise ConfigError(f"--shots {','.join(map(str, shots))}: each shot count must be at least 1")
    out = []
    for graph in graphs:
        preset = GRAPH_PRESETS.get(graph)
        if preset is None and (ways is None or shots is None):
            raise ConfigError(f"graph {graph!r} has no leaderboard preset ({', '.join(GRAPH_PRESETS)}); "
                              f"give --ways and --shots")
        w = ways if ways is not None else preset[0]  # type: ignore[index]
        for k in shots if shots is not None else preset[1]:  # type: ignore[index]
            out.append(Setting(graph, w, k))
    return out
