"""Each algorithm against a hand-unrolled reference on a tiny float64 model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmlgraph.algorithms import (
    ALGORITHMS,
    MAMLPlusPlus,
    ProtoNet,
    SharpMAML,
    add_gradient_noise,
    get_algorithm,
    msl_weights,
)
from cmlgraph.config import AlgoConfig
from cmlgraph.core.functional import co_head, features, head
from cmlgraph.core.inner_loop import inner_loop
from cmlgraph.core.model import group_of, parameters_of, sub
from cmlgraph.errors import ConfigError
from tests.conftest import tiny_episodes, tiny_model

CE = F.cross_entropy


def _cfg(**kw):
    base = dict(inner_steps=2, inner_lr=0.3, co_depth=0)
    base.update(kw)
    return AlgoConfig(**base)


def _grads(loss, params):
    names = list(params)
    raw = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True, retain_graph=True)
    return {k: (g if g is not None else torch.zeros_like(params[k])) for k, g in zip(names, raw, strict=True)}


@pytest.mark.parametrize(("name", "adapts"), [("maml", {"extractor", "head"}), ("anil", {"head"}),
                                              ("boil", {"extractor"})])
def test_inner_loop_updates_only_the_groups_it_should(name, adapts):
    algo = get_algorithm(_cfg(algo=name))
    model = tiny_model()
    params = parameters_of(model)
    ep = tiny_episodes(1)[0]
    fast = inner_loop(model, params, ep.support_x, ep.support_y, CE, algo.inner_config())[-1]
    changed = {group_of(k) for k in params if not torch.equal(fast[k], params[k])}
    assert changed == adapts


def _manual_outer(model, params, ep, alpha, adapt, steps, gamma):
    """Hand-unrolled inner loop: explicit autograd.grad per step on the named groups."""
    fast = dict(params)
    for _ in range(steps):
        f = features(model, fast, ep.support_x)
        loss = CE(head(model, fast, f), ep.support_y)
        names = [k for k in fast if group_of(k) in adapt]
        gs = torch.autograd.grad(loss, [fast[k] for k in names], create_graph=True, allow_unused=True)
        fast = {**fast, **{k: fast[k] - alpha * g for k, g in zip(names, gs, strict=True) if g is not None}}
    q = features(model, fast, ep.query_x)
    return CE(head(model, fast, q), ep.query_y) + gamma * CE(co_head(model, fast, q), ep.query_y)


@pytest.mark.parametrize(("name", "adapt"), [("maml", ("extractor", "head")), ("anil", ("head",)),
                                             ("boil", ("extractor",))])
def test_meta_gradients_equal_hand_unrolled_reference(name, adapt):
    algo = get_algorithm(_cfg(algo=name, gamma=0.5))
    model = tiny_model()
    params = parameters_of(model)
    eps = tiny_episodes(2)
    got = algo.meta_gradients(model, params, eps, CE, 0).grads
    ref = _grads(sum(_manual_outer(model, params, ep, 0.3, adapt, 2, 0.5) for ep in eps) / len(eps), params)
    for k in params:
        assert torch.allclose(got[k], ref[k], atol=1e-10), k


def test_mamlpp_step_weights_and_learned_rates_receive_gradients():
    algo = MAMLPlusPlus(_cfg(algo="maml++", inner_steps=3, msl_fraction=0.5, first_order_fraction=0.0),
                        total_steps=100)
    model = tiny_model()
    algo.prepare(model)
    params = parameters_of(model)
    rates = sub(params, "lrs")
    assert len(rates) == sum(1 for k in params if group_of(k) in ("extractor", "head"))
    assert all(r.shape == (3,) and torch.allclose(r, torch.full((3,), 0.3, dtype=r.dtype)) for r in rates.values())
    w0 = algo.step_weights(0)
    assert w0 == pytest.approx([1 / 3] * 3)
    w_mid = algo.step_weights(25)
    assert w_mid[-1] > 1 / 3 > w_mid[0] and sum(w_mid) == pytest.approx(1.0)
    assert algo.step_weights(60) is None  # after the annealing span: final step only
    grads = algo.meta_gradients(model, params, tiny_episodes(2), CE, 10).grads
    for k in params:
        if group_of(k) == "lrs":
            # every step's rate is used by a step-weighted loss, so each entry gets a gradient
            assert torch.all(grads[k] != 0), k
    # the multi-step loss equals the weighted sum of per-step query losses
    ep = tiny_episodes(1)[0]
    loss = algo.objective(model, params, [ep], CE, 10, batched=False)
    traj = inner_loop(model, {k: v for k, v in params.items() if group_of(k) != "lrs"}, ep.support_x,
                      ep.support_y, CE, algo.inner_config(10), rates=rates)
    per_step = [CE(head(model, p, features(model, p, ep.query_x)), ep.query_y) for p in traj[1:]]
    expect = sum(w * loss_s for w, loss_s in zip(algo.step_weights(10), per_step, strict=True))
    assert torch.allclose(loss.meta, expect)


def test_mamlpp_derivative_order_annealing_and_cosine_lr():
    algo = MAMLPlusPlus(_cfg(algo="maml++", first_order_fraction=0.25), total_steps=100)
    assert algo.first_order_at(10) is True and algo.first_order_at(30) is None
    model = tiny_model()
    algo.prepare(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = algo.make_scheduler(opt)
    for _ in range(50):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi / 2)) / 2)


def test_msl_weights_match_the_authors_schedule():
    assert msl_weights(0, 5, 10) == pytest.approx([0.2] * 5)
    late = msl_weights(10_000, 5, 10)
    assert late[:-1] == pytest.approx([0.03 / 5] * 4) and late[-1] == pytest.approx(1 - 4 * 0.03 / 5)


def test_sharp_maml_gradient_equals_manual_sam_step():
    rho = 0.05
    algo = SharpMAML(_cfg(algo="sharp-maml", sam_rho=rho))
    model = tiny_model()
    params = parameters_of(model)
    eps = tiny_episodes(2)
    got = algo.meta_gradients(model, params, eps, CE, 0).grads
    maml = get_algorithm(_cfg(algo="maml"))
    g = maml.meta_gradients(model, params, eps, CE, 0).grads
    norm = torch.sqrt(sum((v ** 2).sum() for v in g.values()))
    shifted = tiny_model()
    with torch.no_grad():
        for k, p in shifted.named_parameters():
            p.copy_(params[k] + rho * g[k] / norm)
    manual = maml.meta_gradients(shifted, parameters_of(shifted), eps, CE, 0).grads
    for k in params:
        assert torch.allclose(got[k], manual[k], atol=1e-10), k
        assert not torch.allclose(got[k], g[k]), k


def test_sharp_maml_inner_option_changes_the_inner_step():
    eps = tiny_episodes(1)
    model = tiny_model()
    params = parameters_of(model)
    plain = SharpMAML(_cfg(algo="sharp-maml", sam_inner=False)).objective(model, params, eps, CE, 0)
    inner = SharpMAML(_cfg(algo="sharp-maml", sam_inner=True, sam_rho=0.5)).objective(model, params, eps, CE, 0)
    assert not torch.allclose(plain.total, inner.total)


def test_cl_control_adapts_the_co_learner_and_cml_never_does():
    model = tiny_model()
    params = parameters_of(model)
    ep = tiny_episodes(1)[0]
    cl = get_algorithm(_cfg(algo="maml", control="cl", cml=False))
    assert cl.cml and "co" in cl.inner_config().adapt
    fast = inner_loop(model, params, ep.support_x, ep.support_y, CE, cl.inner_config())[-1]
    assert all(not torch.equal(fast[k], params[k]) for k in params if group_of(k) == "co")
    cml = get_algorithm(_cfg(algo="maml", cml=True))
    fast = inner_loop(model, params, ep.support_x, ep.support_y, CE, cml.inner_config())[-1]
    assert all(fast[k] is params[k] for k in params if group_of(k) == "co")


def test_noise_control_adds_the_documented_amount():
    model = tiny_model(co_depth=None)
    params = parameters_of(model)
    eps = tiny_episodes(2)
    clean = get_algorithm(_cfg(algo="maml", cml=False)).meta_gradients(model, params, eps, CE, 0).grads
    noisy_algo = get_algorithm(_cfg(algo="maml", cml=False, control="noise", noise_std=0.5), seed=3)
    noisy = noisy_algo.meta_gradients(model, params, eps, CE, 0).grads
    ref_gen = torch.Generator().manual_seed(3 + 7919)
    expect = add_gradient_noise(clean, 0.5, ref_gen)
    for k in params:
        assert torch.allclose(noisy[k], expect[k]), k
        diff = noisy[k] - clean[k]
        sigma = 0.5 * clean[k].norm() / math.sqrt(clean[k].numel())
        assert diff.abs().max() > 0 and diff.abs().max() < 6 * sigma
    big = torch.ones(100_000, dtype=torch.float64)
    out = add_gradient_noise({"extractor.w": big}, 0.1, torch.Generator().manual_seed(0))["extractor.w"]
    assert (out - big).std().item() == pytest.approx(0.1, rel=0.02)


def test_protonet_logits_are_negative_squared_distances_to_class_means():
    model = tiny_model()
    params = parameters_of(model)
    ep = tiny_episodes(1)[0]
    algo = ProtoNet(_cfg(algo="protonet"))
    logits, co = algo.predict(model, params, ep, CE)
    with torch.no_grad():
        fs, fq = features(model, params, ep.support_x), features(model, params, ep.query_x)
        protos = torch.stack([fs[ep.support_y == c].mean(0) for c in range(3)])
        ref = -((fq[:, None, :] - protos[None]) ** 2).sum(-1)
    assert torch.allclose(logits, ref) and co is not None
    loss = algo.objective(model, params, [ep], CE, 0)
    assert torch.allclose(loss.meta, CE(ref, ep.query_y)) and loss.co > 0


def test_protonet_runs_a_meta_batch_at_once_as_it_runs_it_task_by_task():
    """Batched ProtoNet (one launch for the meta-batch; what --parallel-runs fuses) equals the per-task loop:
    losses, meta-gradients and the batched evaluation's logits."""
    from cmlgraph.core.episode import stack

    model = tiny_model()
    params = parameters_of(model)
    eps = tiny_episodes(3)
    algo = ProtoNet(_cfg(algo="protonet", gamma=0.6))
    loop = algo.meta_gradients(model, params, eps, CE, 0, batched=False)
    batch = algo.meta_gradients(model, params, eps, CE, 0, batched=True)
    for part in ("meta", "co", "total"):
        assert torch.allclose(getattr(batch.loss, part), getattr(loop.loss, part)), part
    assert loop.loss.co > 0
    for k in params:
        assert torch.allclose(batch.grads[k], loop.grads[k]), k
        assert loop.grads[k].abs().sum() > 0 or group_of(k) == "head", k  # ProtoNet never reads θ
    logits, co = algo.predict(model, params, stack(eps), CE, batched=True)
    for i, ep in enumerate(eps):
        one, one_co = algo.predict(model, params, ep, CE)
        assert torch.allclose(logits[i], one) and torch.allclose(co[i], one_co)


def test_sharp_maml_noise_control_perturbs_the_returned_meta_gradient_not_the_sam_point():
    """The noise control's noise is added to Sharp-MAML's meta-gradient (taken at the clean SAM point), as for
    every algorithm; it does not move the SAM point."""
    model = tiny_model(co_depth=None)
    params = parameters_of(model)
    eps = tiny_episodes(2)
    clean = SharpMAML(_cfg(algo="sharp-maml", cml=False, sam_rho=0.3)).meta_gradients(model, params, eps, CE, 0)
    noisy_algo = SharpMAML(_cfg(algo="sharp-maml", cml=False, sam_rho=0.3, control="noise", noise_std=0.5), seed=3)
    noisy = noisy_algo.meta_gradients(model, params, eps, CE, 0)
    expect = add_gradient_noise(clean.grads, 0.5, torch.Generator().manual_seed(3 + 7919))
    for k in params:
        assert torch.allclose(noisy.grads[k], expect[k]), k
        assert not torch.allclose(noisy.grads[k], clean.grads[k]), k
    assert torch.allclose(noisy.loss.total, clean.loss.total)


def test_unknown_algorithm_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="maml, anil"):
        get_algorithm(_cfg(algo="reptile"))
    assert {"maml", "anil", "boil", "maml++", "sharp-maml", "protonet"} <= set(ALGORITHMS)


def test_training_uses_the_public_outer_objective():
    """The trainer's meta-step is autograd of `outer_objective` (what the README names as the API)."""
    from cmlgraph.core.inner_loop import InnerLoopConfig
    from cmlgraph.core.objective import outer_objective

    model = tiny_model()
    params = parameters_of(model)
    eps = tiny_episodes(3)
    algo = get_algorithm(_cfg(algo="maml", gamma=0.4))
    step = algo.meta_gradients(model, params, eps, CE, 0)
    ref = outer_objective(model, params, eps, CE, InnerLoopConfig(steps=2, lr=0.3), gamma=0.4)
    assert torch.allclose(step.loss.total, ref.total)
    g = _grads(ref.total, params)
    assert all(torch.allclose(step.grads[k], g[k]) for k in params)


def test_diagnostics_split_gradients_sum_to_total():
    model = tiny_model()
    params = parameters_of(model)
    eps = tiny_episodes(2)
    algo = get_algorithm(_cfg(algo="maml", gamma=0.7))
    with_diag = algo.meta_gradients(model, params, eps, CE, 0, diagnostics=True)
    plain = algo.meta_gradients(model, params, eps, CE, 0)
    for k in params:
        assert torch.allclose(with_diag.grads[k], plain.grads[k])
    d = with_diag.diagnostics
    assert -1 <= d["cos_extractor"] <= 1 and d["norm_co_extractor"] > 0
    assert set(d["layers"]) == {"extractor.net.0", "extractor.net.2"}


def test_per_group_inner_step_sizes():
    algo = get_algorithm(_cfg(algo="maml", inner_steps=1, inner_lr_head=0.0001, inner_lr_extractor=0.7))
    inner = algo.inner_config()
    model = tiny_model()
    params = parameters_of(model)
    ep = tiny_episodes(1)[0]
    fast = inner_loop(model, params, ep.support_x, ep.support_y, CE, inner)[-1]
    f = features(model, params, ep.support_x)
    names = list(params)
    g = dict(zip(names, torch.autograd.grad(CE(head(model, params, f), ep.support_y), [params[k] for k in names],
                                            allow_unused=True), strict=True))
    for k in params:
        lr = {"extractor": 0.7, "head": 0.0001}.get(group_of(k))
        if lr is not None:
            assert torch.allclose(fast[k], params[k] - lr * g[k]), k
