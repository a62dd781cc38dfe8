"""Fit a user's graph to the episode settings given at training time (``cmlgraph.fit(graph, ways=..., ...)``).

Why: a graph built with :func:`~cmlgraph.graphs.from_arrays` without ``ways``/``shots``/``queries`` does not know
the episodes it will serve. At fit time the settings are known, so the same rules apply as at construction: classes
with fewer than ``shots + queries`` labelled nodes are dropped (warned, noted, named by the user's labels), and a
split the user never chose is redrawn so that every split holds at least ``ways`` classes when the graph allows it.
Errors name the user's labels and the Python arguments to change, never an internal class id or a CLI flag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from cmlgraph.errors import ConfigError
from cmlgraph.graphs.fewshot_graph import SPLIT_NAMES, FewShotGraph
from cmlgraph.graphs.splits import class_splits, parse_counts
from cmlgraph.text import counted, have
from cmlgraph.user_warnings import warn_user

VAL_EMPTY_NOTE = ("the 'val' split is empty (too few classes for three disjoint splits): validation episodes are "
                  "drawn from the train classes, so validation accuracy is not on unseen classes")


def label_names(graph: FewShotGraph, classes: Sequence[int], limit: int = 20) -> str:
    """The user's labels of class ids (``info["class_names"]``), quoted, e.g. ``'cat', 'dog'``."""
    names = graph.info.get("class_names")
    shown = [repr(names[c]) if names is not None and 0 <= c < len(names) else str(c) for c in list(classes)[:limit]]
    return ", ".join(shown) + (" ..." if len(classes) > limit else "")


def default_split(num_classes: int, ways: int | None) -> str:
    """The split used when the user gives none: about 60/20/20 % of the classes, at least ``ways`` in each.

    With ``2 * ways <= C < 3 * ways`` classes the validation split is empty (``C-ways/0/ways``; validation then
    draws from the train classes, which the graph's notes say). Fewer than ``2 * ways`` classes cannot give
    disjoint train and test classes; the counts returned then make :func:`check_split_ways` explain the fix.
    """
    if ways is not None and num_classes < 3 * ways:
        test = min(ways, num_classes)
        return f"{num_classes - test}/0/{test}"
    val = max(1, round(0.2 * num_classes)) if num_classes >= 3 else 0
    if ways is not None:
        val = max(val, ways)
    return f"{num_classes - 2 * val}/{val}/{val}"


def check_split_ways(graph: FewShotGraph, ways: int, need: int, *, default: bool, dropped: str = "") -> None:
    """Check that train, test and a non-empty val hold at least ``ways`` classes each.

    Raises:
        ConfigError: Naming the split, its classes by the user's labels, and changes that are possible
            (never ``ways <= 0``): a smaller ``ways``, a split argument, or more labelled classes.
    """
    pooled = sorted(c for s in SPLIT_NAMES for c in graph.splits.get(s, []))
    usable = len(pooled)
    for name in SPLIT_NAMES:
        classes = graph.splits.get(name, [])
        if (name == "val" and not classes) or len(classes) >= ways:
            continue
        fixes = []
        if default:
            most = usable // 2 if usable < 3 * ways else usable // 3
            if most >= 2:
                fixes.append(f"use ways <= {most}")
            fixes.append(f"label more nodes: the graph has {usable} classes ({label_names(graph, pooled)}) with at "
                         f"least shots+queries={need} "
                         f"labelled nodes, and ways={ways} needs at least {2 * ways} (disjoint train and test "
                         f"classes; {3 * ways} with a validation split)")
        else:
            if len(classes) >= 2:
                fixes.append(f"use ways <= {len(classes)}")
            fixes.append(f"give a split with at least {ways} {name} classes (split='TRAIN/VAL/TEST' counts, or "
                         f"a mapping of your labels, e.g. split={{'train': [...], 'val': [...], 'test': [...]}}), "
                         f"or leave split unset")
        missing = graph.info.get("missing_label_nodes", 0)
        if missing:
            fixes.append(f"{missing} nodes labelled {graph.info.get('missing_label')!r} were treated as unlabelled "
                         f"(missing_label={graph.info.get('missing_label')!r}); pass missing_label=None to keep "
                         f"them as a class")
        if dropped:
            fixes.append(f"lower shots or queries ({dropped})")
        if usable < 2 * 2:  # not even 2-way tasks on disjoint classes: nothing to meta-train or test on
            fixes.append("to label the graph's nodes from a few labelled ones without training, use a "
                         "training-free method: cmlgraph.predict_with_method('sgc-proto', graph, support) (or "
                         "the predict command's method option), which needs only 2 classes")
        shown = f" ({label_names(graph, classes)})" if classes else ""
        has = counted(len(classes), "class", "classes")
        raise ConfigError(f"{graph.name}: the {name!r} split has {has}{shown} but ways={ways}; "
                          + "; or ".join(fixes))


def split_text(graph: FewShotGraph, splits: dict[str, list[int]]) -> str:
    """``train 'a', 'b'; val 'c'; test 'd'``: each split's classes by the user's labels."""
    return "; ".join(f"{k} {label_names(graph, sorted(splits.get(k, []))) or '(none)'}" for k in SPLIT_NAMES)


def resplit_note(graph: FewShotGraph, splits: dict[str, list[int]], ways: int, why: str) -> str | None:
    """A note naming which classes went where when ``splits`` differ from the graph's own split, else None.

    Why: ``fit`` redraws the split of a graph built without ``ways`` (6 classes: ``print(graph)`` showed 4/1/1,
    training used 2/2/2) and only ``summary["class_labels"]`` told (issue 19 item 5).
    """
    own = {k: sorted(graph.splits.get(k, [])) for k in SPLIT_NAMES}
    used = {k: sorted(splits.get(k, [])) for k in SPLIT_NAMES}
    if own == used or not any(own.values()):
        return None
    counts = "/".join(str(len(used[k])) for k in SPLIT_NAMES)
    was = "/".join(str(len(own[k])) for k in SPLIT_NAMES)
    return (f"{graph.name}: the classes were re-split {counts} for ways={ways} ({why}): {split_text(graph, used)} "
            f"(the graph's own split, {was} as print(graph) shows: {split_text(graph, own)})")


def _drop_small(graph: FewShotGraph, need: int) -> tuple[torch.Tensor, list[int], list[str]]:
    """Labels with classes of fewer than ``need`` labelled nodes set to -1; kept classes; notes."""
    y = graph.y
    counts = torch.bincount(y[y >= 0], minlength=int(y.max()) + 1 if y.numel() and int(y.max()) >= 0 else 0)
    present = [c for c in range(counts.numel()) if int(counts[c]) > 0]
    small = [c for c in present if int(counts[c]) < need]
    if not small:
        return y, present, []
    names = graph.info.get("class_names")
    desc = ", ".join(f"{names[c]!r} ({int(counts[c])} nodes)" if names is not None and c < len(names)
                     else f"{c} ({int(counts[c])} nodes)" for c in small[:20])
    msg = (f"dropped {counted(len(small), 'class', 'classes')} with fewer than shots+queries={need} labelled "
                   f"nodes: {desc}"
           f"{' ...' if len(small) > 20 else ''}")
    warn_user(msg)
    y = torch.where(torch.isin(y, torch.tensor(small, dtype=torch.long)), torch.full_like(y, -1), y)
    return y, [c for c in present if c not in set(small)], [msg]


def fit_graph(graph: FewShotGraph, ways: int, shots: int, queries: int, *, split: Any = None,
              seed: int = 0) -> FewShotGraph:
    """A user's graph fitted to ``ways``-way ``shots``-shot ``queries``-query episodes.

    Args:
        graph: A graph from :func:`~cmlgraph.graphs.from_arrays` (or ``from_pyg``/``from_networkx``).
        ways: Classes per episode.
        shots: Support nodes per class.
        queries: Query nodes per class.
        split: A split given at fit time (counts ``"a/b/c"``, a mapping or a JSON file); default: the one given
            when the graph was built, else a fresh default split fitting ``ways``.
        seed: Seed of a counts split.

    Returns:
        ``graph`` itself when nothing changes, else a copy with small classes unlabelled and the split redrawn.

    Raises:
        ConfigError: The settings cannot give episodes; the message names the user's labels and the fix.
    """
    need = int(shots) + int(queries)
    y, kept, notes = _drop_small(graph, need)
    split = split_by_labels(split, graph.info.get("class_names"))
    given = split if split is not None else graph.info.get("split_spec")
    if not kept:
        raise ConfigError(f"{graph.name}: no class has at least shots+queries={need} labelled nodes; lower shots "
                          f"or queries, or label more nodes")
    if given is None:
        spec: Any = default_split(len(kept), ways)
    elif isinstance(given, str) and _is_counts(given):
        spec = given
    elif isinstance(given, (tuple, list)) and len(given) == 3:
        spec = tuple(int(n) for n in given)
    elif split is None:  # explicit lists given at build time: the same lists without the dropped classes
        spec = {k: [c for c in graph.splits.get(k, []) if c in set(kept)] for k in SPLIT_NAMES}
    else:
        spec = given
    if not notes and split is None and given is not None:  # the split chosen at build time still holds
        fitted = graph
    else:
        try:
            splits = class_splits(kept, spec, seed)
        except ConfigError as exc:
            raise ConfigError(f"{graph.name}: {exc} ({have(len(kept), 'class')} at least shots+queries={need} "
                              f"labelled nodes: {label_names(graph, kept)})") from None
        info = {**graph.info, "split": spec if isinstance(spec, str) else "explicit", "split_seed": seed}
        base = [n for n in graph.notes if "'val' split is empty" not in n and "classes are in no split" not in n]
        extra = [n for n in notes if n not in base]
        if not splits["val"]:
            extra.append(VAL_EMPTY_NOTE)
        why = ("the split given to fit" if split is not None else f"classes with fewer than shots+queries={need} "
               f"labelled nodes were removed" if notes else "the graph's own split was drawn without ways")
        moved = resplit_note(graph, splits, ways, why)
        if moved:  # say which classes went where (issue 19 item 5): print(graph) shows the graph's own split
            if not isinstance(split, dict):  # classes the user listed are what they asked for: a note only
                warn_user(moved)
            extra.append(moved)
        fitted = dataclasses.replace(graph, y=y, splits=splits, notes=[*base, *extra], info=info,
                                     full_graph_cache={})
    check_split_ways(fitted, ways, need, default=given is None, dropped=notes[0] if notes else "")
    return fitted


def split_by_labels(split: Any, class_names: Sequence[Hashable] | None) -> Any:
    """A split mapping that lists the user's own labels, in class ids; anything else as it is.

    A user's graph numbers its classes 0..C-1 in sorted label order (``info["class_names"][i]`` is class i's
    label), which the user never sees: a mapping of labels (``{"train": ["cat", "dog"], ...}``, or ints such as
    ``[10, 20, 30]``) is read as labels when every entry is one of the graph's labels. Ids still work where they
    are no labels (string labels, or int labels that are not ids). A mapping whose every entry is both a label and
    the id of *another* class (labels ``1..10``, entries ``[1, 2, 3]``) is refused, not guessed.

    Args:
        split: What was given (counts, a mapping, a JSON file path, ``None``).
        class_names: The graph's labels by class id (``None``: a registered dataset, whose ids are its labels).

    Raises:
        ConfigError: The mapping reads differently as labels and as ids.
    """
    if not isinstance(split, dict) or not class_names:
        return split
    names = list(class_names)
    if names == list(range(len(names))):
        return split
    entries = [e for v in split.values() if isinstance(v, (list, tuple)) for e in v]
    index: dict[Any, int] = {}
    for i, name in enumerate(names):
        try:
            index.setdefault(name, i)
        except TypeError:  # an unhashable label cannot be listed
            return split
    try:
        unknown = {k: [e for e in v if e not in index] for k, v in split.items() if isinstance(v, (list, tuple))}
    except TypeError:  # an unhashable entry: left to the split's own check
        return split
    if not entries or any(unknown.values()):
        if any(isinstance(e, str) for e in entries):  # meant as labels (ids are ints): name what is no label
            bad = "; ".join(f"{k}: {', '.join(repr(e) for e in v)}" for k, v in unknown.items() if v)
            shown = ", ".join(repr(n) for n in names[:30]) + (" ..." if len(names) > 30 else "")
            raise ConfigError(f"the split lists classes that are no label of this graph ({bad}); its labels: "
                              f"{shown}")
        return split
    both = [(a, b, e) for i, a in enumerate(split) for b in list(split)[i + 1:] for e in split[a]
            if isinstance(split[a], (list, tuple)) and isinstance(split[b], (list, tuple)) and e in split[b]]
    if both:
        a, b, _ = both[0]
        raise ConfigError(f"the split lists {', '.join(repr(e) for _, _, e in both)} in both {a!r} and {b!r}; "
                          f"train, val and test need disjoint classes")
    as_ids = all(isinstance(e, int) and not isinstance(e, bool) and 0 <= e < len(names) for e in entries)
    if as_ids and any(index[e] != e for e in entries):
        clash = next(e for e in entries if index[e] != e)
        raise ConfigError(f"the split {split} is ambiguous: {clash!r} is a label of this graph (class id "
                          f"{index[clash]}) and also the id of the class labelled {names[clash]!r}, and the two "
                          f"readings differ; relabel the classes 0..{len(names) - 1} (labels and ids then agree), "
                          f"or give counts 'TRAIN/VAL/TEST'")
    return {k: [index[e] for e in v] if isinstance(v, (list, tuple)) else v for k, v in split.items()}


def _is_counts(text: str) -> bool:
    try:
        parse_counts(text)
    except ConfigError:
        return False
    return True


def user_label(graph: FewShotGraph, c: int) -> Hashable:
    """The user's label of class id ``c`` (the id itself for registered datasets)."""
    names = graph.info.get("class_names")
    return names[c] if names is not None and 0 <= c < len(names) else c


__all__ = ["check_split_ways", "default_split", "fit_graph", "label_names", "resplit_note", "split_text",
           "user_label"]
