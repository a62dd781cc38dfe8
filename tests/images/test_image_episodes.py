"""The image episode sampler: shapes, remapped labels, disjointness, determinism, validation and saving."""

from __future__ import annotations

import io

import pytest
import torch

from cmlgraph.errors import ConfigError
from cmlgraph.images import (
    ImageEpisodeSampler,
    episodes_from_state,
    episodes_to_state,
    fixed_episodes,
)

LABELS = torch.arange(12).repeat_interleave(20)  # 12 classes x 20 items, like Omniglot characters


@pytest.mark.parametrize(("ways", "shots"), [(5, 1), (5, 5), (10, 1), (10, 5)])
def test_episode_shapes_labels_and_disjointness(ways: int, shots: int) -> None:
    sampler = ImageEpisodeSampler(LABELS, range(12), ways, shots, queries=15 - shots, generator=1)
    queries = 15 - shots
    for _ in range(5):
        ep = sampler.sample()
        assert ep.support.shape == ep.support_y.shape == (ways * shots,)
        assert ep.query.shape == ep.query_y.shape == (ways * queries,)
        assert ep.classes.unique().numel() == ways
        assert set(ep.support_y.tolist()) == set(ep.query_y.tolist()) == set(range(ways))
        assert not set(ep.support.tolist()) & set(ep.query.tolist())
        torch.testing.assert_close(LABELS[ep.support], ep.classes[ep.support_y])
        torch.testing.assert_close(LABELS[ep.query], ep.classes[ep.query_y])


def test_only_split_classes_are_drawn() -> None:
    split = [1, 4, 7, 9, 11]
    sampler = ImageEpisodeSampler(LABELS, split, 5, 1, 2, generator=0)
    for _ in range(10):
        assert sorted(sampler.sample().classes.tolist()) == split


def test_determinism_and_no_global_rng() -> None:
    before = torch.random.get_rng_state()
    a = fixed_episodes(LABELS, range(12), 5, 1, 3, num_episodes=4, seed=7)
    b = fixed_episodes(LABELS, range(12), 5, 1, 3, num_episodes=4, seed=7)
    c = fixed_episodes(LABELS, range(12), 5, 1, 3, num_episodes=4, seed=8)
    assert torch.equal(torch.random.get_rng_state(), before)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.support, y.support) and torch.equal(x.query, y.query)
    assert any(not torch.equal(x.support, z.support) for x, z in zip(a, c, strict=True))


def test_episodes_round_trip_through_weights_only_load() -> None:
    episodes = fixed_episodes(LABELS, range(12), 5, 2, 3, num_episodes=6, seed=0)
    state = episodes_to_state(episodes)
    assert state["support"].shape == (6, 10) and state["classes"].shape == (6, 5)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = episodes_from_state(torch.load(buf, weights_only=True))
    for x, y in zip(episodes, loaded, strict=True):
        for name in ("support", "support_y", "query", "query_y", "classes"):
            assert torch.equal(getattr(x, name), getattr(y, name))


def test_sampler_state_resumes_the_stream() -> None:
    sampler = ImageEpisodeSampler(LABELS, range(12), 5, 1, 3, generator=3)
    sampler.sample()
    state = sampler.state_dict()
    expected = sampler.sample()
    resumed = ImageEpisodeSampler(LABELS, range(12), 5, 1, 3, generator=99)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.sample().support, expected.support)


def test_upfront_validation_names_the_problem() -> None:
    with pytest.raises(ConfigError, match="ways=20 but the split has only 12 classes"):
        ImageEpisodeSampler(LABELS, range(12), 20, 1, 1)
    labels = torch.cat([LABELS, torch.tensor([12] * 5 + [13] * 3)])
    short = r"2 classes have fewer than shots \+ queries = 6 items: 12 \(5\), 13 \(3\)"
    with pytest.raises(ConfigError, match=short):
        ImageEpisodeSampler(labels, range(14), 5, 1, 5)
    with pytest.raises(ConfigError, match="shots=0"):
        ImageEpisodeSampler(LABELS, range(12), 5, 0, 5)
    with pytest.raises(ConfigError, match="fewer than .* 21 items: 0 \\(20\\)"):
        ImageEpisodeSampler(LABELS, range(12), 5, 1, 20)
