"""Fixed evaluation tasks without repeats: draw until ``n`` distinct tasks, or every distinct task there is.

Why: a split whose classes have few labelled nodes (exactly ``shots + queries`` each) admits only a handful of
distinct tasks; drawing 500 of them with replacement repeated each many times and the 95% CI, which treats the
500 scores as independent, came out about six times too narrow (±0.0195 where the 18 distinct tasks give ±0.1148;
issue 19 item 1, cf. cbfinn/maml #83). A task is counted once; :func:`episode_key` says
when two are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from torch import Tensor

#: With the number of distinct tasks unknown, stop after this many draws in a row that brought no new task.
PATIENCE = 2000
#: Never more draws than this many per task asked for (plus ``PATIENCE``), whatever the count says.
DRAWS_PER_TASK = 50


def episode_key(ep: Any) -> Hashable | None:
    """What makes two episodes the same task: per class, its id and its support and query node sets.

    Insensitive to the order of the classes (their labels ``0..ways-1``) and of the nodes: the same support and
    query sets labelled in another order hold the same information, so counting both as independent tasks in a
    confidence interval would overstate it. ``None`` for episodes without node or item ids (sinusoid tasks: never
    equal).
    """
    fields = ("support", "support_y", "query", "query_y", "classes")
    if not all(isinstance(getattr(ep, f, None), Tensor) for f in fields):
        return None
    return frozenset(
        (int(c), frozenset(ep.support[ep.support_y == i].tolist()), frozenset(ep.query[ep.query_y == i].tolist()))
        for i, c in enumerate(ep.classes.tolist())
    )


def draw_distinct(draw: Callable[[int], list[Any]], n: int, possible: int | None = None) -> list[Any]:
    """Up to ``n`` distinct episodes: the first ``n`` draws less repeats, topped up by further draws.

    When no repeat occurs the result is exactly ``draw(n)`` (the tasks of earlier versions, for the same seed).

    Args:
        draw: ``draw(k)`` returns the next ``k`` episodes of one seeded generator.
        n: Tasks asked for.
        possible: How many distinct tasks exist (``None``: unknown; drawing then stops after :data:`PATIENCE`
            draws in a row without a new one).

    Returns:
        ``min(n, possible)`` distinct episodes in the order first drawn (fewer only if the draw limit is hit);
        every draw as is for episodes without ids (sinusoid tasks, never equal).
    """
    first = draw(n)
    keys = [episode_key(e) for e in first]
    if any(k is None for k in keys):
        return first
    out, seen = [], set()
    for ep, key in zip(first, keys, strict=True):
        if key not in seen:
            seen.add(key)
            out.append(ep)
    target = n if possible is None else min(n, int(possible))
    misses, draws = 0, 0
    while len(out) < target and draws < DRAWS_PER_TASK * n + PATIENCE and (possible is not None or misses < PATIENCE):
        ep = draw(1)[0]
        draws += 1
        key = episode_key(ep)
        if key in seen:
            misses += 1
            continue
        seen.add(key)
        out.append(ep)
        misses = 0
    return out


__all__ = ["DRAWS_PER_TASK", "PATIENCE", "draw_distinct"]
