"""Checked downloads from a local HTTP server: a good file arrives whole, a bad one leaves nothing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cmlgraph.errors import DataError
from cmlgraph.images import download_url

PAYLOAD = b"omniglot" * 5000


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    (served / "images_background.zip").write_bytes(PAYLOAD)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_good_download(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "images_background.zip"
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    assert download_url(f"{server}/images_background.zip", dest, md5) == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["images_background.zip"]


def test_corrupted_download_is_deleted(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "images_background.zip"
    with pytest.raises(DataError, match="corrupted: md5 .* expected 68d2efa1b9178cc56df9314c21c6e718"):
        download_url(f"{server}/images_background.zip", dest, "68d2efa1b9178cc56df9314c21c6e718")
    assert list(dest.parent.iterdir()) == []


def test_missing_remote_file_leaves_nothing(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "images_evaluation.zip"
    with pytest.raises(DataError, match="could not download .*images_evaluation.zip.*404"):
        download_url(f"{server}/images_evaluation.zip", dest, "6b91aef0f799c5bb55b94e3f2daec811")
    assert list(dest.parent.iterdir()) == []


def test_corrupted_existing_file_is_replaced_or_deleted(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "images_background.zip"
    dest.write_bytes(b"truncated")
    download_url(f"{server}/images_background.zip", dest, hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD
    other = tmp_path / "images_evaluation.zip"
    other.write_bytes(b"truncated")
    with pytest.raises(DataError, match="could not download"):
        download_url(f"{server}/images_evaluation.zip", other, "6b91aef0f799c5bb55b94e3f2daec811")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images_background.zip", "served"]


def test_read_only_folder_is_refused(server: str, tmp_path: Path) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(DataError, match="readonly is not writable"):
            download_url(f"{server}/images_background.zip", folder / "x.zip", "0" * 32)
        with pytest.raises(DataError, match="readonly is not writable"):
            download_url(f"{server}/images_background.zip", folder / "omniglot" / "x.zip", "0" * 32)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)
