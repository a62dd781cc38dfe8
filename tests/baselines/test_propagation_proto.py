"""SGC propagation and cosine prototypes against hand computations on a tiny literal graph."""

from __future__ import annotations

import math

import pytest
import torch

from cmlgraph.baselines.propagation import sym_norm_adj, sym_norm_propagate
from cmlgraph.baselines.proto import cosine_prototype_logits
from cmlgraph.errors import ConfigError, DataError

# The path 0 - 1 - 2 (both directions). With self-loops the degrees are 2, 3, 2, so
# S = [[1/2, 1/√6, 0], [1/√6, 1/3, 1/√6], [0, 1/√6, 1/2]].
PATH = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
R6 = 1 / math.sqrt(6)
S_HAND = torch.tensor([[0.5, R6, 0.0], [R6, 1 / 3, R6], [0.0, R6, 0.5]])


def test_sym_norm_adj_equals_hand_matrix() -> None:
    assert torch.allclose(sym_norm_adj(PATH, 3).to_dense(), S_HAND, atol=1e-6)


def test_duplicate_edges_and_self_loops_count_once() -> None:
    noisy = torch.cat([PATH, torch.tensor([[0, 1, 2], [1, 1, 2]])], dim=1)
    assert torch.allclose(sym_norm_adj(noisy, 3).to_dense(), S_HAND, atol=1e-6)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_propagate_equals_matrix_power(k: int) -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, -1.0]])
    hand = torch.linalg.matrix_power(S_HAND, k) @ x
    assert torch.allclose(sym_norm_propagate(x, PATH, 3, k), hand, atol=1e-6)
    assert torch.allclose(sym_norm_propagate(x.to_sparse(), PATH, 3, k), hand, atol=1e-6)


def test_one_step_by_hand() -> None:
    out = sym_norm_propagate(torch.tensor([[1.0], [0.0], [0.0]]), PATH, 3, 1)
    assert torch.allclose(out.squeeze(1), torch.tensor([0.5, R6, 0.0]), atol=1e-6)


def test_cosine_prototypes_by_hand() -> None:
    support = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    support_y = torch.tensor([0, 0, 1])
    query = torch.tensor([[1.0, 1.0], [0.0, -5.0]])
    # class means (2, 0) and (0, 2): cosines of (1, 1) are 1/√2 to both; of (0, -5) are 0 and -1
    logits = cosine_prototype_logits(support, support_y, query, 2)
    assert torch.allclose(logits, torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, -1.0]]), atol=1e-6)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="K must be >= 0"):
        sym_norm_propagate(torch.ones(3, 1), PATH, 3, -1)
    with pytest.raises(DataError, match="3 nodes"):
        sym_norm_propagate(torch.ones(4, 1), PATH, 3, 1)
    with pytest.raises(DataError, match="outside"):
        sym_norm_adj(PATH, 2)
    with pytest.raises(DataError, match=r"classes \[1\] have no support"):
        cosine_prototype_logits(torch.ones(2, 2), torch.tensor([0, 0]), torch.ones(1, 2), 2)
