"""Checksummed downloads, verification of local files and safe archive extraction.

Why: the design asks for PyG's dataset contract (canonical URL, checksum on download) on a data root that may be
read-only. A download is written to a temporary file, fsynced, checked and only then renamed into place, so a
half-written or corrupted file never sits where a loader would use it. Files found locally are verified too; the
result is cached by (path, size, mtime) so large files are hashed once. Checksums are strings
``"sha256:<hex>"`` or ``"gitblob:<hex>"`` (``sha1(b"blob <size>\\0" + data)``, what ``git hash-object`` prints, as
listed in the shared MANIFESTs). Only ``urllib`` is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from cmlgraph.errors import ConfigError, DataError
from cmlgraph.graphs.root import cache_dir

_CHUNK = 1 << 20
_VERIFY_CACHE = "checksums.json"


def _parse_checksum(checksum: str) -> tuple[str, str]:
    kind, sep, value = checksum.partition(":")
    if not sep or kind not in ("sha256", "gitblob") or not value:
        raise ConfigError(f"checksum {checksum!r} is malformed; write it as 'sha256:<hex>' or 'gitblob:<hex>'")
    return kind, value.lower()


def file_checksum(path: str | os.PathLike[str], kind: str = "sha256") -> str:
    """Hash a file in chunks and return ``"<kind>:<hex>"`` (kind ``sha256`` or ``gitblob``)."""
    path = Path(path)
    if kind == "sha256":
        h = hashlib.sha256()
    elif kind == "gitblob":
        h = hashlib.sha1()
        h.update(b"blob %d\0" % path.stat().st_size)
    else:
        raise ConfigError(f"checksum kind {kind!r} is unknown; use 'sha256' or 'gitblob'")
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return f"{kind}:{h.hexdigest()}"


def _load_verify_cache(cache: Path) -> dict[str, dict[str, object]]:
    try:
        return json.loads((cache / _VERIFY_CACHE).read_text())
    except (OSError, ValueError):
        return {}


def _store_verify_cache(cache: Path, entries: dict[str, dict[str, object]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".checksums.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f)
        os.replace(tmp, cache / _VERIFY_CACHE)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def verify_file(
    path: str | os.PathLike[str],
    checksum: str | None,
    *,
    url: str | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> Path:
    """Check a local file against its expected checksum; remember good results by size and mtime.

    Args:
        path: The file to check (it is only read).
        checksum: ``"sha256:<hex>"`` / ``"gitblob:<hex>"``, or None to skip the check (no published checksum).
        url: Where a fresh copy can be downloaded; named in the error.
        cache: Cache folder holding the verification cache (see :func:`cache_dir`).

    Returns:
        The path.

    Raises:
        DataError: The file's checksum differs from the expected one.
    """
    path = Path(path)
    if checksum is None:
        return path
    kind, expected = _parse_checksum(checksum)
    folder = cache_dir(cache)
    st = path.stat()
    key = str(path.resolve())
    entries = _load_verify_cache(folder)
    hit = entries.get(key)
    if hit == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "checksum": f"{kind}:{expected}"}:
        return path
    actual = file_checksum(path, kind)
    if actual != f"{kind}:{expected}":
        where = f" Download it again from {url}" if url else " Replace it with a fresh copy"
        raise DataError(
            f"file {str(path)!r} fails its checksum: expected {kind}:{expected}, got {actual}.{where}"
            " (or place an intact copy there)."
        )
    entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "checksum": actual}
    _store_verify_cache(folder, entries)
    return path


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    checksum: str | None,
    *,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically and check its checksum before it appears at ``dest``.

    The bytes go to a temporary file next to ``dest``, are fsynced, hashed, and renamed onto ``dest`` only when
    the checksum matches; a mismatch deletes the temporary file.

    Args:
        url: The canonical URL.
        dest: The final file path (its folder is created).
        checksum: Expected ``"sha256:<hex>"`` / ``"gitblob:<hex>"``, or None when none is published.
        timeout: Socket timeout in seconds.

    Raises:
        DataError: The download failed or the checksum differs (the message names file, URL and both checksums).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                shutil.copyfileobj(resp, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise DataError(
                f"download of {url} to {str(dest)!r} failed ({exc}); check the network, or download the file "
                f"by hand and place it at {str(dest)!r}"
            ) from exc
        if checksum is not None:
            kind, expected = _parse_checksum(checksum)
            actual = file_checksum(tmp, kind)
            if actual != f"{kind}:{expected}":
                raise DataError(
                    f"downloaded file {str(dest)!r} from {url} is corrupted: expected {kind}:{expected}, got "
                    f"{actual}; it was deleted. Retry the download, or fetch it by hand from that URL."
                )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _check_member(name: str, archive: Path) -> PurePosixPath:
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(
            f"archive {str(archive)!r} holds a member with an absolute path ({name!r}); refusing to extract it. "
            "Use an archive from the dataset's canonical URL."
        )
    if ".." in member.parts:
        raise DataError(
            f"archive {str(archive)!r} holds a member that escapes the target folder ({name!r}); refusing to "
            "extract it. Use an archive from the dataset's canonical URL."
        )
    return member


def extract_zip(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    members: list[str] | None = None,
) -> list[Path]:
    """Extract a zip archive into ``target`` only, refusing absolute paths and ``..`` members.

    Every member name is checked before anything is written. Each file is written to a temporary name and
    renamed, so an interrupted extraction leaves no truncated file behind.

    Args:
        archive: The zip file (only read).
        target: The destination folder (created).
        members: Names to extract; all members when None.

    Returns:
        The paths of the extracted files.

    Raises:
        DataError: An unsafe member name, a missing member, or a broken archive.
    """
    archive, target = Path(archive), Path(target)
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"archive {str(archive)!r} cannot be read ({exc}); replace it with a fresh copy") from exc
    with zf:
        infos = zf.infolist()
        for info in infos:
            _check_member(info.filename, archive)
        if members is not None:
            names = {i.filename for i in infos}
            missing = [m for m in members if m not in names]
            if missing:
                raise DataError(
                    f"archive {str(archive)!r} lacks {missing}; it holds {sorted(names)[:10]}. "
                    "Replace it with the archive from the dataset's canonical source."
                )
            infos = [i for i in infos if i.filename in set(members)]
        target.mkdir(parents=True, exist_ok=True)
        root = target.resolve()
        out: list[Path] = []
        for info in infos:
            dest = (root / _check_member(info.filename, archive)).resolve()
            if root != dest and root not in dest.parents:
                raise DataError(f"archive member {info.filename!r} of {str(archive)!r} escapes {str(root)!r}")
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f, zf.open(info) as src:
                    shutil.copyfileobj(src, f, _CHUNK)
                os.replace(tmp, dest)
            finally:
                Path(tmp).unlink(missing_ok=True)
            out.append(dest)
    return out


__all__ = ["download_file", "extract_zip", "file_checksum", "verify_file"]
