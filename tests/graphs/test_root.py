"""Data root and cache resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmlgraph.graphs.root import cache_dir, data_root


def test_data_root_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CMLGRAPH_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("CMLGRAPH_DATA")
    assert data_root() == Path(__file__).resolve().parents[2] / "datasets"


def test_a_relative_data_root_is_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``CMLGRAPH_DATA=../shared/datasets`` names the same folder for a process started elsewhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CMLGRAPH_DATA", "../data")
    assert data_root() == tmp_path / ".." / "data" and data_root().is_absolute()
    assert data_root("rel") == tmp_path / "rel"


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CMLGRAPH_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert cache_dir(tmp_path / "d") == tmp_path / "d"
