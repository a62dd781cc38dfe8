"""Where image data is read from and where derived files go.

Why two folders: the raw data root may be read-only (``../shared/datasets`` in CI), so everything derived from
it (decoded arrays) goes to a separate writable cache folder and the raw root is never written to.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The raw data root: ``root`` if given, else ``$CMLGRAPH_DATA``, else ``<repo>/datasets``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("CMLGRAPH_DATA")
    return Path(env).expanduser() if env else REPO_ROOT / "datasets"


def cache_dir(sub: str = "") -> Path:
    """The writable cache folder for derived files: ``$CMLGRAPH_CACHE`` or ``~/.cache/cmlgraph``, + ``sub``.

    The folder is created on demand.
    """
    env = os.environ.get("CMLGRAPH_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "cmlgraph"
    path = base / sub if sub else base
    path.mkdir(parents=True, exist_ok=True)
    return path


__all__ = ["cache_dir", "data_root"]
