"""Run folders: unique names, never overwritten by accident, created only once all input is validated.

A running (or resuming) process holds an exclusive ``flock`` on its run folder, so a second process can neither
resume nor ``--overwrite`` a folder in use; the lock is released by the kernel when the process dies, even by
SIGKILL, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

from cmlgraph.config import Config
from cmlgraph.errors import CmlgraphError, ConfigError

try:  # POSIX only; elsewhere folders are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_SAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
MAX_NAME = 200


def check_name(name: str) -> None:
    """Reject a run name that is not a plain, reasonably short folder name (raises ConfigError)."""
    if not isinstance(name, str) or not name or name != _SAFE.sub("_", name) or name in (".", "..") \
            or name.startswith("."):
        raise ConfigError(f"run name {name!r} is not a plain folder name; use letters, digits and . _ + - "
                          f"(not starting with a dot)")
    if len(name) > MAX_NAME:
        raise ConfigError(f"run name of {len(name)} characters is too long; use at most {MAX_NAME}")


def default_name(cfg: Config) -> str:
    """A readable run name from the settings and the time, e.g. ``synthetic-maml-cml-5w3s-s0-20261126-231005``."""
    what = cfg.data.task if cfg.data.task != "graph" else cfg.data.graph
    algo = cfg.algo.algo + ("-cml" if cfg.algo.cml else "") + ("" if cfg.algo.control == "none"
                                                               else f"-{cfg.algo.control}")
    shape = f"k{cfg.data.shots}" if cfg.data.task == "sinusoid" else f"{cfg.data.ways}w{cfg.data.shots}s"
    name = _SAFE.sub("_", f"{what}-{algo}-{shape}-s{cfg.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    return name.lstrip(".")[-MAX_NAME:] or "run"


class RunLock:
    """An exclusive, non-blocking lock on a run folder, held while a process trains in it.

    Args:
        folder: The run folder.

    Raises:
        CmlgraphError: Another live process holds the folder.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.fd: int | None = None
        if fcntl is None:
            return
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise CmlgraphError(f"run folder {self.folder} is in use by another running cmlgraph process; wait "
                                f"for it to end (or stop it) and try again") from None
        self.fd = fd

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _discard(target: Path) -> None:
    """Delete an existing run folder for ``--overwrite``, refusing folders in use or that are not run folders."""
    if not target.is_dir():
        raise ConfigError(f"--overwrite: {target} exists and is not a folder; remove it or choose another --name")
    if any(target.iterdir()) and not (target / "config.yaml").is_file():
        raise ConfigError(f"--overwrite: {target} is not a cmlgraph run folder (no config.yaml); refusing to delete "
                          f"it. Choose another --name or --runs-dir")
    RunLock(target).release()  # raises when a live process trains in it
    trash = target.parent / f".{target.name}.deleting-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(target, trash)  # atomic: a concurrent run never sees a half-deleted folder under the name
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def create_run_dir(cfg: Config) -> Path:
    """Create the run folder; an existing name gets a numeric suffix unless ``overwrite`` is set.

    ``os.mkdir`` is atomic, so two runs started at the same moment never share a folder.

    Raises:
        ConfigError: Unsafe name, a ``runs_dir`` that cannot hold folders, or ``--overwrite`` of something that
            is not a run folder or is in use.
    """
    parent = Path(cfg.run.runs_dir)
    name = cfg.run.name or default_name(cfg)
    check_name(name)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the runs folder {str(parent)!r} ({exc.strerror or exc}); pass a "
                          f"writable --runs-dir") from None
    target = parent / name
    if cfg.run.overwrite and (target.exists() or target.is_symlink()):
        _discard(target)
    for i in range(10_000):
        candidate = target if i == 0 else parent / f"{name}-{i}"
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot create run folder {str(candidate)!r} ({exc.strerror or exc}); pass a "
                              f"writable --runs-dir") from None
    raise ConfigError(f"could not find a free run folder name under {parent}; pass --name")
