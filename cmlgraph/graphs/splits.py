"""Class-disjoint train/val/test splits: from counts (seeded), from explicit lists, or from a JSON file.

Why: few-shot node classification meta-trains on some classes and evaluates on unseen ones, so the split is over
class ids, never nodes. Counts like ``"10/5/5"`` are drawn with a private ``torch.Generator`` so a seed always gives
the same split; a JSON file ``{"train": [...], "val": [...], "test": [...]}`` fixes it by hand (``--split FILE``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from cmlgraph.errors import ConfigError
from cmlgraph.text import counted

SplitSpec = str | os.PathLike | Sequence[int] | Mapping[str, Sequence[int]]
_NAMES = ("train", "val", "test")


def parse_counts(text: str) -> tuple[int, int, int]:
    """Parse ``"train/val/test"`` class counts such as ``"10/5/5"``.

    Raises:
        ConfigError: Not three non-negative integers separated by ``/``.
    """
    parts = [p.strip() for p in str(text).split("/")]
    try:
        counts = tuple(int(p) for p in parts)
    except ValueError:
        counts = ()
    if len(counts) != 3 or min(counts) < 0:
        raise ConfigError(
            f"class split {text!r} is not 'TRAIN/VAL/TEST' counts; write e.g. '10/5/5' or give a JSON file "
            '{"train": [...], "val": [...], "test": [...]}'
        )
    return counts  # type: ignore[return-value]


def _looks_like_counts(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 3 and all(p.strip().isdigit() for p in parts)


def load_split_file(path: str | os.PathLike[str]) -> dict[str, list[int]]:
    """Read a JSON split file ``{"train": [...], "val": [...], "test": [...]}`` of class ids.

    Raises:
        ConfigError: Missing file, bad JSON, or wrong keys/values.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"split file {str(path)!r} does not exist; give an existing JSON file or counts like "
                          "'10/5/5'") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"split file {str(path)!r} is not valid JSON ({exc}); write "
                          '{"train": [...], "val": [...], "test": [...]}') from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"split file {str(path)!r} must hold a JSON object with keys train/val/test")
    return _lists_from_mapping(raw, source=str(path))


def _lists_from_mapping(raw: Mapping[str, object], source: str) -> dict[str, list[int]]:
    unknown = sorted(set(raw) - set(_NAMES))
    if unknown or "train" not in raw or "test" not in raw:
        raise ConfigError(
            f"split {source} has keys {sorted(raw)}; it needs 'train' and 'test' (and optionally 'val'), "
            f"nothing else{f' (unknown: {unknown})' if unknown else ''}"
        )
    out: dict[str, list[int]] = {}
    for name in _NAMES:
        values = raw.get(name, [])
        if not isinstance(values, Iterable) or isinstance(values, (str, bytes)):
            raise ConfigError(f"split {source}: {name!r} must be a list of class ids, got {values!r}")
        try:
            out[name] = [int(v) for v in values]  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"split {source}: {name!r} must list integer class ids, got {values!r}") from exc
    return out


def seeded_split(classes: Sequence[int], counts: Sequence[int], seed: int) -> dict[str, list[int]]:
    """Draw a class-disjoint split with ``counts = (train, val, test)`` classes, reproducible under ``seed``.

    Classes are sorted first, so the result depends only on the set of classes, the counts and the seed.

    Raises:
        ConfigError: The counts ask for more classes than there are.
    """
    pool = sorted(int(c) for c in classes)
    a, b, c = (int(n) for n in counts)
    if a + b + c > len(pool):
        raise ConfigError(
            f"class split {a}/{b}/{c} needs {a + b + c} classes but only {len(pool)} are available "
            f"({pool[:20]}{'...' if len(pool) > 20 else ''}); choose counts that sum to at most {len(pool)}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(pool), generator=gen).tolist()
    picked = [pool[i] for i in perm]
    return {"train": sorted(picked[:a]), "val": sorted(picked[a:a + b]), "test": sorted(picked[a + b:a + b + c])}


def validate_split(splits: Mapping[str, Sequence[int]], classes: Iterable[int]) -> dict[str, list[int]]:
    """Check that a split is disjoint and names only existing classes; return it with sorted lists.

    Raises:
        ConfigError: Overlapping splits or unknown class ids.
    """
    known = {int(c) for c in classes}
    out = {name: sorted(int(c) for c in splits.get(name, [])) for name in _NAMES}
    for i, a in enumerate(_NAMES):
        for b in _NAMES[i + 1:]:
            both = sorted(set(out[a]) & set(out[b]))
            if both:
                raise ConfigError(
                    f"class split is not disjoint: classes {both} are in both {a!r} and {b!r}; "
                    "list each class in one split only"
                )
    for name in _NAMES:
        if len(set(out[name])) != len(out[name]):
            raise ConfigError(f"class split {name!r} lists a class twice: {out[name]}; list each class once")
        bad = sorted(set(out[name]) - known)
        if bad:
            raise ConfigError(
                f"class split {name!r} names classes {bad} that the graph does not have (it has "
                f"{sorted(known)[:30]}{'...' if len(known) > 30 else ''}); use existing class ids"
            )
    return out


def class_splits(classes: Iterable[int], spec: SplitSpec, seed: int = 0) -> dict[str, list[int]]:
    """Build a disjoint train/val/test class split from counts, explicit lists or a JSON file.

    Args:
        classes: The class ids available for splitting.
        spec: ``"10/5/5"`` or ``(10, 5, 5)`` (seeded draw), a mapping ``{"train": [...], "val": [...],
            "test": [...]}``, or the path of a JSON file holding such a mapping.
        seed: Seed of the draw for counts; ignored for explicit lists.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` with sorted class ids.

    Raises:
        ConfigError: Malformed spec, overlapping or unknown classes, or counts larger than the class count.
    """
    pool = sorted({int(c) for c in classes})
    if isinstance(spec, Mapping):
        return validate_split(_lists_from_mapping(spec, source="mapping"), pool)
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if isinstance(spec, str) and _looks_like_counts(text):
            return seeded_split(pool, parse_counts(text), seed)
        if Path(text).suffix.lower() == ".json" or Path(text).exists():
            return validate_split(load_split_file(text), pool)
        return seeded_split(pool, parse_counts(text), seed)
    if isinstance(spec, Sequence) and len(spec) == 3 and all(isinstance(n, int) for n in spec):
        if min(spec) < 0:
            raise ConfigError(f"class split counts {tuple(spec)} must be non-negative, e.g. (10, 5, 5)")
        return seeded_split(pool, spec, seed)
    raise ConfigError(
        f"class split {spec!r} is not understood; give counts '10/5/5', a mapping or a JSON file path"
    )


def check_ways(splits: Mapping[str, Sequence[int]], ways: int) -> None:
    """Check that train and test (and a non-empty val) hold at least ``ways`` classes each.

    Raises:
        ConfigError: A split has fewer classes than ``ways``; the message names the split and the fix.
    """
    for name in _NAMES:
        n = len(splits.get(name, []))
        if name == "val" and n == 0:
            continue
        if n < ways:
            raise ConfigError(
                f"the {name!r} split has {counted(n, 'class', 'classes')} but ways={ways}; "
                + (f"use ways <= {n} or " if n >= 2 else "use ")  # never an impossible ways (<= 1)
                + "a split with at least "
                f"{ways} {name} classes (e.g. --split 'TRAIN/VAL/TEST' counts or a JSON file)"
            )


__all__ = ["SplitSpec", "check_ways", "class_splits", "load_split_file", "parse_counts", "seeded_split",
           "validate_split"]
