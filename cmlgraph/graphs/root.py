"""Where the raw datasets and the writable cache live.

Why a module of its own: the raw data root may be read-only (``/work/shared/datasets`` in CI), so every loader
reads from :func:`data_root` and writes processed files and extracted archives only under :func:`cache_dir`.
Resolution order for the data root: explicit argument, environment variable ``CMLGRAPH_DATA``, then
``<repo>/datasets`` (the folder next to the ``cmlgraph`` package). The cache is ``CMLGRAPH_CACHE`` or
``~/.cache/cmlgraph``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cmlgraph.errors import ConfigError

DATA_ENV = "CMLGRAPH_DATA"
CACHE_ENV = "CMLGRAPH_CACHE"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the raw data root: ``root`` if given, else ``$CMLGRAPH_DATA``, else ``<repo>/datasets``.

    The folder is only read, never written. It need not exist (then every dataset but ``synthetic`` is
    reported as unavailable).

    Args:
        root: An explicit root folder; wins over the environment.
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser().absolute()  # absolute: subprocesses and runs in other folders agree
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser().absolute()
    return Path(__file__).resolve().parents[2] / "datasets"


def cache_dir(cache: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """Return the writable cache folder (``cache``, else ``$CMLGRAPH_CACHE``, else ``~/.cache/cmlgraph``).

    Holds downloads (``raw/``), extracted archives (``extracted/``), PyG processed files (``pyg/``), our own
    processed tensors (``processed/``) and the checksum verification cache.

    Args:
        cache: An explicit cache folder; wins over the environment.
        create: Create the folder when missing.

    Raises:
        ConfigError: The folder cannot be created or written.
    """
    if cache is not None and str(cache) != "":
        path = Path(cache).expanduser()
    elif os.environ.get(CACHE_ENV, ""):
        path = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        path = Path.home() / ".cache" / "cmlgraph"
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cache folder {str(path)!r} cannot be created ({exc}); set {CACHE_ENV} to a writable folder"
            ) from exc
        if not os.access(path, os.W_OK):
            raise ConfigError(f"cache folder {str(path)!r} is not writable; set {CACHE_ENV} to a writable folder")
    return path


__all__ = ["CACHE_ENV", "DATA_ENV", "cache_dir", "data_root"]
