"""Episode sampler: shapes, labels, disjointness, determinism, validation and save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cmlgraph.errors import ConfigError
from cmlgraph.graphs import EpisodeSampler, episodes_from_state, episodes_to_state, fixed_episodes

Y = torch.arange(200) % 10  # 10 classes x 20 nodes
Y[::7] = -1


def test_episode_shape_labels_and_disjoint() -> None:
    s = EpisodeSampler(Y, [0, 2, 4, 6, 8], ways=3, shots=2, queries=4, generator=torch.Generator().manual_seed(0))
    for _ in range(20):
        e = s.sample()
        assert e.support.shape == (6,) and e.query.shape == (12,) and e.classes.shape == (3,)
        assert torch.equal(e.support_y, torch.tensor([0, 0, 1, 1, 2, 2]))
        assert sorted(e.query_y.tolist()) == sorted([0, 1, 2] * 4)
        assert not set(e.support.tolist()) & set(e.query.tolist())
        assert torch.equal(Y[e.support], e.classes[e.support_y])
        assert torch.equal(Y[e.query], e.classes[e.query_y])
        assert set(e.classes.tolist()) <= {0, 2, 4, 6, 8}


def test_own_generator_only() -> None:
    torch.manual_seed(0)
    a = fixed_episodes(Y, range(10), 5, 1, 3, n=4, seed=7)
    torch.manual_seed(123)
    b = fixed_episodes(Y, range(10), 5, 1, 3, n=4, seed=7)
    state = torch.random.get_rng_state()
    fixed_episodes(Y, range(10), 5, 1, 3, n=4, seed=7)
    assert torch.equal(state, torch.random.get_rng_state())
    for ea, eb in zip(a, b, strict=True):
        assert torch.equal(ea.support, eb.support) and torch.equal(ea.query, eb.query)
    c = fixed_episodes(Y, range(10), 5, 1, 3, n=4, seed=8)
    assert any(not torch.equal(x.support, y.support) for x, y in zip(a, c, strict=True))


def test_validation_messages() -> None:
    gen = torch.Generator()
    with pytest.raises(ConfigError, match=r"ways=5 but the split has only 3 classes"):
        EpisodeSampler(Y, [0, 1, 2], 5, 1, 1, gen)
    y = Y.clone()
    y[(y == 3).nonzero().view(-1)[3:]] = -1  # class 3 keeps 3 nodes
    with pytest.raises(ConfigError, match=r"fewer than shots\+queries=6 labelled nodes: 3 \(3 nodes\)"):
        EpisodeSampler(y, [0, 1, 2, 3], 2, 1, 5, gen)
    with pytest.raises(ConfigError, match="shots=0"):
        EpisodeSampler(Y, [0, 1], 2, 0, 5, gen)
    # many short classes: a few named, the rest counted, and the largest shots+queries that fits them all (a
    # new-user trial's --shots 50 listed all 36 classes of the split)
    with pytest.raises(ConfigError) as err:
        EpisodeSampler(Y, list(range(10)), 2, 20, 5, gen)
    text = str(err.value)
    assert "10 classes have fewer than shots+queries=25" in text and "... (2 more)" in text
    assert text.count(" nodes),") == 8  # eight named
    assert "shots+queries <= 17 fits every class of the split (its classes have 17 to 18 labelled nodes)" in text


def test_state_roundtrip(tmp_path: Path) -> None:
    eps = fixed_episodes(Y, range(10), 5, 3, 2, n=6, seed=1)
    state = episodes_to_state(eps)
    assert state["support"].shape == (6, 15) and state["classes"].shape == (6, 5)
    torch.save(state, tmp_path / "eps.pt")
    back = episodes_from_state(torch.load(tmp_path / "eps.pt", weights_only=True))
    assert len(back) == 6
    for a, b in zip(eps, back, strict=True):
        for k in ("support", "support_y", "query", "query_y", "classes"):
            assert torch.equal(getattr(a, k), getattr(b, k))
    with pytest.raises(ConfigError, match="lacks"):
        episodes_from_state({"support": state["support"]})
