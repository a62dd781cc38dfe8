"""The CML spec (DESIGN §1) checked on a tiny float64 model: exact gradients, not just shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmlgraph.core.functional import co_head, features, head
from cmlgraph.core.inner_loop import InnerLoopConfig, inner_loop, support_loss
from cmlgraph.core.model import group_of, parameters_of
from cmlgraph.core.objective import outer_objective
from tests.conftest import tiny_episodes, tiny_model

CE = F.cross_entropy


def _grads(loss, params):
    names = list(params)
    raw = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True, retain_graph=True)
    return {k: (g if g is not None else torch.zeros_like(params[k])) for k, g in zip(names, raw, strict=True)}


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("batched", [False, True])
def test_gamma_zero_equals_plain_maml(first_order, batched):
    cml_model = tiny_model(co_depth=0)
    maml_model = tiny_model(co_depth=None)
    maml_model.load_state_dict({k: v for k, v in cml_model.state_dict().items() if group_of(k) != "co"})
    inner = InnerLoopConfig(steps=2, lr=0.3, first_order=first_order)
    eps = tiny_episodes()
    p_cml, p_maml = parameters_of(cml_model), parameters_of(maml_model)
    g_cml = _grads(outer_objective(cml_model, p_cml, eps, CE, inner, gamma=0.0, cml=True, batched=batched).total,
                   p_cml)
    g_maml = _grads(outer_objective(maml_model, p_maml, eps, CE, inner, cml=False, batched=batched).total, p_maml)
    assert set(g_maml) == {k for k in g_cml if group_of(k) != "co"}
    for k in g_maml:
        assert torch.allclose(g_cml[k], g_maml[k], atol=1e-12), k
        assert g_maml[k].abs().sum() > 0


def test_co_learner_untouched_by_inner_loop():
    model = tiny_model()
    params = parameters_of(model)
    ep = tiny_episodes(1)[0]
    traj = inner_loop(model, params, ep.support_x, ep.support_y, CE, InnerLoopConfig(steps=3, lr=0.5))
    for k in params:
        if group_of(k) == "co":
            assert all(step[k] is params[k] for step in traj)
        else:
            assert not torch.equal(traj[-1][k], params[k]), k


@pytest.mark.parametrize("first_order", [False, True])
def test_co_learner_gradient_comes_only_from_its_own_term(first_order):
    model = tiny_model()
    params = parameters_of(model)
    loss = outer_objective(model, params, tiny_episodes(), CE, InnerLoopConfig(steps=2, lr=0.3,
                                                                                first_order=first_order),
                           gamma=0.7)
    g_total, g_meta, g_co = _grads(loss.total, params), _grads(loss.meta, params), _grads(loss.co, params)
    for k in params:
        if group_of(k) == "co":
            assert torch.count_nonzero(g_meta[k]) == 0
            assert torch.allclose(g_total[k], 0.7 * g_co[k])
            assert g_co[k].abs().sum() > 0


@pytest.mark.parametrize("first_order", [False, True])
def test_co_term_reaches_extractor_in_both_orders_and_head_only_in_second(first_order):
    model = tiny_model()
    params = parameters_of(model)
    loss = outer_objective(model, params, tiny_episodes(), CE,
                           InnerLoopConfig(steps=2, lr=0.3, first_order=first_order))
    g_co = _grads(loss.co, params)
    ext = sum(g_co[k].abs().sum() for k in params if group_of(k) == "extractor")
    hd = sum(g_co[k].abs().sum() for k in params if group_of(k) == "head")
    assert ext > 0
    if first_order:
        assert hd == 0
    else:
        assert hd > 0


def _flat_fd(fn, params, eps=1e-6):
    out = {}
    for k, v in params.items():
        g = torch.zeros_like(v)
        flat = v.detach().view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = fn()
            flat[i] = old - eps
            down = fn()
            flat[i] = old
            g.view(-1)[i] = (up - down) / (2 * eps)
        out[k] = g
    return out


def test_second_order_meta_gradient_matches_finite_differences():
    model = tiny_model()
    params = parameters_of(model)
    eps = tiny_episodes()
    inner = InnerLoopConfig(steps=2, lr=0.3)
    analytic = _grads(outer_objective(model, params, eps, CE, inner, gamma=0.8).total, params)

    def fn():
        with torch.enable_grad():
            return float(outer_objective(model, params, eps, CE, inner, gamma=0.8).total.detach())

    numeric = _flat_fd(fn, params)
    for k in params:
        assert torch.allclose(analytic[k], numeric[k], atol=1e-6, rtol=1e-4), k


def test_first_order_meta_gradient_matches_finite_differences_with_frozen_inner_gradients():
    """First order = the exact gradient of L(w − α g(w₀)) with the inner gradients held at w₀."""
    model = tiny_model()
    params = parameters_of(model)
    eps = tiny_episodes()
    alpha, gamma = 0.3, 0.8
    inner = InnerLoopConfig(steps=1, lr=alpha, first_order=True)
    analytic = _grads(outer_objective(model, params, eps, CE, inner, gamma=gamma).total, params)
    frozen = []
    for ep in eps:
        names = [k for k in params if group_of(k) in ("extractor", "head")]
        g = torch.autograd.grad(support_loss(model, params, ep.support_x, ep.support_y, CE, False, False),
                                [params[k] for k in names])
        frozen.append({k: gi.detach().clone() for k, gi in zip(names, g, strict=True)})

    def fn():
        total = 0.0
        with torch.no_grad():
            for ep, g in zip(eps, frozen, strict=True):
                fast = {k: (v - alpha * g[k] if k in g else v) for k, v in params.items()}
                q = features(model, fast, ep.query_x)
                total += float(CE(head(model, fast, q), ep.query_y) + gamma * CE(co_head(model, fast, q),
                                                                                 ep.query_y))
        return total / len(eps)

    numeric = _flat_fd(fn, params)
    for k in params:
        assert torch.allclose(analytic[k], numeric[k], atol=1e-6, rtol=1e-4), k


@pytest.mark.parametrize("first_order", [False, True])
def test_batched_equals_per_task_loop(first_order):
    model = tiny_model()
    params = parameters_of(model)
    eps = tiny_episodes(4)
    inner = InnerLoopConfig(steps=2, lr=0.3, first_order=first_order)
    a = outer_objective(model, params, eps, CE, inner, batched=True)
    b = outer_objective(model, params, eps, CE, inner, batched=False)
    assert torch.allclose(a.total, b.total)
    ga, gb = _grads(a.total, params), _grads(b.total, params)
    for k in params:
        assert torch.allclose(ga[k], gb[k], atol=1e-12), k
