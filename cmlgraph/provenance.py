"""Run provenance: which software, on which device, from which command and which commit produced a run folder.

Why: a run folder must tell a researcher what made it. :func:`provenance` is written into ``summary.json`` (key
``provenance``) and, as comment lines, at the top of ``config.yaml`` (which still loads with ``yaml.safe_load``
and round-trips through ``cmlgraph train --config``). Versions are read from the installed packages' metadata,
so recording them imports neither torch-geometric nor anything else heavy.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import metadata
from pathlib import Path
from typing import Any

#: The command line or API call that started the current run (set by the CLI and by ``cmlgraph.fit``).
_COMMAND: ContextVar[str | None] = ContextVar("cmlgraph_command", default=None)

VERSION_KEYS = ("cmlgraph", "torch", "torch_geometric", "python")


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (``None`` when it is not installed)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cmlgraph_version() -> str:
    """cmlgraph's version: the installed distribution's, else the package constant."""
    from cmlgraph import __version__

    return package_version("cmlgraph") or __version__


@contextmanager
def recording(command: str) -> Iterator[None]:
    """Record ``command`` (a command line or API call) as the origin of runs started inside the block.

    The record ends with the block, so a later run in the same process (e.g. a direct ``train(cfg)`` call) never
    inherits another call's command.
    """
    token = _COMMAND.set(command)
    try:
        yield
    finally:
        _COMMAND.reset(token)


def cli_command(argv: list[str] | None) -> str:
    """The shell-quoted ``cmlgraph ...`` command line of a CLI invocation."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["cmlgraph", *args])


def api_call(function: str, *args: Any, **kwargs: Any) -> str:
    """A readable ``cmlgraph.fit(graph='cora', ways=3)`` record of a Python API call."""
    parts = [_short_repr(a) for a in args] + [f"{k}={_short_repr(v)}" for k, v in kwargs.items()]
    return f"cmlgraph.{function}({', '.join(parts)})"


def _short_repr(value: Any) -> str:
    name = getattr(value, "name", None)
    if type(value).__name__ == "FewShotGraph" and isinstance(name, str):
        return f"<FewShotGraph {name!r}>"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def current_command() -> str:
    """The recorded command, or the interpreter and this process's ``argv`` when none was recorded."""
    return _COMMAND.get() or shlex.join([Path(sys.executable or "python").name, *sys.argv])


def git_state(package_dir: Path | None = None) -> dict[str, Any]:
    """``{"git_commit", "git_dirty"}`` of the checkout cmlgraph runs from; both ``None`` outside a checkout.

    Only a checkout whose top level holds this very ``cmlgraph`` package counts (an editable install), so an
    installed copy inside some other repository reports no commit.
    """
    pkg = package_dir or Path(__file__).resolve().parent
    none: dict[str, Any] = {"git_commit": None, "git_dirty": None}

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(pkg.parent), *args], capture_output=True, text=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != pkg.parent.resolve():
        return none
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def device_name(device: str) -> str:
    """The device string with the accelerator's name for CUDA devices (``cuda:0 (NVIDIA H200)``)."""
    if device.startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        except Exception:  # noqa: BLE001 - provenance must never stop a run
            pass
    return device


def default_data_root() -> str:
    """Where a run with ``data.data_root`` unset reads its raw data in this process: ``$CMLGRAPH_DATA``, else
    ``<repo>/datasets``, as an absolute path (:func:`cmlgraph.graphs.root.data_root` without importing the graph
    package, which loads torch-geometric).

    Why recorded: ``cmlgraph eval`` in another shell, without the variable, must still find the run's data.
    """
    env = os.environ.get("CMLGRAPH_DATA", "")
    if env:
        return str(Path(env).expanduser().absolute())
    return str(Path(__file__).resolve().parents[1] / "datasets")


def provenance(device: str = "cpu", data_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The provenance record of a run made now on ``device``.

    Args:
        device: The run's device.
        data_root: The run's ``data.data_root`` when it names one (a resumed run's is where it read its data).

    Returns:
        ``cmlgraph``, ``torch``, ``torch_geometric``, ``python`` (versions; ``None`` if not installed),
        ``platform``, ``device``, ``command``, ``git_commit``, ``git_dirty``, ``time`` (UTC, ISO 8601) and
        ``data_root`` (``data_root`` as an absolute path, else :func:`default_data_root`).
    """
    return {
        "cmlgraph": cmlgraph_version(),
        "torch": package_version("torch"),
        "torch_geometric": package_version("torch_geometric") or package_version("torch-geometric"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_name(device),
        "command": current_command(),
        **git_state(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data_root": str(Path(data_root).expanduser().absolute()) if data_root else default_data_root(),
    }


def yaml_header(record: dict[str, Any]) -> str:
    """``# key: value`` comment lines for the top of ``config.yaml`` (ignored by YAML readers)."""
    lines = ["# written by cmlgraph; provenance of this run (comments: the config below is what loads)"]
    for key, value in record.items():
        text = " ".join(str(value).split())  # one line each, whatever the command held
        lines.append(f"# {key}: {text}")
    return "\n".join(lines) + "\n"


__all__ = ["VERSION_KEYS", "api_call", "cli_command", "cmlgraph_version", "current_command", "default_data_root",
           "git_state", "package_version", "provenance", "recording", "yaml_header"]
