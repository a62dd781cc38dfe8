"""Omniglot's raw archives: which are present, their checksums, decoding them, and the decoded-array cache.

Why here and not in the loader: finding, verifying and decoding the zips is the slow, file-system part;
keeping it apart leaves :mod:`cmlgraph.images.omniglot` with only the few-shot logic (splits, rotations,
notes).

Images are read straight from the zips (nothing is extracted), converted to grey, resized to ``image_size``
with Lanczos filtering and inverted so strokes are bright (255) on a dark (0) background. The decoded
``uint8`` array is cached as an ``.npz`` (no pickled objects) in the cache folder, keyed by the zips' names,
sizes and md5s.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cmlgraph.errors import DataError
from cmlgraph.images.download import check_md5, download_url
from cmlgraph.images.paths import cache_dir

URL_PREFIX = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
FULL_ZIPS = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
SMALL_ZIPS = {
    "images_background_small1.zip": "e704a628b5459e08445c13499850abc4",
    "images_background_small2.zip": "b75a71a51d3b13f821f212756fe481fd",
}
CACHE_VERSION = 1


@dataclass
class DecodedOmniglot:
    """Decoded images of the characters in some zips.

    Attributes:
        images: ``uint8[N, S, S]``, strokes 255.
        char_index: ``int64[N]`` index into ``characters``.
        characters: Sorted ``"<Alphabet>/<characterNN>"`` names.
        cache_file: Where the decoded arrays are cached.
    """

    images: np.ndarray
    char_index: np.ndarray
    characters: list[str]
    cache_file: Path


def download_omniglot(folder: Path) -> list[Path]:
    """Download the two full zips into ``folder`` (atomic, md5-checked); valid files there are kept."""
    return [download_url(f"{URL_PREFIX}/{name}", folder / name, md5) for name, md5 in FULL_ZIPS.items()]


def find_zips(folder: Path) -> tuple[list[Path], list[str]]:
    """The zips to read from ``folder`` and the names of the full zips that are missing.

    The full zips are used when present (the small ones are subsets of ``images_background.zip``); otherwise
    the small background subsets. Each zip's md5 is checked against the published one.

    Raises:
        DataError: No Omniglot zip is in ``folder``, or one is corrupted.
    """
    full = [folder / name for name in FULL_ZIPS if (folder / name).is_file()]
    missing = [name for name in FULL_ZIPS if not (folder / name).is_file()]
    small = [folder / name for name in SMALL_ZIPS if (folder / name).is_file()]
    zips = full if full else small
    if not zips:
        raise DataError(
            f"no Omniglot archives in {folder}: expected {' and '.join(FULL_ZIPS)} (or the subsets "
            f"{' and '.join(SMALL_ZIPS)}); pass download=True on a machine with internet, or point root= / "
            "CMLGRAPH_DATA at the folder that holds omniglot/"
        )
    known = {**FULL_ZIPS, **SMALL_ZIPS}
    for path in zips:
        check_md5(path, known[path.name])
    return zips, missing


def _decode_zips(zips: list[Path], image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode each ``<top>/<Alphabet>/<characterNN>/<file>.png`` of the zips; a file in 2 zips counts once."""
    entries: dict[tuple[str, str], tuple[Path, str]] = {}
    for path in zips:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                parts = member.split("/")
                if len(parts) == 4 and parts[3].endswith(".png"):
                    entries.setdefault((f"{parts[1]}/{parts[2]}", parts[3]), (path, member))
    keys = sorted(entries)
    characters = sorted({char for char, _ in keys})
    position = {char: i for i, char in enumerate(characters)}
    images = np.empty((len(keys), image_size, image_size), dtype=np.uint8)
    handles = {path: zipfile.ZipFile(path) for path in zips}
    try:
        for i, key in enumerate(keys):
            path, member = entries[key]
            with Image.open(io.BytesIO(handles[path].read(member))) as img:
                grey = img.convert("L").resize((image_size, image_size), Image.Resampling.LANCZOS)
            images[i] = 255 - np.asarray(grey, dtype=np.uint8)
    finally:
        for handle in handles.values():
            handle.close()
    char_index = np.array([position[char] for char, _ in keys], dtype=np.int64)
    return images, char_index, characters


def _cache_path(zips: list[Path], image_size: int) -> Path:
    """Cache file named by a hash of the loader version, the size and each zip's name, size and md5.

    The zips come from :func:`find_zips`, which checked that their md5s are the published ones.
    """
    known = {**FULL_ZIPS, **SMALL_ZIPS}
    desc = [f"v{CACHE_VERSION}", f"{image_size}px"]
    desc += [f"{p.name}:{p.stat().st_size}:{known[p.name]}" for p in sorted(zips)]
    key = hashlib.sha256("|".join(desc).encode()).hexdigest()[:16]
    return cache_dir("omniglot") / f"omniglot_{image_size}px_{key}.npz"


def decode_omniglot(zips: list[Path], image_size: int) -> DecodedOmniglot:
    """Decoded images of ``zips`` (as returned by :func:`find_zips`) from the cache, or decoded and cached.

    The cache file is written atomically, and a damaged one is rebuilt.
    """
    path = _cache_path(zips, image_size)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return DecodedOmniglot(
                    data["images"], data["char_index"], [str(c) for c in data["characters"]], path
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)  # a damaged cache entry is rebuilt below
    images, char_index, characters = _decode_zips(zips, image_size)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, char_index=char_index, characters=np.array(characters, dtype=str))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return DecodedOmniglot(images, char_index, characters, path)


__all__ = [
    "FULL_ZIPS",
    "SMALL_ZIPS",
    "URL_PREFIX",
    "DecodedOmniglot",
    "decode_omniglot",
    "download_omniglot",
    "find_zips",
]
