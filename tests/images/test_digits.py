"""scikit-learn digits as the embedded image smoke set."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.errors import ConfigError
from cmlgraph.images import ImageEpisodeSampler, ImageFewShotDataset, load_images


@pytest.fixture(scope="module")
def digits() -> ImageFewShotDataset:
    return load_images("digits")


def test_loads_ten_digits(digits: ImageFewShotDataset) -> None:
    assert digits.images.shape == (1797, 1, 28, 28) and digits.images.dtype == torch.float32
    assert 0.0 <= float(digits.images.min()) and float(digits.images.max()) <= 1.0
    assert digits.info["num_digits"] == 10 and not digits.partial
    assert digits.splits == {"train": [0, 1, 2, 3, 4], "val": [10, 11, 12, 13, 14], "test": [5, 6, 7, 8, 9]}
    digit_of = torch.tensor([*range(10), *range(5)])
    assert digit_of[digits.labels].unique().tolist() == list(range(10))
    assert digits.notes and "held-out" in digits.notes[0]


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("shots", [1, 5])
def test_episodes(digits: ImageFewShotDataset, split: str, shots: int) -> None:
    sampler = ImageEpisodeSampler(digits.labels, digits.splits[split], 5, shots, 15, generator=0)
    ep = sampler.sample()
    xs, ys, xq, yq = digits.episode_tensors(ep)
    assert xs.shape == (5 * shots, 1, 28, 28) and xq.shape == (75, 1, 28, 28)
    assert ys.unique().tolist() == yq.unique().tolist() == [0, 1, 2, 3, 4]
    assert not set(ep.support.tolist()) & set(ep.query.tolist())
    assert set(ep.classes.tolist()) == set(digits.splits[split])


def test_other_sizes_and_bad_options() -> None:
    small = load_images("digits", image_size=8)
    assert small.images.shape == (1797, 1, 8, 8)
    with pytest.raises(ConfigError, match=r"digits does not support \['rotations'\]"):
        load_images("digits", rotations=True)
    with pytest.raises(ConfigError, match="unknown image dataset 'mnist'; valid names: omniglot, digits"):
        load_images("mnist")
