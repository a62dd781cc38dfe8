"""Dataset specifications: the raw files a dataset needs, where they may sit, and how a loader finds them.

Why: the same dataset can sit in several layouts: the shared collection's own folder names
(``planetoid/ind.cora.x``, ``amazon_computers/amazon-computers.zip``), PyG's ``<Name>/raw/`` layout, the GPN
repository's ``few_shot_data/``, or our download folder ``<cache>/raw/``. A :class:`RawFile` lists those
locations (relative to the data root, then to ``<cache>/raw``) and archives that contain the file; resolving it
verifies the checksum and extracts archive members into ``<cache>/extracted/`` (never into the data root).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmlgraph.errors import DataError
from cmlgraph.graphs.download import download_file, extract_zip, verify_file
from cmlgraph.graphs.root import DATA_ENV
from cmlgraph.graphs.splits import SplitSpec

if TYPE_CHECKING:
    from cmlgraph.graphs.fewshot_graph import FewShotGraph


@dataclass(frozen=True)
class ArchiveSource:
    """A zip archive (relative to the data root) that holds a raw file as ``member``."""

    path: str
    member: str
    checksum: str | None = None


@dataclass(frozen=True)
class RawFile:
    """One raw file of a dataset.

    Attributes:
        name: Key the loader uses (usually the file name).
        url: Canonical download URL.
        checksum: ``"sha256:<hex>"`` or ``"gitblob:<hex>"``; None when no checksum is published.
        locations: Paths relative to the data root (and to ``<cache>/raw``) where the file may sit; the last one
            is where :func:`download_missing` writes it (under ``<cache>/raw``).
        archives: Archives that contain the file.
        size: Expected size in bytes when known (for the dataset listing).
    """

    name: str
    url: str | None
    checksum: str | None
    locations: tuple[str, ...]
    archives: tuple[ArchiveSource, ...] = ()
    size: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the registry knows about one dataset.

    Attributes:
        name: CLI name (``cora``, ``amazon-clothing``...).
        title: Human-readable name.
        files: Raw files (keyed by :attr:`RawFile.name`).
        stats: Expected counts: ``nodes``, ``edges`` (directed, PyG convention), ``features``, ``classes``.
        citation: Who to cite.
        default_split: Default class split (counts ``"a/b/c"``, drawn with the seed) and how it is chosen.
        split_doc: One-line description of the default split.
        loader: ``loader(request) -> FewShotGraph``.
        optional: Names of files the dataset can be loaded without (with ``allow_partial``).
        url: Landing page / source.
        params: Loader-specific settings (e.g. GPN's number of validation classes).
        downloader: Custom download step (e.g. ogb's zip); default: :func:`download_missing`.
    """

    name: str
    title: str
    files: tuple[RawFile, ...]
    stats: dict[str, int]
    citation: str
    default_split: str
    split_doc: str
    loader: Callable[[LoadRequest], FewShotGraph]
    optional: tuple[str, ...] = ()
    url: str = ""
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    downloader: Callable[[DatasetSpec, Path, Path], list[Path]] | None = None

    def file(self, name: str) -> RawFile:
        """The raw file named ``name``."""
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)


def find_raw(raw: RawFile, root: Path, cache: Path) -> Path | None:
    """Locate and verify ``raw`` under the data root or ``<cache>/raw``; extract it from an archive if needed.

    Returns:
        The verified path, or None when the file is nowhere to be found.

    Raises:
        DataError: A file (or archive) found fails its checksum.
    """
    bases = (root, cache / "raw")
    for base in bases:
        for loc in raw.locations:
            p = base / loc
            if p.is_file():
                return verify_file(p, raw.checksum, url=raw.url, cache=cache)
    for arch in raw.archives:
        for base in bases:
            a = base / arch.path
            if not a.is_file():
                continue
            target = cache / "extracted" / Path(arch.path).parent
            out = target / arch.member
            if out.is_file():
                try:
                    return verify_file(out, raw.checksum, url=raw.url, cache=cache)
                except DataError:
                    out.unlink()
            verify_file(a, arch.checksum, url=raw.url, cache=cache)
            extract_zip(a, target, members=[arch.member])
            return verify_file(out, raw.checksum, url=raw.url, cache=cache)
    return None


def file_name(raw: RawFile) -> str:
    """The file name of ``raw`` (as it is called on disk)."""
    return Path(raw.locations[-1]).name if raw.locations else raw.name


def missing_message(spec_name: str, raw: RawFile, root: Path, cache: Path) -> str:
    """Explain that ``raw`` is missing: where it was looked for, its URL, and how to get it."""
    places = [str(root / loc) for loc in raw.locations] + [str(root / a.path) for a in raw.archives]
    where = ", ".join(places[:4]) + (" ..." if len(places) > 4 else "")
    how = (
        f"Download it from {raw.url} (`cmlgraph datasets download {spec_name}` or "
        f"load_graph('{spec_name}', download=True) store it under {cache / 'raw'}), or place it at one of those paths"
        if raw.url
        else "Place it at one of those paths"
    )
    return (f"dataset '{spec_name}' needs {file_name(raw)}, which was not found (looked in {where}). {how}. "
            f"{root_hint(root)}")


def root_hint(root: Path) -> str:
    """Which setting chose the raw data root ``root``, and how to point it elsewhere (issue 19: a missing file's
    message must say how the root is found)."""
    return (f"The data root {str(root)!r} is --data-root (data.data_root) when given, else ${DATA_ENV}, else "
            f"<repo>/datasets: set {DATA_ENV}=/path/to/datasets or pass --data-root DIR if the data is elsewhere.")


@dataclass
class LoadRequest:
    """What a loader receives: the spec, where to read and write, and the user's options."""

    spec: DatasetSpec
    root: Path
    cache: Path
    allow_partial: bool = False
    split: SplitSpec | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def find(self, name: str) -> Path | None:
        """Verified path of raw file ``name``, or None when missing."""
        return find_raw(self.spec.file(name), self.root, self.cache)

    def require(self, name: str) -> Path:
        """Verified path of raw file ``name``.

        Raises:
            DataError: The file is missing (the message names it, its URL and where it was looked for).
        """
        path = self.find(name)
        if path is None:
            raise DataError(missing_message(self.spec.name, self.spec.file(name), self.root, self.cache))
        return path


def download_missing(spec: DatasetSpec, root: Path, cache: Path) -> list[Path]:
    """Download every raw file of ``spec`` that is not found locally into ``<cache>/raw/<last location>``.

    Returns:
        The paths downloaded.

    Raises:
        DataError: A download failed or is corrupted, or a missing file has no URL.
    """
    got = []
    for raw in spec.files:
        if find_raw(raw, root, cache) is not None:
            continue
        if raw.url is None:
            raise DataError(
                f"dataset '{spec.name}' needs {file_name(raw)}, which has no download URL; place it by hand"
            )
        got.append(download_file(raw.url, cache / "raw" / raw.locations[-1], raw.checksum))
    return got


__all__ = ["ArchiveSource", "DatasetSpec", "LoadRequest", "RawFile", "download_missing", "file_name", "find_raw",
           "missing_message", "root_hint"]
