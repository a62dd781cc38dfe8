"""Per-task logistic regression: the linear probe of TLP (Tan et al., "Transductive Linear Probing: A Novel
Framework for Few-Shot Node Classification", LoG 2022), fitted on a task's support features only.

The objective is scikit-learn's ``LogisticRegression`` (what TLP calls): ``C · Σ_i CE_i + ½‖W‖²`` with an
unpenalised intercept; two classes use the binary model (one weight vector ``w``, logits ``[-d/2, d/2]`` with
``d = w·x + b``, whose softmax is its ``predict_proba``), more classes the multinomial one. It is solved exactly
and fast: the optimal ``W`` lies in the span of the support rows (the penalty removes any other component), so the
problem is solved on the support rows' coordinates in that span (at most ``S`` of them, from the eigenvectors of
the ``S × S`` Gram matrix) by
Newton's method in float64, deterministic; a test checks it against scikit-learn.

Many tasks of one shape (the same support size and ways, as every task of a run) are fitted **together**
(:func:`fit_logreg_tasks`): one batched SVD and one batched Newton iteration for all of them, each task with its own
convergence test and line search, so the result of a task does not depend on the tasks beside it. 500 test tasks
then cost a few dozen batched iterations instead of 500 separate solves (issue 17: a training-free method's test
tasks take seconds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cmlgraph.baselines.proto import support_counts
from cmlgraph.errors import ConfigError, DataError

#: Newton iterations at most, and the gradient norm at which a task stops.
MAX_NEWTON, TOL = 50, 1e-10
#: A line search halves the step at most until it is this small (then takes it).
MIN_SCALE = 1e-8


def _newton_terms(theta: Tensor, xa: Tensor, y: Tensor, ways: int, c: float,
                  hessian: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Objective ``[T]``, gradient ``[T, n]`` and Hessian ``[T, n, n]`` at ``theta`` ``[T, n]`` for ``T`` tasks.

    ``xa`` is ``[T, S, r + 1]``: the support coordinates with a ones column last (the unpenalised intercept).
    """
    t_, _, r1 = xa.shape
    pen = torch.ones(r1, dtype=xa.dtype)
    pen[-1] = 0.0  # the intercept is not penalised
    if ways == 2:
        d = torch.einsum("tsr,tr->ts", xa, theta)
        target = y.to(xa.dtype)
        value = c * torch.nn.functional.softplus(-(2 * target - 1) * d).sum(1) + 0.5 * (pen * theta * theta).sum(1)
        if not hessian:
            return value, None, None
        p = torch.sigmoid(d)
        grad = c * torch.einsum("tsr,ts->tr", xa, p - target) + pen * theta
        hess = c * torch.einsum("tsa,ts,tsb->tab", xa, p * (1 - p), xa) + torch.diag(pen)
        return value, grad, hess
    th = theta.view(t_, ways, r1)
    logits = torch.einsum("tsr,tkr->tsk", xa, th)
    onehot = torch.nn.functional.one_hot(y, ways).to(xa.dtype)
    value = c * -(onehot * torch.log_softmax(logits, dim=2)).sum((1, 2)) + 0.5 * (pen * th * th).sum((1, 2))
    if not hessian:
        return value, None, None
    prob = torch.softmax(logits, dim=2)
    grad = (c * torch.einsum("tsk,tsr->tkr", prob - onehot, xa) + pen * th).reshape(t_, -1)
    # H[k,a,l,b] = c Σ_i P_ik (δ_kl - P_il) x_ia x_ib + δ_kl δ_ab pen_a
    weight = torch.diag_embed(prob) - prob.unsqueeze(3) * prob.unsqueeze(2)  # [T, S, k, l]
    outer = xa.unsqueeze(3) * xa.unsqueeze(2)  # [T, S, a, b]
    hess = c * torch.einsum("tikl,tiab->tkalb", weight, outer).reshape(t_, ways * r1, ways * r1)
    hess = hess + torch.diag(pen.repeat(ways))
    return value, grad, hess


def _check(support: Tensor, support_y: Tensor, ways: int, c: float) -> Tensor:
    """The labels as ``[T, S]`` long, after the checks of :func:`fit_logreg_tasks`."""
    if not float(c) > 0:
        raise ConfigError(f"logistic regression needs C > 0, got {c}")
    if support.dim() != 3 or support_y.dim() != 2 or support_y.shape != support.shape[:2]:
        raise DataError(f"expected support [T, S, F] and support_y [T, S], got {tuple(support.shape)} and "
                        f"{tuple(support_y.shape)}")
    y = support_y.long().cpu()
    for task in range(y.shape[0]):  # raises on labels that do not fit the support set, naming the problem
        support_counts(support[task], y[task], ways)
    return y


def fit_logreg_tasks(support: Tensor, support_y: Tensor, ways: int, c: float = 1.0) -> tuple[Tensor, Tensor]:
    """Fit one logistic regression per task on its support rows, all tasks together.

    Args:
        support: ``[T, S, F]`` support features of ``T`` tasks.
        support_y: ``[T, S]`` labels in ``0..ways-1``; every class of every task needs a row.
        ways: Number of classes.
        c: Inverse regularisation strength ``C`` (scikit-learn's convention).

    Returns:
        ``(W, b)`` in float64: ``W`` is ``[T, F]`` and ``b`` ``[T]`` for two classes (binary model), else
        ``W`` is ``[T, ways, F]`` and ``b`` ``[T, ways]`` (centred: softmax is unchanged by a common shift).

    Raises:
        ConfigError: ``c <= 0``.
        DataError: Shapes that do not match, a label outside ``[0, ways)`` or a class without a support row.
    """
    y = _check(support, support_y, ways, c)
    c = float(c)
    xs = support.detach().double().cpu()
    t_, s_, _ = xs.shape
    # The support rows' span from their S x S Gram matrix (X Xᵀ = U Σ² Uᵀ): far cheaper than an SVD of X when F is
    # large (Coauthor-CS: F = 6805). Coordinates X V = U Σ; the basis Vᵀ = Σ⁻¹ Uᵀ X is never formed: a weight θ on
    # the coordinates is W = θ Σ⁻¹ Uᵀ X. Directions with σ below 1e-7·σ_max are dropped (the Gram matrix squares
    # the condition number): their coordinates are so small that their weights move no logit beyond rounding.
    lam, u = torch.linalg.eigh(xs @ xs.transpose(1, 2))  # [T, S], [T, S, S]
    sing = lam.clamp_min(0).sqrt()
    top = sing.max(dim=1, keepdim=True).values.clamp_min(1e-300) if sing.shape[1] else sing[:, :1]
    keep = (sing > top * 1e-7).to(xs.dtype)  # directions the support rows span (numerically)
    coords = u * (sing * keep).unsqueeze(1)  # [T, S, r]: = X V on the kept directions, 0 elsewhere
    back = u * (keep / sing.clamp_min(1e-300)).unsqueeze(1)  # [T, S, r]: U Σ⁻¹ on the kept directions
    r = coords.shape[2]
    xa = torch.cat([coords, torch.ones(t_, s_, 1, dtype=xs.dtype)], dim=2)
    n = r + 1 if ways == 2 else ways * (r + 1)
    theta = torch.zeros(t_, n, dtype=torch.float64)
    ridge = 1e-9 * torch.eye(n, dtype=torch.float64)
    todo = torch.arange(t_)  # tasks not converged yet: only they are computed (each task's iterates are its own)
    for _ in range(MAX_NEWTON):
        th, xa_t, y_t = theta[todo], xa[todo], y[todo]
        value, grad, hess = _newton_terms(th, xa_t, y_t, ways, c)
        active = grad.norm(dim=1) >= TOL
        if not bool(active.any()):
            break
        if not bool(active.all()):
            todo, th, xa_t, y_t = todo[active], th[active], xa_t[active], y_t[active]
            value, grad, hess = value[active], grad[active], hess[active]
        # softmax is unchanged by adding a constant to every class's intercept: a tiny ridge keeps H invertible
        step = torch.linalg.solve(hess + ridge, grad.unsqueeze(2)).squeeze(2)
        scale = torch.ones(len(todo), dtype=theta.dtype)
        while True:  # backtracking, per task: halve while the objective would rise
            trial = _newton_terms(th - scale.unsqueeze(1) * step, xa_t, y_t, ways, c, hessian=False)[0]
            halve = (scale > MIN_SCALE) & (trial > value)
            if not bool(halve.any()):
                break
            scale = torch.where(halve, scale * 0.5, scale)
        theta[todo] = th - scale.unsqueeze(1) * step
    if ways == 2:
        return torch.einsum("ts,tsf->tf", torch.einsum("tsr,tr->ts", back, theta[:, :r]), xs), theta[:, r]
    th = theta.view(t_, ways, r + 1)
    bias = th[:, :, r]  # a common shift of the intercepts changes no probability: report them centred
    weights = torch.bmm(torch.einsum("tkr,tsr->tks", th[:, :, :r], back), xs)  # θ Σ⁻¹ Uᵀ X
    return weights, bias - bias.mean(dim=1, keepdim=True)


def fit_logreg(support: Tensor, support_y: Tensor, ways: int, c: float = 1.0) -> tuple[Tensor, Tensor]:
    """Fit the logistic regression on one task's support rows (:func:`fit_logreg_tasks` with one task).

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
    support_counts(support, support_y.long(), ways)
    w, b = fit_logreg_tasks(support.unsqueeze(0), support_y.unsqueeze(0), ways, c)
    return w[0], b[0]


def _logits(w: Tensor, b: Tensor, query: Tensor, ways: int) -> Tensor:
    xq = query.detach().double().cpu()
    if ways == 2:
        d = xq @ w + b
        out = torch.stack([-d / 2, d / 2], dim=1)
    else:
        out = xq @ w.T + b
    return out.float().to(query.device)


def logreg_logits(support: Tensor, support_y: Tensor, query: Tensor, ways: int, c: float = 1.0) -> Tensor:
    """Fit on the support rows (:func:`fit_logreg`) and return the query logits.

    Returns:
        ``[Q, ways]`` float32 logits whose softmax is the fitted model's class probabilities.
    """
    w, b = fit_logreg(support, support_y, ways, c)
    return _logits(w, b, query, ways)


def logreg_logits_tasks(supports: Sequence[Tensor], support_ys: Sequence[Tensor], queries: Sequence[Tensor],
                        ways: int, c: float = 1.0) -> list[Tensor]:
    """:func:`logreg_logits` for many tasks: tasks of one support size are fitted together
    (:func:`fit_logreg_tasks`); each task's query set may have its own size.

    Args:
        supports: Each task's ``[S, F]`` support features (one ``F`` for all).
        support_ys: Each task's ``[S]`` labels.
        queries: Each task's ``[Q, F]`` query features.
        ways: Number of classes (every task).
        c: Inverse regularisation strength ``C``.

    Returns:
        Each task's ``[Q, ways]`` float32 logits, in the order given.
    """
    if not len(supports) == len(support_ys) == len(queries):
        raise DataError(f"got {len(supports)} support sets, {len(support_ys)} label sets and {len(queries)} query "
                        "sets; each task needs one of each")
    out: list[Tensor | None] = [None] * len(supports)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(supports):
        groups.setdefault(int(s.shape[0]), []).append(i)
    for idx in groups.values():
        w, b = fit_logreg_tasks(torch.stack([supports[i] for i in idx]), torch.stack([support_ys[i] for i in idx]),
                                ways, c)
        for j, i in enumerate(idx):
            out[i] = _logits(w[j], b[j], queries[i], ways)
    return [o for o in out if o is not None]


__all__ = ["fit_logreg", "fit_logreg_tasks", "logreg_logits", "logreg_logits_tasks"]
