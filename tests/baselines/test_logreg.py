"""The per-task logistic regression against a hand computation and against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from cmlgraph.baselines.logreg import fit_logreg, logreg_logits
from cmlgraph.errors import ConfigError, DataError


def _bisect(f, lo: float, hi: float) -> float:
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("c", [0.5, 1.0, 10.0])
def test_binary_by_hand(c: float) -> None:
    # x = +1 (class 1) and x = -1 (class 0): by symmetry b = 0, and C·2·log(1 + e^{-w}) + w²/2 is minimal where
    # -2C·σ(-w) + w = 0.
    w_hand = _bisect(lambda w: -2 * c / (1 + math.exp(w)) + w, 0.0, 100.0)
    w, b = fit_logreg(torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 0]), 2, c)
    assert abs(float(w[0]) - w_hand) < 1e-8 and abs(float(b)) < 1e-8
    logits = logreg_logits(torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 0]), torch.tensor([[0.5]]), 2, c)
    p1 = torch.softmax(logits.double(), dim=1)[0, 1]
    assert abs(float(p1) - 1 / (1 + math.exp(-0.5 * w_hand))) < 1e-6


@pytest.mark.parametrize("ways,dim,c", [(2, 30, 1.0), (3, 5, 0.1), (5, 200, 10.0)])
def test_probabilities_equal_scikit_learns(ways: int, dim: int, c: float) -> None:
    g = torch.Generator().manual_seed(ways * dim)
    xs = torch.randn(ways * 3, dim, generator=g, dtype=torch.float64)
    y = torch.arange(ways).repeat_interleave(3)
    xq = torch.randn(8, dim, generator=g, dtype=torch.float64)
    ours = torch.softmax(logreg_logits(xs, y, xq, ways, c).double(), dim=1).numpy()
    ref = LogisticRegression(C=c, max_iter=10_000, tol=1e-12).fit(xs.numpy(), y.numpy()).predict_proba(xq.numpy())
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_deterministic() -> None:
    g = torch.Generator().manual_seed(1)
    xs, xq = torch.randn(9, 40, generator=g), torch.randn(4, 40, generator=g)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert torch.equal(logreg_logits(xs, y, xq, 3), logreg_logits(xs, y, xq, 3))


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="C > 0"):
        fit_logreg(torch.ones(2, 1), torch.tensor([0, 1]), 2, 0.0)
    with pytest.raises(DataError, match=r"classes \[2\] have no support"):
        fit_logreg(torch.ones(2, 1), torch.tensor([0, 1]), 3)
