"""AMM-GNN's encoder (TLP variant): modulation and regulariser by hand; α/β frozen inside a task, trained outside."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cmlgraph.algorithms.tlp import AMMGNN
from cmlgraph.backbones.ammgnn import MatchedGCN, MatchedInput, match_regulariser, match_regulariser_tasks
from cmlgraph.config import AlgoConfig
from cmlgraph.core.episode import Episode
from cmlgraph.core.inner_loop import inner_loop
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.graphs.types import GraphInput

EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (0, 3), (6, 7), (8, 9), (9, 10), (10, 11)]
N = 13  # node 12 isolated


def _graph(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    e = torch.tensor(EDGES).t()
    return torch.rand(N, 6), torch.cat([e, e.flip(0)], 1)


def _input(x, ei, nodes, match, dropout=False) -> MatchedInput:
    return MatchedInput(GraphInput(x, ei, torch.tensor(nodes), {}, local=True), torch.tensor(match), dropout)


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_modulation_and_regulariser_equal_hand_computation():
    x, ei = _graph()
    enc = MatchedGCN(6, hidden=4, dropout=0.5, match_size=3).eval()
    match = [[0, 4, 9], [12, 2, 7]]
    nodes = [0, 3, 12, 8]
    out = enc(_input(x, ei, nodes, match)).detach().numpy()
    w = {k: v.detach().numpy() for k, v in enc.named_parameters()}
    xn = x.numpy()
    alpha = [xn[m].T @ w["match_alpha.weight"][0] + w["match_alpha.bias"][0] for m in match]  # [F] each
    beta = [xn[m].T @ w["match_beta.weight"][0] + w["match_beta.bias"][0] for m in match]
    xm = xn * (1 + 0.01 * (alpha[0] + alpha[1]) / 2)
    a = np.eye(N)
    for i, j in EDGES:
        a[i, j] = a[j, i] = 1
    a_hat = a / a.sum(1, keepdims=True)  # D⁻¹(A + I)
    h = np.maximum(a_hat @ (xm @ w["lin1.weight"].T) + w["lin1.bias"], 0)
    h = a_hat @ (h @ w["lin2.weight"].T) + w["lin2.bias"]
    np.testing.assert_allclose(out, h[nodes], rtol=1e-5, atol=1e-6)
    params = {k: v for k, v in enc.named_parameters()}
    reg = float(match_regulariser(params, _input(x, ei, nodes, match)))
    want = -0.01 * (_cos(alpha[0], alpha[1]) + _cos(beta[0], beta[1]))
    assert abs(reg - want) < 1e-6


def test_the_meta_batchs_regularisers_in_one_pass_equal_each_tasks_with_their_gradients():
    """(issue 18 item 3) The regulariser of a meta-batch runs as one stacked pass; its values and α/β gradients
    equal each task's own, and AMM-GNN's outer term is their mean."""
    x, ei = _graph(2)
    enc = MatchedGCN(6, hidden=4, dropout=0.5, match_size=3)
    params = {k: v for k, v in enc.named_parameters()}
    inputs = [_input(x, ei, [0, 1], [[0, 4, 9], [12, 2, 7]]), _input(x, ei, [5, 8], [[1, 1, 3], [6, 10, 11]]),
              _input(x, ei, [2, 12], [[12, 12, 0], [5, 4, 3]])]
    together = match_regulariser_tasks(params, inputs)
    alone = torch.stack([match_regulariser(params, it) for it in inputs])
    assert together.shape == (3,)
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-9)
    keys = [k for k in params if k.startswith("match_")]
    g_together = torch.autograd.grad(together.sum(), [params[k] for k in keys])
    g_alone = torch.autograd.grad(sum(match_regulariser(params, it) for it in inputs), [params[k] for k in keys])
    for a, b in zip(g_together, g_alone, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    eps = [Episode(None, None, it, None) for it in inputs]
    algo = AMMGNN(AlgoConfig(algo="ammgnn"))
    reg = algo.regulariser({f"extractor.{k}": v for k, v in params.items()}, eps)
    torch.testing.assert_close(reg, alone.mean())


def test_batched_tasks_equal_one_by_one():
    x, ei = _graph(1)
    enc = MatchedGCN(6, hidden=4, dropout=0.0, match_size=3)
    inputs = [_input(x, ei, [0, 5, 9], [[1, 2, 3], [4, 5, 6]]), _input(x, ei, [12, 11, 3], [[7, 8, 9], [0, 1, 12]])]
    params = {k: torch.stack([v, v + 0.01 * i]) for i, (k, v) in enumerate(enc.named_parameters())}
    batched = enc.forward_tasks(params, MatchedInput.stack_tasks(inputs))
    for t, inp in enumerate(inputs):
        one = torch.func.functional_call(enc, {k: v[t] for k, v in params.items()}, (inp,))
        torch.testing.assert_close(batched[t], one, rtol=1e-5, atol=1e-6)


def test_alpha_beta_get_no_inner_update_and_a_nonzero_outer_gradient():
    x, ei = _graph(2)
    torch.manual_seed(0)
    model = MetaModel(MatchedGCN(6, hidden=4, dropout=0.0, match_size=3), 2, co_depth=1)
    match = [[0, 2, 9], [3, 8, 10]]
    ep = Episode(_input(x, ei, [0, 9], match, True), torch.tensor([0, 1]),
                 _input(x, ei, [2, 3, 8, 10], match), torch.tensor([0, 0, 1, 1]))
    algo = AMMGNN(AlgoConfig(algo="ammgnn", gamma=0.2, inner_steps=3, inner_lr=0.1, first_order=True))
    params = parameters_of(model)
    fast = inner_loop(model, params, ep.support_x, ep.support_y, F.cross_entropy, algo.inner_config())[-1]
    frozen = [k for k in params if ".match_" in k]
    assert len(frozen) == 4
    for k in frozen:
        assert fast[k] is params[k]  # not stepped
    assert not torch.equal(fast["extractor.lin1.weight"], params["extractor.lin1.weight"])
    step = algo.meta_gradients(model, params, [ep], F.cross_entropy, 0)
    for k in frozen:
        assert step.grads[k].abs().sum() > 0, k
    # The β gradient comes from the regulariser only: without it, it would be zero.
    algo.regulariser = lambda params, episodes: None  # MAML's (CML) objective alone
    base = algo.objective(model, params, [ep], F.cross_entropy, 0)
    g = torch.autograd.grad(base.total, [params["extractor.match_beta.weight"]], allow_unused=True)[0]
    assert g is None or g.abs().sum() == 0
