"""Fixtures for the image tests: the real Omniglot subset and an isolated cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path("/work/shared/datasets")


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the whole session, so the real subset is decoded once."""
    return tmp_path_factory.mktemp("cmlgraph-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(image_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMLGRAPH_CACHE", str(image_cache))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``$CMLGRAPH_DATA`` or the shared read-only datasets; skips when the Omniglot subset is not there."""
    root = Path(os.environ.get("CMLGRAPH_DATA") or SHARED_DATA)
    if not (root / "omniglot" / "images_background_small1.zip").is_file():
        pytest.skip(f"the Omniglot subset is not in {root}/omniglot")
    return root
