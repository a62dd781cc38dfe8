"""APPNP-style label propagation against a hand computation; unreached nodes are named, never a lucky arg-max."""

from __future__ import annotations

import math

import pytest
import torch

from cmlgraph.baselines.label_prop import label_propagation, reached
from cmlgraph.errors import ConfigError, DataError

# The path 0 - 1 - 2 plus an isolated node 3. With self-loops the degrees are 2, 3, 2, 1.
EDGES = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
R6 = 1 / math.sqrt(6)


def test_one_step_by_hand() -> None:
    # Y = [[1,0],[0,0],[0,1],[0,0]]; S Y = [[1/2,0],[1/√6,1/√6],[0,1/2],[0,0]]; Z = 0.5 S Y + 0.5 Y
    z = label_propagation(EDGES, 4, torch.tensor([0, 2]), torch.tensor([0, 1]), 2, steps=1, alpha=0.5)
    hand = torch.tensor([[0.75, 0.0], [R6 / 2, R6 / 2], [0.0, 0.75], [0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(z, hand, atol=1e-12)
    assert reached(z).tolist() == [True, True, True, False]


def test_two_steps_equal_the_matrix_iteration() -> None:
    s = torch.tensor([[0.5, R6, 0, 0], [R6, 1 / 3, R6, 0], [0, R6, 0.5, 0], [0, 0, 0, 1.0]], dtype=torch.float64)
    y = torch.zeros(4, 3, dtype=torch.float64)
    y[1, 2] = 1.0
    z = y
    for _ in range(2):
        z = 0.9 * s @ z + 0.1 * y
    out = label_propagation(EDGES, 4, torch.tensor([1]), torch.tensor([2]), 3, steps=2, alpha=0.1)
    assert torch.allclose(out, z, atol=1e-12)


def test_reach_grows_one_edge_per_step() -> None:
    path = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])  # 0 - 1 - 2 - 3
    support, y = torch.tensor([0]), torch.tensor([0])
    assert reached(label_propagation(path, 4, support, y, 2, steps=1)).tolist() == [True, True, False, False]
    assert reached(label_propagation(path, 4, support, y, 2, steps=3)).tolist() == [True, True, True, True]


def test_bad_settings_and_inputs() -> None:
    with pytest.raises(ConfigError, match="steps >= 1"):
        label_propagation(EDGES, 4, torch.tensor([0]), torch.tensor([0]), 2, steps=0)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        label_propagation(EDGES, 4, torch.tensor([0]), torch.tensor([0]), 2, alpha=1.0)
    with pytest.raises(DataError, match="support nodes must lie"):
        label_propagation(EDGES, 4, torch.tensor([7]), torch.tensor([0]), 2)
    with pytest.raises(DataError, match="support labels must lie"):
        label_propagation(EDGES, 4, torch.tensor([0]), torch.tensor([2]), 2)
