"""Training in k-hop mode runs the meta-batch through the GNN's batched path and ends where the task loop ends."""

from __future__ import annotations

import torch

import cmlgraph
from cmlgraph.backbones.gnn import GNNBackbone
from cmlgraph.graphs import make_synthetic


def _train(tmp_path, batched: str, calls: list[int], monkeypatch) -> dict[str, torch.Tensor]:
    original = GNNBackbone.forward_tasks

    def counting(self, params, batch):
        calls.append(len(batch))
        return original(self, params, batch)

    monkeypatch.setattr(GNNBackbone, "forward_tasks", counting)
    graph = make_synthetic(num_nodes=600, num_classes=12, seed=0, split="6/3/3")
    run_dir, summary = cmlgraph.fit(graph, ways=3, shots=2, queries=3, gnn="gcn", subgraph="khop", steps=4,
                                    meta_batch=3, val_every=2, val_tasks=4, test_tasks=6, batched=batched,
                                    seed=0, runs_dir=str(tmp_path), name=f"khop-{batched}")
    assert summary["num_tasks"] == 6
    return torch.load(run_dir / "model.pt", weights_only=True)


def test_khop_training_batched_equals_task_loop(tmp_path, monkeypatch):
    batched_calls: list[int] = []
    loop_calls: list[int] = []
    a = _train(tmp_path, "on", batched_calls, monkeypatch)
    b = _train(tmp_path, "off", loop_calls, monkeypatch)
    assert 3 in batched_calls  # training steps ran the meta-batch of 3 tasks together
    assert 3 not in loop_calls  # batched: off never stacks training tasks (evaluation may)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
