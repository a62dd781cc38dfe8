"""Checked, atomic downloads of raw archives, and md5 checks of files already on disk.

Why: a half-written or corrupted archive must never be left where a loader would read it. The file is streamed
into a temporary file in the destination folder, its md5 is compared with the expected one, and only then is
it renamed into place; on any failure the temporary file is deleted and a :class:`DataError` says what to do.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import stat
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from cmlgraph.errors import DataError

CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    """The md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _writable(folder: Path) -> bool:
    """Whether ``folder`` is a writable directory.

    Mode bits count too: ``os.access`` ignores them for root, and a read-only data root must stay unwritten.
    """
    return folder.is_dir() and os.access(folder, os.W_OK) and bool(folder.stat().st_mode & stat.S_IWUSR)


def download_url(url: str, dest: str | os.PathLike[str], md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically and check its md5; keep an existing file whose md5 matches.

    Args:
        url: Where to fetch the file (http, https or file URL).
        dest: Final path; its folder must be writable.
        md5: Expected md5 hex digest.
        timeout: Socket timeout in seconds.

    Returns:
        ``dest`` as a :class:`Path`.

    Raises:
        DataError: The folder is not writable, the download fails, or the md5 does not match; then nothing is
            left at ``dest`` (a corrupted earlier copy is deleted too).
    """
    dest = Path(dest)
    if dest.is_file() and file_md5(dest) == md5:
        return dest
    folder = dest.parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not _writable(existing):
        raise DataError(
            f"{existing} is not writable, so {url} cannot be downloaded to {folder}; pass a writable data "
            f"root (root= or CMLGRAPH_DATA) or place {dest.name} there by hand"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"cannot create {folder} to download {url} ({err}); pass a writable data root "
            "(root= or CMLGRAPH_DATA)"
        ) from err
    dest.unlink(missing_ok=True)  # a corrupted earlier copy must not survive a failed download
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if got != md5:
            raise DataError(
                f"download of {url} is corrupted: md5 {got}, expected {md5}; the file was deleted, "
                "download again (or fetch it by hand and check its md5)"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        raise DataError(
            f"could not download {url} to {dest} ({err}); check the network, or fetch the file by hand "
            f"into {folder} (md5 {md5})"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def check_md5(path: Path, md5: str) -> None:
    """Raise :class:`DataError` if a file's md5 is not ``md5``; the file is kept (it may be read-only)."""
    got = file_md5(path)
    if got != md5:
        raise DataError(f"{path} is corrupted: md5 {got}, expected {md5}; delete it and download it again")


__all__ = ["check_md5", "download_url", "file_md5"]
