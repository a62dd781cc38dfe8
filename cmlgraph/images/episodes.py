"""N-way K-shot episode sampling over labelled items (images), from a private ``torch.Generator``.

Why separate from the datasets: the same sampler serves every image dataset (and any labelled collection), it
never touches the global RNG, so training is reproducible, and evaluation episodes can be fixed per seed,
saved with the run as stacked tensors and loaded back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cmlgraph.errors import ConfigError, DataError
from cmlgraph.text import have


@dataclass
class ImageEpisode:
    """One N-way K-shot Q-query task, as indices into the dataset (same fields as the graph ``NodeEpisode``).

    Labels are remapped to ``0..ways-1`` in the order of ``classes``; ``support`` and ``query`` are disjoint.

    Attributes:
        support: ``int64[ways * shots]`` item indices, class-major (the shots of class 0 first).
        support_y: ``int64[ways * shots]`` labels in ``0..ways-1``.
        query: ``int64[ways * queries]`` item indices, class-major.
        query_y: ``int64[ways * queries]`` labels in ``0..ways-1``.
        classes: ``int64[ways]`` the original class ids.
    """

    support: Tensor
    support_y: Tensor
    query: Tensor
    query_y: Tensor
    classes: Tensor


EPISODE_FIELDS = ("support", "support_y", "query", "query_y", "classes")


class ImageEpisodeSampler:
    """Draw episodes from ``classes`` of ``labels``; the setting is checked once, up front.

    Args:
        labels: ``int64[N]`` class id of each item.
        classes: Class ids of the split to draw from.
        ways: Classes per episode.
        shots: Support items per class.
        queries: Query items per class.
        generator: A private ``torch.Generator``, or an int seed for a new one; the global RNG is never used.

    Raises:
        ConfigError: ``ways``, ``shots`` or ``queries`` out of range, more ways than classes in the split, or
            classes with fewer than ``shots + queries`` items (they are named).
    """

    def __init__(
        self,
        labels: Tensor,
        classes: Sequence[int] | Tensor,
        ways: int,
        shots: int,
        queries: int,
        generator: torch.Generator | int = 0,
    ) -> None:
        if ways < 1 or shots < 1 or queries < 1:
            raise ConfigError(
                f"episodes need ways >= 1, shots >= 1 and queries >= 1, got ways={ways}, shots={shots}, "
                f"queries={queries}"
            )
        class_list = [int(c) for c in (classes.tolist() if isinstance(classes, Tensor) else classes)]
        if len(set(class_list)) != len(class_list) or any(c < 0 for c in class_list):
            raise DataError(f"the split's class ids must be distinct and >= 0, got {class_list}")
        if ways > len(class_list):
            raise ConfigError(
                f"ways={ways} but the split has only {len(class_list)} classes; lower ways to at most "
                f"{len(class_list)} or use a split with more classes"
            )
        labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=max(class_list, default=0) + 1) if labels.numel() else None
        starts = torch.cumsum(counts, 0) - counts if counts is not None else None
        self.pools: list[Tensor] = []
        short: list[str] = []
        for c in class_list:
            n = int(counts[c]) if counts is not None and c < len(counts) else 0
            pool = order[int(starts[c]) : int(starts[c]) + n] if n else torch.empty(0, dtype=torch.int64)
            self.pools.append(pool)
            if n < shots + queries:
                short.append(f"{c} ({n})")
        if short:
            shown = ", ".join(short[:10]) + (f", ... ({len(short)} in all)" if len(short) > 10 else "")
            raise ConfigError(
                f"{have(len(short), 'class')} fewer than shots + queries = {shots + queries} items: {shown}; "
                "lower shots or queries, or drop these classes from the split"
            )
        self.classes = torch.tensor(class_list, dtype=torch.int64)
        self.ways, self.shots, self.queries = ways, shots, queries
        if isinstance(generator, int):
            seed, generator = generator, torch.Generator()
            generator.manual_seed(seed)
        self.generator = generator

    def sample(self, generator: torch.Generator | None = None) -> ImageEpisode:
        """Draw one episode from ``generator`` (default: the sampler's own): ``ways`` distinct classes, then
        ``shots + queries`` distinct items of each. Domains pass their caller's generator rather than set the
        shared sampler's (two threads drawing at once would draw from each other's streams)."""
        g = self.generator if generator is None else generator
        picked = torch.randperm(len(self.pools), generator=g)[: self.ways]
        support, query = [], []
        for i in picked.tolist():
            pool = self.pools[i]
            chosen = pool[torch.randperm(len(pool), generator=g)[: self.shots + self.queries]]
            support.append(chosen[: self.shots])
            query.append(chosen[self.shots :])
        way_ids = torch.arange(self.ways, dtype=torch.int64)
        return ImageEpisode(
            support=torch.cat(support),
            support_y=way_ids.repeat_interleave(self.shots),
            query=torch.cat(query),
            query_y=way_ids.repeat_interleave(self.queries),
            classes=self.classes[picked],
        )

    def __iter__(self) -> Iterator[ImageEpisode]:
        """Yield episodes forever."""
        while True:
            yield self.sample()

    def state_dict(self) -> dict[str, Tensor]:
        """The generator's state, so a resumed run draws the same episodes it would have drawn."""
        return {"generator_state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the generator's state saved by :meth:`state_dict`."""
        self.generator.set_state(state["generator_state"])


def fixed_episodes(
    labels: Tensor,
    classes: Sequence[int] | Tensor,
    ways: int,
    shots: int,
    queries: int,
    num_episodes: int,
    seed: int,
) -> list[ImageEpisode]:
    """``num_episodes`` episodes that depend only on the arguments (evaluation tasks fixed per seed)."""
    if num_episodes < 1:
        raise ConfigError(f"num_episodes must be >= 1, got {num_episodes}")
    sampler = ImageEpisodeSampler(labels, classes, ways, shots, queries, generator=seed)
    return [sampler.sample() for _ in range(num_episodes)]


def episodes_to_state(episodes: Sequence[ImageEpisode]) -> dict[str, Tensor]:
    """Stack episodes into ``{field: int64[E, ...]}`` for ``torch.save`` (``weights_only`` load)."""
    if not episodes:
        raise ConfigError("cannot save an empty list of episodes")
    return {name: torch.stack([getattr(ep, name) for ep in episodes]) for name in EPISODE_FIELDS}


def episodes_from_state(state: dict[str, Tensor]) -> list[ImageEpisode]:
    """Inverse of :func:`episodes_to_state`."""
    missing = [name for name in EPISODE_FIELDS if name not in state]
    if missing:
        raise DataError(f"saved episodes lack the fields {missing}; expected {list(EPISODE_FIELDS)}")
    count = len(state["support"])
    return [ImageEpisode(**{name: state[name][i] for name in EPISODE_FIELDS}) for i in range(count)]


__all__ = [
    "ImageEpisode",
    "ImageEpisodeSampler",
    "episodes_from_state",
    "episodes_to_state",
    "fixed_episodes",
]
