"""N-way K-shot Q-query node episodes drawn from a private ``torch.Generator``, and their (de)serialisation.

Why separate from the datasets: the design asks for a sampler that only needs labels and a class list, draws from
its own generator (never the global RNG, so data order does not depend on model initialisation), and for fixed
evaluation episodes that are saved with the run (``torch.save`` of plain tensors, loadable with
``weights_only=True``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from cmlgraph.domains.distinct import episode_key
from cmlgraph.errors import ConfigError
from cmlgraph.graphs.splits import class_splits
from cmlgraph.graphs.types import NodeEpisode
from cmlgraph.text import have

_STATE_KEYS = ("support", "support_y", "query", "query_y", "classes")


def _check_setting(ways: int, shots: int, queries: int) -> None:
    for name, value, low in (("ways", ways, 1), ("shots", shots, 1), ("queries", queries, 0)):
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{name}={value!r} is invalid; use an integer >= {low}")


class EpisodeSampler:
    """Draw random N-way K-shot Q-query episodes over a fixed set of classes.

    Each episode picks ``ways`` distinct classes at random, then ``shots + queries`` distinct nodes per class;
    the first ``shots`` are support, the rest query, so support and query never share a node. Labels are the
    class's position in ``episode.classes`` (``0..ways-1``).

    Args:
        y: ``LongTensor[num_nodes]`` labels, ``-1`` for unlabelled nodes.
        classes: The class ids of one split.
        ways: Classes per episode (N).
        shots: Support nodes per class (K).
        queries: Query nodes per class (Q).
        generator: The sampler's own random generator.

    Raises:
        ConfigError: Fewer than ``ways`` classes, or classes with fewer than ``shots + queries`` labelled nodes
            (the message lists them with their node counts).
    """

    def __init__(
        self,
        y: Tensor,
        classes: Sequence[int],
        ways: int,
        shots: int,
        queries: int,
        generator: torch.Generator,
    ) -> None:
        _check_setting(ways, shots, queries)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.generator = generator
        self.classes = [int(c) for c in classes]
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classes {self.classes} list a class twice; give each class once")
        if len(self.classes) < ways:
            raise ConfigError(
                f"ways={ways} but the split has only {len(self.classes)} classes ({self.classes}); "
                + (f"use ways <= {len(self.classes)} or " if len(self.classes) >= 2 else "use ")
                + "a split with more classes"
            )
        y = y.detach().to("cpu", torch.long)
        order = torch.argsort(y, stable=True)
        sorted_y = y[order]
        need = shots + queries
        self._nodes: list[Tensor] = []
        short: list[str] = []
        for c in self.classes:
            lo = int(torch.searchsorted(sorted_y, c, right=False))
            hi = int(torch.searchsorted(sorted_y, c, right=True))
            self._nodes.append(order[lo:hi])
            if hi - lo < need:
                short.append(f"{c} ({hi - lo} nodes)")
        if short:
            sizes = sorted(len(n) for n in self._nodes)
            shown = ", ".join(short[:8]) + (f", ... ({len(short) - 8} more)" if len(short) > 8 else "")
            each = (f"{sizes[0]} labelled nodes each" if sizes[0] == sizes[-1] else
                    f"{sizes[0]} to {sizes[-1]} labelled nodes")
            fits = (f"shots+queries <= {sizes[0]} fits every class of the split (its classes have {each}); "
                    if sizes[0] >= 2 else "")
            raise ConfigError(
                f"{have(len(short), 'class')} fewer than shots+queries={need} labelled nodes: {shown}; {fits}"
                "lower shots/queries, or use a split without these classes (split= in Python, --split on the command "
                "line)"
            )

    def sample(self, generator: torch.Generator | None = None) -> NodeEpisode:
        """Draw one episode from ``generator`` (default: the sampler's own).

        A domain passes its caller's generator here rather than setting the shared sampler's: two threads drawing
        from one split at once (a prefetch worker and the main thread) would otherwise draw from each other's
        streams (session 38)."""
        g = self.generator if generator is None else generator
        pick = torch.randperm(len(self.classes), generator=g)[: self.ways].tolist()
        need = self.shots + self.queries
        support, query = [], []
        for i in pick:
            nodes = self._nodes[i]
            chosen = nodes[torch.randperm(nodes.numel(), generator=g)[:need]]
            support.append(chosen[: self.shots])
            query.append(chosen[self.shots:])
        labels = torch.arange(self.ways)
        return NodeEpisode(
            support=torch.cat(support),
            support_y=labels.repeat_interleave(self.shots),
            query=torch.cat(query),
            query_y=labels.repeat_interleave(self.queries),
            classes=torch.tensor([self.classes[i] for i in pick], dtype=torch.long),
        )

    def num_distinct(self) -> int:
        """How many distinct episodes this sampler can draw, as :func:`episode_key` tells them apart.

        The sum over every set of ``ways`` classes of the product, over its classes, of the ways to pick the
        support and then the query nodes (``C(n_c, shots) * C(n_c - shots, queries)``): the elementary symmetric
        polynomial of degree ``ways`` of the per-class counts (exact integers). A split whose classes have exactly
        ``shots + queries`` labelled nodes has few (issue 19 item 1: 2 classes of 3 nodes, 1 shot: 9).
        """
        per_class = [math.comb(int(nodes.numel()), self.shots) * math.comb(int(nodes.numel()) - self.shots,
                                                                           self.queries) for nodes in self._nodes]
        e = [1] + [0] * self.ways  # e[k]: sum over k-subsets of the classes seen so far
        for w in per_class:
            for k in range(self.ways, 0, -1):
                e[k] += e[k - 1] * w
        return e[self.ways]

    def __iter__(self):  # noqa: D105 - an endless stream of episodes
        while True:
            yield self.sample()


def fixed_episodes(
    y: Tensor, classes: Sequence[int], ways: int, shots: int, queries: int, n: int, seed: int
) -> list[NodeEpisode]:
    """Draw ``n`` episodes from a generator seeded with ``seed``: the same list for the same arguments.

    Used for the fixed validation/test tasks saved with a run.
    """
    if n < 1:
        raise ConfigError(f"number of episodes n={n} is invalid; use n >= 1")
    sampler = EpisodeSampler(y, classes, ways, shots, queries, torch.Generator().manual_seed(int(seed)))
    return [sampler.sample() for _ in range(n)]


def episodes_to_state(episodes: Sequence[NodeEpisode]) -> dict[str, Tensor]:
    """Stack episodes into a dict of tensors (``[n, ...]`` each) that ``torch.save`` writes as plain tensors.

    Raises:
        ConfigError: Empty list or episodes of different shapes.
    """
    if not episodes:
        raise ConfigError("cannot save an empty list of episodes; draw at least one")
    try:
        return {k: torch.stack([getattr(e, k) for e in episodes]) for k in _STATE_KEYS}
    except RuntimeError as exc:
        raise ConfigError(f"episodes have different shapes and cannot be stacked ({exc})") from exc


def episodes_from_state(state: dict[str, Tensor]) -> list[NodeEpisode]:
    """Rebuild the episodes saved by :func:`episodes_to_state`.

    Raises:
        ConfigError: Missing keys or inconsistent episode counts.
    """
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise ConfigError(f"episode state lacks {missing}; it has {sorted(state)}. Save it with episodes_to_state")
    n = int(state["support"].shape[0])
    if any(int(state[k].shape[0]) != n for k in _STATE_KEYS):
        raise ConfigError(f"episode state tensors disagree on the number of episodes: "
                          f"{ {k: int(state[k].shape[0]) for k in _STATE_KEYS} }")
    return [NodeEpisode(**{k: state[k][i].clone() for k in _STATE_KEYS}) for i in range(n)]


__all__ = ["EpisodeSampler", "class_splits", "episode_key", "episodes_from_state", "episodes_to_state",
           "fixed_episodes"]
