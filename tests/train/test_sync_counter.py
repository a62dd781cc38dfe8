"""SyncCounter counts the ops that sync on CUDA (on CPU tensors) and not the ones that do not."""

from __future__ import annotations

import torch

from cmlgraph.train.sync_counter import SyncCounter


def test_counts_syncing_ops() -> None:
    x = torch.randn(8)
    with SyncCounter() as c:
        x.sum().item()
        float(x.max())
        x.nonzero()
        x[x > 0]
        torch.masked_select(x, x > 0)
        torch.unique(x)
        torch.repeat_interleave(torch.tensor([1, 2]))
    assert c.counts["aten._local_scalar_dense"] == 2
    assert c.counts["aten.nonzero"] >= 1
    assert c.counts["aten.masked_select"] == 1
    assert c.counts["aten.index(bool mask)"] + c.counts["aten.nonzero"] >= 2
    assert c.counts["aten.repeat_interleave"] == 1
    assert c.total >= 7


def test_ignores_async_ops() -> None:
    x = torch.randn(8, requires_grad=True)
    with SyncCounter() as c:
        y = (x * 2).relu().sum()
        y.backward()
        torch.repeat_interleave(x.detach(), torch.tensor([1] * 8), output_size=8)
        x.detach()[torch.tensor([0, 3])]
        torch.where(x > 0, x, 0.0)
    assert c.total == 0, c.counts


def test_finite_flag_stays_on_the_device() -> None:
    from cmlgraph.train.trainer import _finite_flag

    grads = {f"w{i}": torch.randn(3, 3) for i in range(6)}
    with SyncCounter() as c:
        ok = _finite_flag(grads, torch.tensor(0.5))
    assert c.total == 0, c.counts
    assert ok.shape == () and ok.dtype == torch.bool and bool(ok)
    grads["w3"][1, 1] = float("nan")
    assert not bool(_finite_flag(grads, torch.tensor(0.5)))
    assert not bool(_finite_flag({"w": torch.ones(2)}, torch.tensor(float("inf"))))


def test_counts_a_boolean_mask_assignment() -> None:
    """``x[mask] = v`` finds the mask's entries (``nonzero``) before it writes: a sync on CUDA like ``x[mask]``."""
    x, mask = torch.randn(4, 3), torch.tensor([True, False, True, False])
    with SyncCounter() as c:
        x[~mask] = float("nan")
        x.index_put_((mask,), torch.tensor(1.0))
        x[torch.tensor([0, 2])] = 0.0  # integer ids: no sync
    assert c.counts == {"aten.index_put(bool mask)": 2}, c.counts
