"""Conv4: shapes at 28 and 84 px, batch-statistics BatchNorm, functional_call, and second-order gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from cmlgraph.backbones.conv4 import Conv4Backbone
from cmlgraph.errors import ConfigError


@pytest.mark.parametrize(
    ("size", "side", "feature_dim"),
    [(28, 3, 64), (84, 10, 64 * 5 * 5)],
)
def test_shapes(size: int, side: int, feature_dim: int) -> None:
    torch.manual_seed(0)
    net = Conv4Backbone(in_channels=1, channels=64, image_size=size)
    x = torch.randn(6, 1, size, size)
    feats = net(x)
    assert feats.shape == (6, 64, side, side)
    assert net.feature_shape == (64, side, side)
    assert net.feature_dim == feature_dim
    assert net.make_head(5)(feats).shape == (6, 5)
    for depth in (0, 1, 2, 3):
        co = net.make_co_learner(5, depth)
        assert co(feats).shape == (6, 5), depth
    assert net.make_co_learner(5, 2).fixed_cls.in_features == feature_dim


def test_rgb_input() -> None:
    net = Conv4Backbone(in_channels=3, channels=8, image_size=84)
    assert net(torch.randn(2, 3, 84, 84)).shape == (2, 8, 10, 10)


def test_parameter_names_follow_the_reference_code() -> None:
    net = Conv4Backbone(channels=4)
    block = ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert [n for n, _ in net.named_parameters()] == [f"conv{i}.{p}" for i in range(1, 5) for p in block]
    assert [n for n, _ in net.make_head(5).named_parameters()] == ["meta_learner.weight", "meta_learner.bias"]
    cls = ["fixed_cls.weight", "fixed_cls.bias"]
    co = [n for n, _ in net.make_co_learner(5, 2).named_parameters()]
    assert co == [f"fixed_conv{i}.{p}" for i in (1, 2) for p in block] + cls
    assert [n for n, _ in net.make_co_learner(5, 0).named_parameters()] == cls


def test_batchnorm_uses_batch_statistics() -> None:
    torch.manual_seed(0)
    net = Conv4Backbone(channels=8)
    co = net.make_co_learner(5, 2)
    assert list(net.buffers()) == [] and list(co.buffers()) == []
    x = torch.randn(5, 1, 28, 28)
    train_out = net(x)
    net.eval()
    torch.testing.assert_close(net(x), train_out)
    # Per-channel statistics of the first block's BN output follow the batch: mean 0 (affine is identity).
    bn_out = net.conv1[1](net.conv1[0](x))
    torch.testing.assert_close(bn_out.mean(dim=(0, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)


def test_functional_call_equals_loading_the_state() -> None:
    torch.manual_seed(0)
    source, target = Conv4Backbone(channels=8), Conv4Backbone(channels=8)
    params = {n: p.detach().clone() for n, p in source.named_parameters()}
    x = torch.randn(4, 1, 28, 28)
    out = functional_call(target, params, (x,))
    target.load_state_dict(params)
    torch.testing.assert_close(out, target(x))
    torch.testing.assert_close(out, source(x))


def test_second_order_gradient_reaches_every_conv_weight() -> None:
    torch.manual_seed(0)
    net = Conv4Backbone(channels=8)
    head = net.make_head(3)
    params = {f"b.{n}": p for n, p in net.named_parameters()}
    params |= {f"h.{n}": p for n, p in head.named_parameters()}

    def logits(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        sub = {k[2:]: v for k, v in p.items() if k.startswith("b.")}
        feats = functional_call(net, sub, (x,))
        return functional_call(head, {k[2:]: v for k, v in p.items() if k.startswith("h.")}, (feats,))

    xs, ys = torch.randn(6, 1, 28, 28), torch.arange(3).repeat(2)
    xq, yq = torch.randn(9, 1, 28, 28), torch.arange(3).repeat(3)

    def outer_grads(second_order: bool) -> dict[str, torch.Tensor]:
        inner = F.cross_entropy(logits(params, xs), ys)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=second_order)
        adapted = {n: p - 0.4 * g for (n, p), g in zip(params.items(), grads, strict=True)}
        outer = F.cross_entropy(logits(adapted, xq), yq)
        return dict(zip(params, torch.autograd.grad(outer, list(params.values())), strict=True))

    second, first = outer_grads(True), outer_grads(False)
    for i in range(1, 5):
        name = f"b.conv{i}.0.weight"
        assert torch.isfinite(second[name]).all() and second[name].abs().sum() > 0, name
        assert not torch.allclose(second[name], first[name]), f"no second-order term in {name}"
    assert all(p.grad is None for p in params.values()), "adaptation must not touch .grad"


def test_bad_settings_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="image_size=8"):
        Conv4Backbone(image_size=8)
    net = Conv4Backbone(channels=4)
    with pytest.raises(ConfigError, match=r"\[n, 1, 28, 28\].*got \[2, 1, 84, 84\]"):
        net(torch.randn(2, 1, 84, 84))
    with pytest.raises(ConfigError, match="depth must be >= 0, got -1"):
        net.make_co_learner(5, -1)


def test_vmap_over_tasks_with_per_task_params_matches_a_loop() -> None:
    """The core batches a meta-batch with ``vmap`` over params and inputs; BN must stay per task."""
    torch.manual_seed(0)
    net = Conv4Backbone(channels=4)
    co = net.make_co_learner(5, 2)
    tasks = 3
    pn = {n: p.detach() + 0.01 * torch.randn(tasks, *p.shape) for n, p in net.named_parameters()}
    pc = {n: p.detach().expand(tasks, *p.shape) for n, p in co.named_parameters()}
    x = torch.randn(tasks, 7, 1, 28, 28)

    def one(p: dict[str, torch.Tensor], q: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(co, q, (functional_call(net, p, (xi,)),))

    batched = torch.func.vmap(one, in_dims=(0, 0, 0), randomness="different")(pn, pc, x)
    looped = torch.stack(
        [one({k: v[i] for k, v in pn.items()}, {k: v[i] for k, v in pc.items()}, x[i]) for i in range(tasks)]
    )
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)


def test_auto_batching_runs_conv4_task_by_task_on_cpu_only():
    from cmlgraph.backbones.base import auto_batched
    from cmlgraph.backbones.mlp import MLPBackbone

    net = Conv4Backbone(in_channels=1, channels=4, image_size=28)
    assert auto_batched(net, "cpu") is False and auto_batched(net, "cuda") is None
    assert auto_batched(MLPBackbone(), "cpu") is None


@pytest.mark.parametrize("first_order", [False, True])
def test_batched_outer_objective_and_meta_gradients_equal_the_loop(first_order):
    from cmlgraph.core.episode import Episode
    from cmlgraph.core.inner_loop import InnerLoopConfig
    from cmlgraph.core.model import MetaModel, parameters_of
    from cmlgraph.core.objective import outer_objective

    torch.manual_seed(0)
    model = MetaModel(Conv4Backbone(in_channels=1, channels=4, image_size=16), 3, co_depth=2).double()
    params = parameters_of(model)
    g = torch.Generator().manual_seed(1)
    eps = [Episode(torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64), torch.arange(3),
                   torch.randn(6, 1, 16, 16, generator=g, dtype=torch.float64), torch.arange(3).repeat(2))
           for _ in range(3)]
    inner = InnerLoopConfig(steps=2, lr=0.1, first_order=first_order)
    a = outer_objective(model, params, eps, F.cross_entropy, inner, batched=True)
    b = outer_objective(model, params, eps, F.cross_entropy, inner, batched=False)
    torch.testing.assert_close(a.total, b.total)
    names = list(params)
    ga = torch.autograd.grad(a.total, [params[k] for k in names])
    gb = torch.autograd.grad(b.total, [params[k] for k in names])
    for k, u, v in zip(names, ga, gb, strict=True):
        torch.testing.assert_close(u, v, atol=1e-9, rtol=1e-7, msg=k)
