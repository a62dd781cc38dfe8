"""Per-task logistic regression: the linear probe of TLP (Tan et al., "Transductive Linear Probing: A Novel
Framework for Few-Shot Node Classification", LoG 2022), fitted on a task's support features only.

The objective is scikit-learn's ``LogisticRegression`` (what TLP calls): ``C · Σ_i CE_i + ½‖W‖²`` with an
unpenalised intercept; two classes use the binary model (one weight vector ``w``, logits ``[-d/2, d/2]`` with
``d = w·x + b``, whose softmax is its ``predict_proba``), more classes the multinomial one. It is solved exactly
and fast: the optimal ``W`` lies in the span of the support rows (the penalty removes any other component), so the
problem is solved on the support rows' coordinates in that span (at most ``S`` of them, from a thin SVD) by
Newton's method in float64, deterministic; a test checks it against scikit-learn.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cmlgraph.baselines.proto import support_counts
from cmlgraph.errors import ConfigError

#: Newton iterations at most, and the gradient norm at which they stop.
MAX_NEWTON, TOL = 50, 1e-10


def _newton_terms(theta: Tensor, xa: Tensor, y: Tensor, ways: int, c: float) -> tuple[Tensor, Tensor, Tensor]:
    """Objective, gradient and Hessian at ``theta`` (``xa``: support coordinates with a ones column last)."""
    r1 = xa.shape[1]
    pen = torch.ones(r1, dtype=xa.dtype)
    pen[-1] = 0.0  # the intercept is not penalised
    if ways == 2:
        d = xa @ theta
        t = y.to(xa.dtype)
        p = torch.sigmoid(d)
        value = c * torch.nn.functional.softplus(-(2 * t - 1) * d).sum() + 0.5 * (pen * theta * theta).sum()
        grad = c * xa.T @ (p - t) + pen * theta
        hess = c * (xa.T * (p * (1 - p))) @ xa + torch.diag(pen)
        return value, grad, hess
    th = theta.view(ways, r1)
    logits = xa @ th.T
    prob = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(y, ways).to(xa.dtype)
    value = c * -(onehot * torch.log_softmax(logits, dim=1)).sum() + 0.5 * (pen * th * th).sum()
    grad = (c * (prob - onehot).T @ xa + pen * th).reshape(-1)
    # H[k,a,l,b] = c Σ_i P_ik (δ_kl - P_il) x_ia x_ib + δ_kl δ_ab pen_a
    weight = torch.diag_embed(prob) - prob.unsqueeze(2) * prob.unsqueeze(1)  # [S, k, l]
    hess = c * torch.einsum("ikl,ia,ib->kalb", weight, xa, xa).reshape(ways * r1, ways * r1)
    hess = hess + torch.diag(pen.repeat(ways))
    return value, grad, hess


def fit_logreg(support: Tensor, support_y: Tensor, ways: int, c: float = 1.0) -> tuple[Tensor, Tensor]:
    """Fit the logistic regression on the support rows.

    Args:
        support: ``[S, F]`` support features.
        support_y: ``[S]`` labels in ``0..ways-1``; every class needs a row.
        ways: Number of classes.
        c: Inverse regularisation strength ``C`` (scikit-learn's convention).

    Returns:
        ``(W, b)`` in float64: ``W`` is ``[F]`` and ``b`` a scalar for two classes (binary model), else
        ``W`` is ``[ways, F]`` and ``b`` ``[ways]``.

    Raises:
        ConfigError: ``c <= 0``.
        DataError: A label outside ``[0, ways)`` or a class without a support row.
    """
    if not float(c) > 0:
        raise ConfigError(f"logistic regression needs C > 0, got {c}")
    y = support_y.long().cpu()
    support_counts(support, y, ways)  # raises on labels that do not fit the support set
    xs = support.detach().double().cpu()
    _, sing, vh = torch.linalg.svd(xs, full_matrices=False)
    keep = sing > sing.max().clamp_min(1e-300) * 1e-10 if sing.numel() else sing > 0
    basis = vh[keep].T  # [F, r]: the support rows' span
    coords = xs @ basis
    r = coords.shape[1]
    xa = torch.cat([coords, torch.ones(coords.shape[0], 1, dtype=coords.dtype)], dim=1)
    n = r + 1 if ways == 2 else ways * (r + 1)
    theta = torch.zeros(n, dtype=torch.float64)
    for _ in range(MAX_NEWTON):
        value, grad, hess = _newton_terms(theta, xa, y, ways, float(c))
        if float(grad.norm()) < TOL:
            break
        # softmax is unchanged by adding a constant to every class's intercept: a tiny ridge keeps H invertible
        step = torch.linalg.solve(hess + 1e-9 * torch.eye(n, dtype=hess.dtype), grad)
        scale = 1.0
        while scale > 1e-8 and float(_newton_terms(theta - scale * step, xa, y, ways, float(c))[0]) > float(value):
            scale *= 0.5
        theta = theta - scale * step
    if ways == 2:
        return basis @ theta[:r], theta[r]
    th = theta.view(ways, r + 1)
    return th[:, :r] @ basis.T, th[:, r]


def logreg_logits(support: Tensor, support_y: Tensor, query: Tensor, ways: int, c: float = 1.0) -> Tensor:
    """Fit on the support rows (:func:`fit_logreg`) and return the query logits.

    Returns:
        ``[Q, ways]`` float32 logits whose softmax is the fitted model's class probabilities.
    """
    w, b = fit_logreg(support, support_y, ways, c)
    xq = query.detach().double().cpu()
    if ways == 2:
        d = xq @ w + b
        out = torch.stack([-d / 2, d / 2], dim=1)
    else:
        out = xq @ w.T + b
    return out.float().to(query.device)


__all__ = ["fit_logreg", "logreg_logits"]
