"""Fixtures of the graph data-layer tests: the shared data root, a session cache, tiny literal graphs."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cmlgraph.graphs import from_arrays

SHARED = Path(os.environ.get("CMLGRAPH_DATA") or "/work/shared/datasets")


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point CMLGRAPH_CACHE at a per-session folder so tests never write to ~/.cache."""
    cache = tmp_path_factory.mktemp("cmlgraph_cache")
    old = os.environ.get("CMLGRAPH_CACHE")
    os.environ["CMLGRAPH_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("CMLGRAPH_CACHE", None)
    else:
        os.environ["CMLGRAPH_CACHE"] = old


@pytest.fixture(scope="session")
def shared_root() -> Path:
    """The real shared datasets (CMLGRAPH_DATA or /work/shared/datasets)."""
    if not SHARED.is_dir():
        pytest.fail(f"shared datasets not found at {SHARED}; set CMLGRAPH_DATA")
    return SHARED


@pytest.fixture()
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A local HTTP server on 127.0.0.1 serving a temporary folder: yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        pass


@pytest.fixture()
def triangles():
    """Factory of a literal graph: two triangles joined by edge 2-3, classes 'a' (0-2) and 'b' (3-5)."""

    def make(**kwargs):
        ei = torch.tensor([[0, 1], [1, 2], [2, 0], [3, 4], [4, 5], [5, 3], [2, 3]]).t()
        x = torch.arange(12, dtype=torch.float32).view(6, 2)
        kwargs.setdefault("split", {"train": [0], "val": [], "test": [1]})
        return from_arrays(ei, x, ["a", "a", "a", "b", "b", "b"], **kwargs)

    return make
