"""Omniglot (Lake et al., 2015) as an :class:`ImageFewShotDataset`: 28 px characters, split by character.

Why this shape: few-shot Omniglot is the paper's image benchmark. With the two full zips in
``<root>/omniglot/`` the standard Vinyals character split (1,028 / 172 / 423 characters,
``splits/vinyals/*.txt``) is used. Where only the official small background subsets are present (242
characters, as in ``../shared/datasets``), the data is loaded as ``partial=True`` with a seeded split over the
characters present, proportional to the Vinyals split (153 / 26 / 63 for 242 characters), and the notes say
what was missing and what was used.

With ``rotations=True`` each character at 0°, 90°, 180° and 270° (counter-clockwise) is its own class, and the
four rotations of a character stay in one split, as in Vinyals et al. Class ids are ``character * 4 + k``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cmlgraph.errors import ConfigError, DataError
from cmlgraph.images.dataset import SPLIT_NAMES, ImageFewShotDataset
from cmlgraph.images.omniglot_files import FULL_ZIPS, decode_omniglot, download_omniglot, find_zips
from cmlgraph.images.paths import data_root

VINYALS_SIZES = {"train": 1028, "val": 172, "test": 423}
SplitArg = str | tuple[int, int, int] | None


def read_vinyals(folder: Path) -> dict[str, list[str]] | None:
    """Characters (``"<Alphabet>/<characterNN>"``) of each Vinyals split, or None if a file is absent."""
    splits: dict[str, list[str]] = {}
    for name in SPLIT_NAMES:
        path = folder / "splits" / "vinyals" / f"{name}.txt"
        if not path.is_file():
            return None
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        splits[name] = sorted({"/".join(line.split("/")[:2]) for line in lines})
    return splits


def proportional_counts(num: int) -> tuple[int, int, int]:
    """Train / val / test counts in the Vinyals proportions (1028 : 172 : 423) for ``num`` characters."""
    total = sum(VINYALS_SIZES.values())
    val = round(num * VINYALS_SIZES["val"] / total)
    test = round(num * VINYALS_SIZES["test"] / total)
    return num - val - test, val, test


def seeded_split(num: int, counts: tuple[int, int, int], seed: int) -> dict[str, list[int]]:
    """Split character indices ``0..num-1`` into train / val / test of given sizes (seeded permutation)."""
    if len(counts) != 3 or min(counts) < 0 or sum(counts) > num:
        raise ConfigError(
            f"split counts {counts} need three non-negative (train, val, test) sizes summing to at most the "
            f"{num} characters present; e.g. {proportional_counts(num)}"
        )
    g = torch.Generator()
    g.manual_seed(seed)
    perm = torch.randperm(num, generator=g).tolist()
    ends = np.cumsum(counts).tolist()
    starts = [0, *ends[:-1]]
    return {name: sorted(perm[a:b]) for name, a, b in zip(SPLIT_NAMES, starts, ends, strict=True)}


def choose_split(
    characters: list[str], vinyals: dict[str, list[str]] | None, split: SplitArg, seed: int
) -> tuple[dict[str, list[int]], str, list[str]]:
    """Character-index splits, the method used (``"vinyals"`` or ``"seeded"``) and notes on the choice.

    ``split``: None = Vinyals when all its characters are present, else seeded proportional; ``"vinyals"`` =
    Vinyals or a DataError; ``"seeded"`` = seeded proportional; ``(train, val, test)`` = seeded with these
    counts.
    """
    if split is not None and not isinstance(split, tuple) and split not in ("vinyals", "seeded"):
        raise ConfigError(
            f"unknown Omniglot split {split!r}; use None (automatic), 'vinyals', 'seeded' or "
            "(train, val, test) counts"
        )
    position = {char: i for i, char in enumerate(characters)}
    notes: list[str] = []
    if vinyals is not None:
        present = {name: sum(c in position for c in chars) for name, chars in vinyals.items()}
        complete = all(present[name] == len(vinyals[name]) for name in SPLIT_NAMES)
        if complete and split in (None, "vinyals"):
            return {n: sorted(position[c] for c in vinyals[n]) for n in SPLIT_NAMES}, "vinyals", notes
        coverage = ", ".join(f"{n} {present[n]}/{len(vinyals[n])}" for n in SPLIT_NAMES)
        if split == "vinyals":
            raise DataError(
                f"the Vinyals split needs all its characters, but only these are present: {coverage}; "
                "download the full zips (download=True) or use split=None for a seeded split"
            )
        if not complete:
            notes.append(f"Vinyals split characters present: {coverage}.")
    elif split == "vinyals":
        raise DataError(
            "splits/vinyals/{train,val,test}.txt are missing from the Omniglot folder; use split=None"
        )
    else:
        notes.append("splits/vinyals/*.txt not found.")
    counts = split if isinstance(split, tuple) else proportional_counts(len(characters))
    splits = seeded_split(len(characters), counts, seed)
    notes.append(
        f"Used a seeded split by character (seed {seed}): train {counts[0]}, val {counts[1]}, "
        f"test {counts[2]} of {len(characters)} characters; characters of one alphabet can be in several "
        "splits, which makes tasks easier than the standard alphabet-disjoint split."
    )
    return splits, "seeded", notes


def load_omniglot(
    root: str | os.PathLike[str] | None = None,
    *,
    image_size: int = 28,
    rotations: bool = False,
    split: SplitArg = None,
    seed: int = 0,
    download: bool = False,
) -> ImageFewShotDataset:
    """Load Omniglot from ``<root>/omniglot/`` (zips read in place; decoded arrays cached).

    Args:
        root: Data root holding ``omniglot/``; defaults to ``$CMLGRAPH_DATA`` or ``<repo>/datasets``.
        image_size: Side of the resized images (28 in the paper).
        rotations: Make each character × {0°, 90°, 180°, 270°} a class.
        split: None (automatic), ``"vinyals"``, ``"seeded"`` or ``(train, val, test)`` character counts.
        seed: Seed of the seeded split (ignored by the Vinyals split).
        download: Fetch the full zips first (md5-checked, atomic) into ``<root>/omniglot/``, which must be
        writable.

    Raises:
        DataError: No archives, a corrupted archive, a failed download, or ``split="vinyals"`` on partial
        data.
        ConfigError: Bad ``image_size`` or ``split``.
    """
    if image_size < 1:
        raise ConfigError(f"image_size must be >= 1, got {image_size}; Omniglot is usually 28")
    folder = data_root(root) / "omniglot"
    if download:
        download_omniglot(folder)
    zips, missing_full = find_zips(folder)
    decoded = decode_omniglot(zips, image_size)
    chars = decoded.characters
    char_splits, method, notes = choose_split(chars, read_vinyals(folder), split, seed)
    partial = bool(missing_full)
    if partial:
        notes.insert(
            0,
            f"Omniglot is partial: {' and '.join(missing_full)} missing from {folder}; used "
            f"{' + '.join(p.name for p in zips)} ({len(chars)} characters, {len(decoded.images)} images). "
            "Pass download=True on a machine with internet for the full 1,623 characters.",
        )
    images = torch.from_numpy(decoded.images)
    labels = torch.from_numpy(decoded.char_index)
    class_names = list(chars)
    splits = char_splits
    if rotations:
        images = torch.cat([torch.rot90(images, k, dims=(1, 2)) for k in range(4)])
        labels = torch.cat([labels * 4 + k for k in range(4)])
        class_names = [f"{c}/rot{90 * k:03d}" for c in chars for k in range(4)]
        splits = {n: [4 * c + k for c in cs for k in range(4)] for n, cs in char_splits.items()}
    info = {
        "class_names": class_names,
        "num_classes": len(class_names),
        "num_characters": len(chars),
        "num_images": int(images.shape[0]),
        "image_size": image_size,
        "rotations": rotations,
        "split_method": method,
        "split_seed": seed if method == "seeded" else None,
        "split_sizes": {n: len(c) for n, c in splits.items()},
        "source_files": [p.name for p in zips],
        "missing_files": missing_full,
        "full_files": list(FULL_ZIPS),
        "cache_file": str(decoded.cache_file),
    }
    return ImageFewShotDataset(
        name="omniglot",
        images=(images.to(torch.float32) / 255.0).unsqueeze(1),
        labels=labels.to(torch.int64),
        splits=splits,
        partial=partial,
        notes=notes,
        info=info,
    )


__all__ = ["load_omniglot", "proportional_counts", "read_vinyals", "seeded_split"]
