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


@pytest.mark.parametrize("ways", [2, 5])
def test_tasks_fitted_together_equal_each_fitted_alone(ways: int) -> None:
    from cmlgraph.baselines.logreg import fit_logreg_tasks, logreg_logits_tasks

    g = torch.Generator().manual_seed(ways)
    shots, tasks = 3, 7
    xs = torch.randn(tasks, ways * shots, 12, generator=g, dtype=torch.float64)
    xs[2, 1] = xs[2, 0]  # a rank-deficient support set
    xs[4] = 0.0  # one with no spread at all: only the intercepts move
    xs[5] *= 50.0  # one on another scale (a harder, near-separable fit)
    y = torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1)
    w, b = fit_logreg_tasks(xs, y, ways, 10.0)
    for t in range(tasks):
        w1, b1 = fit_logreg(xs[t], y[t], ways, 10.0)
        torch.testing.assert_close(w[t], w1, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(b[t], b1, atol=1e-9, rtol=1e-7)
    # the batched logits of tasks with different query counts equal the one-task logits, in order
    queries = [torch.randn(q, 12, generator=g, dtype=torch.float64) for q in (1, 4, 2, 3, 5, 6, 2)]
    many = logreg_logits_tasks(list(xs), list(y), queries, ways, 10.0)
    assert [tuple(m.shape) for m in many] == [(q.shape[0], ways) for q in queries]
    for t in range(tasks):
        torch.testing.assert_close(many[t], logreg_logits(xs[t], y[t], queries[t], ways, 10.0), atol=1e-5, rtol=1e-5)


def test_tasks_with_bad_inputs_name_the_problem() -> None:
    from cmlgraph.baselines.logreg import fit_logreg_tasks, logreg_logits_tasks

    with pytest.raises(DataError, match=r"expected support \[T, S, F\]"):
        fit_logreg_tasks(torch.ones(4, 2), torch.tensor([0, 1, 0, 1]), 2)
    y = torch.tensor([[0, 1], [0, 0]])  # the second task has no row of class 1
    with pytest.raises(DataError, match=r"classes \[1\] have no support"):
        fit_logreg_tasks(torch.randn(2, 2, 3), y, 2)
    with pytest.raises(DataError, match="each task needs one of each"):
        logreg_logits_tasks([torch.ones(2, 1)], [], [torch.ones(1, 1)], 2)
