"""Conv4's normalisation choices: which make a query's prediction depend on the other queries, and which do not.

``batch`` (MAML's and the paper's) is transductive: the test below documents that a query's features change with
the other queries. ``instance``, ``group`` and ``support`` (the support set's statistics, TaskNorm's MetaBN) are not:
predicting one query at a time equals predicting the whole query set, through the inner loop too.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from cmlgraph.algorithms.registry import get_algorithm
from cmlgraph.backbones.conv4 import Conv4Backbone
from cmlgraph.backbones.conv_norm import NORMS, TRANSDUCTIVE, QueriesWithSupport
from cmlgraph.config import AlgoConfig
from cmlgraph.core.episode import Episode, stack
from cmlgraph.core.functional import call
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.errors import ConfigError
from cmlgraph.train.transduction import predictions_in_batch_and_alone

NON_TRANSDUCTIVE = [n for n in NORMS if not TRANSDUCTIVE[n]]
SIZE = 16


def _net(norm: str, seed: int = 0) -> Conv4Backbone:
    torch.manual_seed(seed)
    net = Conv4Backbone(in_channels=1, channels=4, image_size=SIZE, norm=norm).double()
    with torch.no_grad():  # non-trivial affine parameters, so a wrong statistic cannot hide behind identity
        for name, p in net.named_parameters():
            if name.endswith("1.weight") or name.endswith("1.bias"):
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.uniform_(-0.5, 0.5)
    return net


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, SIZE, SIZE, generator=g, dtype=torch.float64)


def _queries(norm: str, query: torch.Tensor, support: torch.Tensor):
    return QueriesWithSupport(query, support) if norm == "support" else query


def _episode(norm: str, seed: int = 1) -> Episode:
    support, query = _images(6, seed), _images(9, seed + 100)
    return Episode(support, torch.arange(3).repeat(2), _queries(norm, query, support), torch.arange(3).repeat(3))


def test_every_norm_keeps_the_reference_names_and_holds_no_state() -> None:
    names = [n for n, _ in _net("batch").named_parameters()]
    for norm in NORMS:
        net = _net(norm)
        assert [n for n, _ in net.named_parameters()] == names, norm
        assert list(net.buffers()) == [] and list(net.make_co_learner(3, 2).buffers()) == [], norm
        assert net.transductive is TRANSDUCTIVE[norm]


@pytest.mark.parametrize("norm", NON_TRANSDUCTIVE)
def test_non_transductive_features_of_a_query_do_not_depend_on_the_other_queries(norm: str) -> None:
    net, support, query = _net(norm), _images(6, 1), _images(9, 2)
    together = net(_queries(norm, query, support))
    alone = torch.cat([net(_queries(norm, query[i:i + 1], support)) for i in range(9)])
    torch.testing.assert_close(alone, together)
    other = torch.cat([query[:1], _images(8, 3)])  # the first query among other queries
    torch.testing.assert_close(net(_queries(norm, other, support))[:1], together[:1])


def test_batch_norm_is_transductive() -> None:
    """Documents the paper's (MAML's) behaviour: the same query gets other features among other queries."""
    net, query = _net("batch"), _images(9, 2)
    together = net(query)
    other = torch.cat([query[:1], _images(8, 3)])
    assert not torch.allclose(net(other)[:1], together[:1], atol=1e-3)
    assert not torch.allclose(net(query[:1]), together[:1], atol=1e-3)


@pytest.mark.parametrize("norm", NORMS)
def test_predict_one_query_at_a_time_through_the_inner_loop(norm: str) -> None:
    """MAML adapts on the support set, then predicts: alone == in batch exactly when the norm is not transductive."""
    algo = get_algorithm(AlgoConfig(algo="maml", cml=False, inner_steps=2, inner_lr=0.1), total_steps=10, seed=0)
    model = MetaModel(_net(norm), 3).double()
    algo.prepare(model)
    ep = _episode(norm)
    together, alone = predictions_in_batch_and_alone(algo, model, parameters_of(model), ep, torch.nn.functional
                                                     .cross_entropy)
    if TRANSDUCTIVE[norm]:
        assert (together - alone).abs().max() > 1e-3
    else:
        torch.testing.assert_close(alone, together)


def test_support_norm_takes_its_statistics_from_the_support_set_only() -> None:
    net, support, query = _net("support"), _images(6, 1), _images(9, 2)
    feats = net(QueriesWithSupport(query, support))
    # Another support set changes the queries' features: the statistics come from it.
    assert not torch.allclose(net(QueriesWithSupport(query, _images(6, 5))), feats, atol=1e-3)
    # Hand-unrolled first block: the queries normalised with the mean and biased variance of the support's maps.
    conv, bn = net.conv1[0], net.conv1[1]
    s, q = conv(support), conv(query)
    mean, var = s.mean(dim=(0, 2, 3), keepdim=True), s.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    expected = (q - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    got_s, got_q = bn.forward_pair(s, q)
    torch.testing.assert_close(got_q, expected)
    torch.testing.assert_close(got_s, bn(s))  # the support set itself: ordinary batch statistics
    # Were the queries the support set, they would get exactly the batch-norm features of the support set.
    torch.testing.assert_close(net(QueriesWithSupport(support, support)), net(support))


def test_support_norm_is_exact_under_functional_call_and_vmap() -> None:
    net = _net("support")
    params = {k: v.detach() + 0.01 * torch.randn_like(v) for k, v in net.named_parameters()}
    x = QueriesWithSupport(_images(9, 2), _images(6, 1))
    moved = _net("support")
    moved.load_state_dict(params)
    torch.testing.assert_close(functional_call(net, params, (x,)), moved(x))
    tasks = [QueriesWithSupport(_images(9, s), _images(6, s + 50)) for s in range(3)]
    batched = call(net, {k: v.unsqueeze(0).expand(3, *v.shape) for k, v in params.items()},
                   stack([Episode(t.support, torch.zeros(6), t, torch.zeros(9)) for t in tasks]).query_x, True)
    torch.testing.assert_close(batched, torch.stack([functional_call(net, params, (t,)) for t in tasks]))


def test_bad_norms_are_refused() -> None:
    with pytest.raises(ConfigError, match="model.norm = 'layer' is not a normalisation of Conv4; valid: batch"):
        Conv4Backbone(norm="layer")
    with pytest.raises(ConfigError, match="build it with norm='support'"):
        _net("batch")(QueriesWithSupport(_images(2, 1), _images(2, 2)))
