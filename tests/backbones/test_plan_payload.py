"""k-hop plans packed into flat buffers for a build process (issue 18): unpacked, every tensor equals what
``plan_to`` gives from the original plan, and a payload holds nothing it cannot carry."""

from __future__ import annotations

import pickle

import pytest
import torch

from cmlgraph.backbones.gnn import host_plan, plan_features
from cmlgraph.backbones.gnn_plan import Plan, plan_to
from cmlgraph.backbones.plan_payload import pack_plans, unpack_plans
from cmlgraph.graphs import GraphInput, make_synthetic
from tests.conftest import assert_same_plan


@pytest.mark.parametrize(("kind", "complete", "sparse"), [("gcn", False, False), ("gcn", True, False),
                                                          ("sage", True, True), ("gin", False, True),
                                                          ("sgc", False, True)])
def test_unpacked_plans_equal_the_moved_originals(kind, complete, sparse):
    g = make_synthetic(num_nodes=300, num_classes=6, avg_degree=4, seed=1)
    x = g.x.to_sparse_csr() if sparse else g.x
    host = GraphInput(x, g.edge_index, torch.tensor([3, 7, 3, 250, 11]), {}, local=True)
    plans = [host_plan(GraphInput(x, g.edge_index, nodes, host.cache, local=True), kind, 2, complete, sparse)
             for nodes in (torch.tensor([3, 7, 3, 250, 11]), torch.tensor([0, 1, 2]))]
    buffers, specs = pickle.loads(pickle.dumps(pack_plans(plans)))  # what crosses the pipe
    assert len(buffers) <= 3  # one flat buffer per dtype (int64, int32, float32 at most)
    features = plan_features(host)
    for original, unpacked in zip(plans, unpack_plans(buffers, specs, features), strict=True):
        assert_same_plan(plan_to(original, features), unpacked)
    if sparse and kind != "sgc":
        assert any(k.startswith("host/") and k != "host/csr/1" for k in plans[0].memo)  # constants travelled too


def test_a_payload_refuses_what_it_cannot_carry():
    plan = Plan(sizes=[0, 1], mats=[None, None], x=torch.zeros(1, 1), out=None, memo={"prev_level": "oops"})
    with pytest.raises(TypeError, match="cannot hold str"):
        pack_plans([plan])
    plan.memo["prev_level"] = torch.zeros(2, 2).to_sparse_coo()
    with pytest.raises(TypeError, match="dense and CSR tensors"):
        pack_plans([plan])


def test_shared_blocks_carry_buffers_refuse_overuse_regrow_and_are_unlinked():
    from multiprocessing import shared_memory

    import numpy as np

    from cmlgraph.backbones.plan_payload import SharedBlocks, write_block

    blocks = SharedBlocks(2, size=1024)
    small = {"<i8": np.arange(10, dtype=np.int64), "<f4": np.linspace(0, 1, 7, dtype=np.float32)}
    first, second = blocks.acquire(), blocks.acquire()
    assert first[0] != second[0] and first[1] != second[1]
    with pytest.raises(RuntimeError, match="all 2 shared blocks are in use"):  # never one overwritten unread
        blocks.acquire()
    for block in (first, second):
        payload = write_block(block, small)
        assert "block" in payload
        got = blocks.read(block[0], payload)
        assert set(got) == set(small) and all(torch.equal(got[k], torch.from_numpy(v)) for k, v in small.items())
    big = {"<i8": np.arange(1000, dtype=np.int64)}  # 8 kB: does not fit 1 kB, so it comes through the pipe
    block = blocks.acquire()
    payload = write_block(block, big)
    assert "buffers" in payload and payload["bytes"] == 8000
    assert torch.equal(blocks.read(block[0], payload)["<i8"], torch.from_numpy(big["<i8"]))
    again = blocks.acquire()  # the same block, regrown: the next batch of that size fits
    assert again[0] == block[0] and again[2] >= 8000 and again[1] != block[1]
    assert "block" in write_block(again, big)
    with pytest.raises(RuntimeError, match="the item names"):
        blocks.read(again[0], {"block": "psm_other", "layout": []})
    names = [b.name for b in blocks._blocks]
    blocks.close()
    blocks.close()  # idempotent
    for name in names + [block[1]]:
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=name)
