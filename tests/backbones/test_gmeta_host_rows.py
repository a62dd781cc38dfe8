"""G-Meta's union rows of sparse features are sliced from the host's copy (issue 18: no device sync in the layout):
a selection of sparse rows on the device reads its entry count back."""

from __future__ import annotations

import torch

from cmlgraph.backbones import gmeta
from cmlgraph.backbones.gmeta import ball_layout
from cmlgraph.core.transfer import to_device
from cmlgraph.graphs.balls import BallIndex, BallInput
from tests.backbones.test_gmeta_task_blocks import _components


def test_sparse_union_rows_come_from_the_host_copy_and_equal_the_device_features(monkeypatch):
    """A ball index whose features sit on a GPU keeps their host copy; the layout slices the union's rows there
    and copies them over. Here the "device" features are a second CSR tensor (no GPU): the slice must read the host
    copy, and the rows must equal the features' rows."""
    monkeypatch.setattr(gmeta, "task_blocks_win", lambda *args: False)
    host = _components(features="sparse")
    device = BallIndex(host.x.clone(), torch.zeros(2, 0, dtype=torch.long), host_x=host.x)
    device.crow, device.col, device.val, device.dinv = host.crow, host.col, host.val, host.dinv
    device._symmetric = host.symmetric
    sliced: list[torch.Tensor] = []
    real = gmeta.slice_rows
    monkeypatch.setattr(gmeta, "slice_rows", lambda x, rows: (sliced.append(x), real(x, rows))[1])
    items = [BallInput(device, torch.tensor([0, 3, 21, 22]))]
    lay = ball_layout(items, {})
    assert sliced and all(x is device.host_x for x in sliced)  # never the device's features
    union = torch.unique(host.expand(torch.tensor([0, 3, 21, 22]))[1])
    torch.testing.assert_close(lay["XU"].to_dense(), host.x.to_dense().index_select(0, union))


def test_a_coalesced_sparse_matrix_arrives_said_coalesced():
    """On another device the rows are rebuilt from their indices and values, marked coalesced (so the device never
    coalesces them again, which reads the entry count back); on their own device they are the rows themselves."""
    coo = torch.sparse_coo_tensor(torch.tensor([[0, 1], [2, 0]]), torch.tensor([1.0, 2.0]), (2, 3)).coalesce()
    assert to_device(coo, torch.device("cpu")) is coo
    moved = to_device(coo, torch.device("meta"))
    assert moved.device.type == "meta" and moved.is_coalesced() and moved.shape == coo.shape
