"""Proto-MAML heads (issue 17): the head a task starts from equals its formula, per task and batched; the co-learner
still gets no inner update under CML; normalised features are unit length and scale-free."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmlgraph.core.episode import stack
from cmlgraph.core.functional import features
from cmlgraph.core.inner_loop import InnerLoopConfig, inner_loop
from cmlgraph.core.model import MetaModel, group_of, parameters_of
from cmlgraph.core.objective import outer_objective
from cmlgraph.core.proto_head import class_means, linear_head_keys, proto_head, zero_head_
from cmlgraph.errors import ConfigError
from tests.conftest import tiny_episodes, tiny_model

CE = F.cross_entropy


def test_class_means_by_hand():
    f = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [5.0, 5.0]])
    y = torch.tensor([0, 0, 1, 2])
    assert torch.equal(class_means(f, y, 3), torch.tensor([[2.0, 1.0], [0.0, 4.0], [5.0, 5.0]]))
    assert torch.equal(class_means(f, torch.tensor([0, 0, 0, 0]), 2)[1], torch.zeros(2))  # an empty class: zero


@pytest.mark.parametrize("zero", [True, False])
def test_proto_head_equals_its_formula(zero):
    """Rows 2 c_k and biases -||c_k||^2 (Triantafillou et al. 2020), plus the meta-learned head θ."""
    model = tiny_model()
    if zero:
        zero_head_(model)
    params = parameters_of(model)
    ep = tiny_episodes(1)[0]
    out = proto_head(model, params, ep.support_x, ep.support_y)
    f = features(model, params, ep.support_x)
    c = torch.stack([f[ep.support_y == k].mean(0) for k in range(3)])
    w, b = linear_head_keys(model)
    assert (w, b) == ("head.0.weight", "head.0.bias")
    assert torch.allclose(out[w], params[w] + 2 * c) and torch.allclose(out[b], params[b] - (c * c).sum(1))
    assert all(out[k] is params[k] for k in params if k not in (w, b))
    if zero:  # the start's logits rank classes exactly as the nearest class mean (squared Euclidean distance)
        fq = features(model, params, ep.query_x)
        logits = fq @ out[w].T + out[b]
        assert torch.equal(logits.argmax(1), torch.cdist(fq, c).argmin(1))
        assert torch.allclose(logits, -torch.cdist(fq, c) ** 2 + (fq * fq).sum(1, keepdim=True))


def test_batched_proto_head_equals_per_task():
    model = tiny_model()
    params = parameters_of(model)
    eps = tiny_episodes(3)
    batch = stack(eps)
    expanded = {k: v.unsqueeze(0).expand(3, *v.shape) for k, v in params.items()}
    out = proto_head(model, expanded, batch.support_x, batch.support_y, batched=True)
    for i, ep in enumerate(eps):
        one = proto_head(model, params, ep.support_x, ep.support_y)
        for k in ("head.0.weight", "head.0.bias"):
            assert torch.allclose(out[k][i], one[k]), (i, k)


def test_inner_loop_starts_from_the_prototypes_and_the_co_learner_never_adapts():
    model = tiny_model(co_depth=0)
    params = parameters_of(model)
    ep = tiny_episodes(1)[0]
    cfg = InnerLoopConfig(steps=2, lr=0.3, proto_head=True)
    traj = inner_loop(model, params, ep.support_x, ep.support_y, CE, cfg)
    start = proto_head(model, params, ep.support_x, ep.support_y)
    assert torch.allclose(traj[0]["head.0.weight"], start["head.0.weight"])
    for k in params:
        if group_of(k) == "co":  # CML: φ is never adapted, the prototypes are the meta-learner's head only
            assert all(step[k] is params[k] for step in traj), k
    assert not torch.allclose(traj[-1]["head.0.weight"], start["head.0.weight"])  # then the head adapts


def test_outer_gradient_reaches_the_extractor_through_the_prototypes():
    """Anil-style (head-only) adaptation: the extractor still gets meta-gradients through c_k, and θ gets some."""
    model = tiny_model(co_depth=0)
    zero_head_(model)
    params = parameters_of(model)
    cfg = InnerLoopConfig(steps=1, lr=0.3, adapt=("head",), proto_head=True)
    loss = outer_objective(model, params, tiny_episodes(2), CE, cfg, gamma=1.0, cml=True)
    grads = torch.autograd.grad(loss.total, [params[k] for k in params], allow_unused=True)
    by_name = dict(zip(params, grads, strict=True))
    assert all(by_name[k] is not None and by_name[k].abs().sum() > 0 for k in params)


@pytest.mark.parametrize("sam_rho", [0.0, 0.2])
def test_first_order_with_prototype_heads_reaches_the_extractor_through_the_prototypes(sam_rho):
    """FOMAML with Proto-MAML heads (``--first-order`` on a graph, whose default head is proto; MAML++'s first-order
    phase) used to crash: the support gradient freed the prototypes' forward pass, which the outer gradient needs
    again. The meta-gradient is the gradient of L_q(start − α ĝ) with the inner gradient ĝ held constant and the
    start θ + P(ψ) (P: the prototype head), so ψ gets a gradient through the prototypes; ĝ is the support loss's
    gradient at the start, as the second-order path takes it. Here recomputed from scratch, one inner step."""
    model = tiny_model(co_depth=None)
    params = parameters_of(model)
    ep = tiny_episodes(1)[0]
    cfg = InnerLoopConfig(steps=1, lr=0.3, first_order=True, proto_head=True, sam_rho=sam_rho)
    loss = outer_objective(model, params, [ep], CE, cfg, cml=False)
    grads = dict(zip(params, torch.autograd.grad(loss.total, list(params.values())), strict=True))

    def inner_gradient() -> list[torch.Tensor]:  # ĝ from a separate forward pass, then constant
        at = proto_head(model, params, ep.support_x, ep.support_y)
        names = list(at)
        g = torch.autograd.grad(CE(_head(model, at, ep.support_x), ep.support_y), [at[k] for k in names])
        if sam_rho:
            norm = torch.sqrt(sum(v.pow(2).sum() for v in g))
            shifted = {k: at[k] + sam_rho * gk / norm for k, gk in zip(names, g, strict=True)}
            g = torch.autograd.grad(CE(_head(model, shifted, ep.support_x), ep.support_y),
                                    [shifted[k] for k in names])
        return [v.detach() for v in g]

    start = proto_head(model, params, ep.support_x, ep.support_y)
    fast = {k: start[k] - 0.3 * gk for k, gk in zip(start, inner_gradient(), strict=True)}
    ref = torch.autograd.grad(CE(_head(model, fast, ep.query_x), ep.query_y), list(params.values()))
    for k, r in zip(params, ref, strict=True):
        torch.testing.assert_close(grads[k], r, msg=k)
    # ψ's gradient runs through the prototypes too: without that path it would be another number
    detached = {k: (v.detach() if group_of(k) == "head" else v) for k, v in fast.items()}
    other = torch.autograd.grad(CE(_head(model, detached, ep.query_x), ep.query_y), params["extractor.net.0.weight"])
    assert not torch.allclose(grads["extractor.net.0.weight"], other[0])


def _head(model, params, x):
    from cmlgraph.core.functional import head

    return head(model, params, features(model, params, x))


def test_a_head_that_is_not_one_linear_layer_is_refused():
    model = tiny_model()
    model.head = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)).double()
    with pytest.raises(ConfigError, match="one linear layer.*--head-init learned"):
        linear_head_keys(model)


def test_normalised_features_are_unit_length_and_scale_free():
    from cmlgraph.backbones.mlp import MLPBackbone

    torch.manual_seed(0)
    model = MetaModel(MLPBackbone(2, (4, 4)), 3, co_depth=0, normalize=True).double()
    params = parameters_of(model)
    ep = tiny_episodes(1)[0]
    f = features(model, params, ep.support_x)
    assert torch.allclose(f.norm(dim=1), torch.ones(len(f), dtype=f.dtype))
    batched = features(model, {k: v.unsqueeze(0).expand(2, *v.shape) for k, v in params.items()},
                       torch.stack([ep.support_x, ep.support_x]), batched=True)
    assert torch.allclose(batched[0], f) and torch.allclose(batched[1], f)


def test_a_zero_feature_row_keeps_second_order_gradients_finite():
    """A node with all-zero features: its normalised row is 0 and MAML's second-order meta-gradient stays finite."""
    from cmlgraph.core.functional import unit_rows

    f = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.autograd.grad(unit_rows(f).pow(2).sum() + unit_rows(f).sum(), f, create_graph=True)[0]
    (gg,) = torch.autograd.grad(g.sum(), f)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all() and torch.equal(unit_rows(f.detach()), f.detach())


def test_partial_proto_inner_gradient_treats_the_head_as_its_own_variable():
    """``algo.proto_inner: partial``: ψ's inner step is the support loss's partial derivative with the head held
    at its value (the common Proto-(FO)MAML code: the head a separate variable started at the prototypes), while
    the default ``total`` also runs through the prototype head; the outer gradient reaches ψ through the prototypes
    in both. Checked for the inner update, and for the first-order meta-gradient recomputed from scratch."""
    model = tiny_model(co_depth=None)
    params = parameters_of(model)
    ep = tiny_episodes(1)[0]
    start = proto_head(model, params, ep.support_x, ep.support_y)
    held = {k: (v.detach().requires_grad_() if group_of(k) == "head" else v) for k, v in start.items()}
    partial = torch.autograd.grad(CE(_head(model, held, ep.support_x), ep.support_y), [held[k] for k in held])
    partial = dict(zip(held, partial, strict=True))
    trajectories = {}
    for mode in (False, True):
        cfg = InnerLoopConfig(steps=1, lr=0.3, proto_head=True, proto_partial=mode)
        trajectories[mode] = inner_loop(model, params, ep.support_x, ep.support_y, CE, cfg)
    w = "extractor.net.0.weight"
    torch.testing.assert_close(trajectories[True][1][w], params[w] - 0.3 * partial[w])
    assert not torch.allclose(trajectories[False][1][w], trajectories[True][1][w])  # the default differs
    for k in ("head.0.weight", "head.0.bias"):  # the head's own step is the same either way
        torch.testing.assert_close(trajectories[True][1][k], trajectories[False][1][k])

    cfg = InnerLoopConfig(steps=1, lr=0.3, first_order=True, proto_head=True, proto_partial=True)
    loss = outer_objective(model, params, [ep], CE, cfg, cml=False)
    grads = torch.autograd.grad(loss.total, list(params.values()))
    fast = {k: start[k] - 0.3 * partial[k].detach() for k in start}
    ref = torch.autograd.grad(CE(_head(model, fast, ep.query_x), ep.query_y), list(params.values()))
    for k, g, r in zip(params, grads, ref, strict=True):
        torch.testing.assert_close(g, r, msg=k)
    second = outer_objective(model, params, [ep], CE, InnerLoopConfig(steps=2, lr=0.3, proto_head=True,
                                                                    proto_partial=True), cml=False)
    g2 = torch.autograd.grad(second.total, list(params.values()))
    assert all(torch.isfinite(g).all() for g in g2) and g2[0].abs().sum() > 0  # second order runs through it


def test_proto_inner_is_validated():
    from cmlgraph.api import make_config
    from cmlgraph.train.trainer import prepare

    cfg = prepare(make_config(task="graph", graph="synthetic", proto_inner="partial"))
    assert cfg.algo.proto_inner == "partial" and cfg.algo.head_init == "proto"
    with pytest.raises(ConfigError, match=r"algo.proto_inner \(--proto-inner\) = 'sideways' is not valid"):
        prepare(make_config(task="graph", graph="synthetic", proto_inner="sideways"))
    with pytest.raises(ConfigError, match="add --head-init proto or drop --proto-inner"):
        prepare(make_config(task="graph", graph="synthetic", proto_inner="partial", head_init="learned"))


def test_proto_inner_refusal_offers_only_a_fix_that_works():
    from cmlgraph.api import make_config
    from cmlgraph.train.trainer import prepare

    with pytest.raises(ConfigError, match="--algo protonet \\(--task graph\\) has no Proto-MAML head, drop "
                                          "--proto-inner") as info:
        prepare(make_config(task="graph", graph="synthetic", algo="protonet", proto_inner="partial"))
    assert "add --head-init proto" not in str(info.value)  # protonet refuses a proto head too
