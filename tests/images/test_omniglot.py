"""Omniglot on the real 242-character subset: counts, splits, rotations, the cache, and clear data errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from cmlgraph.errors import ConfigError, DataError
from cmlgraph.images import ImageEpisodeSampler, ImageFewShotDataset, load_images

pytestmark = pytest.mark.slow


def snapshot(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def omniglot(data_root: Path, image_cache: Path) -> ImageFewShotDataset:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CMLGRAPH_CACHE", str(image_cache))
        before = snapshot(data_root / "omniglot")
        data = load_images("omniglot", data_root)
        assert snapshot(data_root / "omniglot") == before, "the raw data root must never be written"
    return data


def test_subset_counts(omniglot: ImageFewShotDataset) -> None:
    assert omniglot.images.shape == (4840, 1, 28, 28) and omniglot.images.dtype == torch.float32
    assert omniglot.num_classes == 242 and omniglot.info["num_characters"] == 242
    assert torch.bincount(omniglot.labels).tolist() == [20] * 242
    assert float(omniglot.images.min()) == 0.0 and float(omniglot.images.max()) == 1.0
    # Strokes are bright after inversion: most pixels are background (dark).
    assert float(omniglot.images.mean()) < 0.25
    assert "Greek/character01" in omniglot.info["class_names"]


def test_partial_split_is_disjoint_and_reported(omniglot: ImageFewShotDataset) -> None:
    splits = omniglot.splits
    assert {k: len(v) for k, v in splits.items()} == {"train": 153, "val": 26, "test": 63}
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == list(range(242))
    assert omniglot.partial and omniglot.info["split_method"] == "seeded"
    assert "images_background.zip and images_evaluation.zip missing" in omniglot.notes[0]
    assert any("test 0/423" in note for note in omniglot.notes)


def test_split_is_stable_under_a_seed(data_root: Path, omniglot: ImageFewShotDataset) -> None:
    again = load_images("omniglot", data_root, seed=0)
    other = load_images("omniglot", data_root, seed=1)
    assert again.splits == omniglot.splits
    assert torch.equal(again.images, omniglot.images)
    assert other.splits != omniglot.splits
    counts = load_images("omniglot", data_root, split=(142, 50, 50)).splits
    assert [len(counts[k]) for k in ("train", "val", "test")] == [142, 50, 50]


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize(("ways", "shots"), [(5, 1), (5, 5), (20, 1), (20, 5)])
def test_episodes_on_every_split(omniglot: ImageFewShotDataset, split: str, ways: int, shots: int) -> None:
    sampler = ImageEpisodeSampler(omniglot.labels, omniglot.splits[split], ways, shots, 15, generator=0)
    xs, ys, xq, yq = omniglot.episode_tensors(sampler.sample())
    assert xs.shape == (ways * shots, 1, 28, 28) and xq.shape == (ways * 15, 1, 28, 28)
    assert ys.max() == yq.max() == ways - 1


def test_rotations_are_extra_classes(data_root: Path, omniglot: ImageFewShotDataset) -> None:
    rot = load_images("omniglot", data_root, rotations=True)
    assert rot.images.shape == (4 * 4840, 1, 28, 28) and rot.num_classes == 968
    assert rot.info["class_names"][:2] == [
        omniglot.info["class_names"][0] + "/rot000",
        omniglot.info["class_names"][0] + "/rot090",
    ]
    assert sorted(rot.splits["test"]) == sorted(4 * c + k for c in omniglot.splits["test"] for k in range(4))
    first = int(torch.nonzero(rot.labels == 1)[0])  # character 0 at 90 degrees
    same = int(torch.nonzero(omniglot.labels == 0)[0])
    torch.testing.assert_close(rot.images[first, 0], torch.rot90(omniglot.images[same, 0], 1))


def test_cache_is_reused(data_root: Path, omniglot: ImageFewShotDataset) -> None:
    cache_file = Path(omniglot.info["cache_file"])
    assert cache_file.is_file() and cache_file.suffix == ".npz"
    stamp = cache_file.stat().st_mtime_ns
    load_images("omniglot", data_root)
    assert cache_file.stat().st_mtime_ns == stamp


def test_vinyals_split_needs_the_full_data(data_root: Path) -> None:
    with pytest.raises(DataError, match="Vinyals split needs all its characters.*test 0/423.*download=True"):
        load_images("omniglot", data_root, split="vinyals")
    with pytest.raises(ConfigError, match="split counts \\(200, 50, 50\\)"):
        load_images("omniglot", data_root, split=(200, 50, 50))


def test_missing_archives_give_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "omniglot").mkdir()
    with pytest.raises(DataError, match="no Omniglot archives in .*images_background.zip.*download=True"):
        load_images("omniglot", tmp_path)


def test_corrupted_archive_gives_a_clear_error(data_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    shutil.copy(data_root / "omniglot" / "images_background_small2.zip", folder)
    data = (data_root / "omniglot" / "images_background_small1.zip").read_bytes()
    (folder / "images_background_small1.zip").write_bytes(data[:-100])
    with pytest.raises(DataError, match="background_small1.zip is corrupted: md5 .* expected e704a628"):
        load_images("omniglot", tmp_path)


def test_without_split_files_a_seeded_split_is_used(data_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    for name in ("images_background_small1.zip", "images_background_small2.zip"):
        shutil.copy(data_root / "omniglot" / name, folder)
    data = load_images("omniglot", tmp_path)
    assert data.info["split_method"] == "seeded" and any("not found" in n for n in data.notes)
    assert len(data.splits["test"]) == 63
