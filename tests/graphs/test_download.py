"""Downloads against a local HTTP server, checksum verification and safe zip extraction."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from cmlgraph.errors import DataError
from cmlgraph.graphs.download import download_file, extract_zip, file_checksum, verify_file

CORA_Y_SHA = "sha256:94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1"
CLOTHING_NET_BLOB = "gitblob:1d9cde48180cce0e9f9fc08628362e661d9e2b20"


def test_gitblob_matches_manifest(shared_root: Path, tmp_path: Path) -> None:
    assert file_checksum(shared_root / "Amazon_clothing" / "Amazon_clothing_network", "gitblob") == CLOTHING_NET_BLOB
    (tmp_path / "h").write_bytes(b"hello\n")  # `git hash-object` of "hello\n" is ce013625...
    expected = hashlib.sha1(b"blob 6\0hello\n").hexdigest()
    assert expected == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert file_checksum(tmp_path / "h", "gitblob") == f"gitblob:{expected}"


def test_good_download_is_stored(http_dir, tmp_path: Path, shared_root: Path) -> None:
    folder, url = http_dir
    shutil.copy(shared_root / "planetoid" / "ind.cora.y", folder / "ind.cora.y")
    dest = tmp_path / "out" / "ind.cora.y"
    assert download_file(url + "ind.cora.y", dest, CORA_Y_SHA) == dest
    assert file_checksum(dest) == CORA_Y_SHA
    assert [p.name for p in dest.parent.iterdir()] == ["ind.cora.y"]


def test_corrupted_download_is_rejected_and_deleted(http_dir, tmp_path: Path, shared_root: Path) -> None:
    folder, url = http_dir
    data = bytearray((shared_root / "planetoid" / "ind.cora.y").read_bytes())
    data[100] ^= 0xFF
    (folder / "ind.cora.y").write_bytes(bytes(data))
    dest = tmp_path / "out" / "ind.cora.y"
    with pytest.raises(DataError, match=r"ind\.cora\.y.*corrupted: expected sha256:94465c14.*got sha256:") as err:
        download_file(url + "ind.cora.y", dest, CORA_Y_SHA)
    assert url + "ind.cora.y" in str(err.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_missing_url_is_a_data_error(http_dir, tmp_path: Path) -> None:
    _, url = http_dir
    with pytest.raises(DataError, match="download of .*nothing.bin.* failed"):
        download_file(url + "nothing.bin", tmp_path / "nothing.bin", None)
    assert not (tmp_path / "nothing.bin").exists()


def test_local_file_verified_and_cached(tmp_path: Path, shared_root: Path) -> None:
    p = tmp_path / "ind.cora.y"
    shutil.copy(shared_root / "planetoid" / "ind.cora.y", p)
    verify_file(p, CORA_Y_SHA, url="http://x/ind.cora.y")
    verify_file(p, CORA_Y_SHA)  # cached: no error
    data = bytearray(p.read_bytes())
    data[0] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"fails its checksum: expected sha256:94465c14.*http://x/ind\.cora\.y"):
        verify_file(p, CORA_Y_SHA, url="http://x/ind.cora.y")


@pytest.mark.parametrize("member", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt"])
def test_unsafe_zip_members_are_refused(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr(member, "evil")
    target = tmp_path / "target"
    with pytest.raises(DataError, match="refusing to extract"):
        extract_zip(archive, target)
    assert not (tmp_path / "evil.txt").exists()
    assert not target.exists() or not any(target.iterdir())


def test_zip_extraction(tmp_path: Path) -> None:
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("d/a.txt", "A")
        zf.writestr("b.txt", "B")
    out = extract_zip(archive, tmp_path / "t", members=["d/a.txt"])
    assert out == [(tmp_path / "t" / "d" / "a.txt").resolve()]
    assert out[0].read_text() == "A"
    with pytest.raises(DataError, match="lacks"):
        extract_zip(archive, tmp_path / "t", members=["nope"])
