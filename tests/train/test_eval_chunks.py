"""Evaluation chunks bounded by their episodes' own memory (``cmlgraph/train/eval_chunks.py``): GAT's k-hop
subgraphs carry their own features (on Amazon-Computers 500 tasks held 14.7 GB), so a chunk also ends where its
episodes' own tensors fill the input budget; the graph both episodes share is not counted; scores are unchanged."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.core.model import parameters_of
from cmlgraph.train.eval_chunks import EpisodeChunks, input_budget, storage_bytes
from cmlgraph.train.evaluate import evaluate, evaluate_runs
from tests.train.test_evaluate_runs import _runs


def _drain(chunks: EpisodeChunks) -> list[list]:
    out = []
    while True:
        try:
            out.append(chunks()[0])
        except StopIteration:
            return out


def test_a_chunk_ends_at_its_count_or_its_episodes_own_bytes_the_shared_graph_not_counted():
    graph = torch.zeros(100_000)  # 400 kB that every episode references: never counted
    made: list[int] = []

    def materialize(i: int) -> dict:
        made.append(i)
        return {"graph": graph, "own": torch.zeros(1000), "nodes": torch.arange(3)}  # 4,000 + 24 B of its own

    by_bytes = EpisodeChunks(range(8), 5, materialize, budget=10_000)
    assert _drain(by_bytes) == [[0, 1, 2], [3, 4, 5], [6, 7]]  # 3 tasks reach 12 kB ≥ 10 kB
    assert by_bytes.sizes == [3, 3, 2] and made == list(range(8))  # each item materialised once, in order
    by_count = EpisodeChunks(range(8), 5, materialize, budget=10**9)
    assert _drain(by_count) == [[0, 1, 2, 3, 4], [5, 6, 7]]
    tiny = EpisodeChunks(range(3), 5, materialize, budget=1)  # every task over the budget: one a chunk (the
    assert [len(c) for c in _drain(tiny)] == [2, 1]  # first's own bytes are known with the second's)
    with pytest.raises(StopIteration):
        tiny()


def test_storage_bytes_counts_sparse_parts_attached_tensors_and_each_storage_once():
    base = torch.zeros(10, 10)
    csr = torch.sparse_csr_tensor(torch.arange(5), torch.arange(4), torch.ones(4), (4, 4))
    csr.extra = torch.zeros(7)  # an attribute tensor (e.g. a cached transpose)
    found = storage_bytes({"a": base, "view": base[2:5], "csr": csr, "list": [base.t()]})
    assert sorted(found.values()) == sorted([400, 5 * 8, 4 * 8, 4 * 4, 7 * 4])  # views share their storage


def test_gat_k_hop_chunks_shrink_to_the_input_budget_with_the_same_scores(monkeypatch):
    import cmlgraph.train.evaluate as ev

    exps, raws = _runs(subgraph="khop", gnn="gat", gat_heads=2, hidden=8)
    e = exps[0]
    params = [parameters_of(x.model) for x in exps]
    whole = evaluate(e.algo, e.model, params[0], e.domain, raws[0], "cpu")
    fused = evaluate_runs(e.algo, e.model, [(p, x.domain, r) for p, x, r in zip(params, exps, raws, strict=True)],
                          "cpu")
    made: list[EpisodeChunks] = []

    class Spy(EpisodeChunks):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    own = sum(storage_bytes(e.domain.materialize(raws[0][0], "cpu")).values())  # at least its own bytes
    monkeypatch.setattr(ev, "EpisodeChunks", Spy)
    monkeypatch.setattr(ev, "input_budget", lambda device: 1)  # every chunk closes as soon as it can
    split = evaluate(e.algo, e.model, params[0], e.domain, raws[0], "cpu")
    assert made[-1].sizes == [2, 1, 1, 1, 1, 1]  # 7 tasks (the first chunk learns what is shared from its second)
    split_fused = evaluate_runs(e.algo, e.model, [(p, x.domain, r) for p, x, r in zip(params, exps, raws,
                                                                                       strict=True)], "cpu")
    assert len(made[-1].sizes) == 13 and sum(made[-1].sizes) == 14
    torch.testing.assert_close(torch.tensor(split["scores"]), torch.tensor(whole["scores"]), rtol=1e-5, atol=1e-6)
    for a, b in zip(split_fused, fused, strict=True):
        torch.testing.assert_close(torch.tensor(a["scores"]), torch.tensor(b["scores"]), rtol=1e-5, atol=1e-6)
    assert own > 0 and input_budget("cpu") == 8 * 2**30 // 24


@pytest.mark.parametrize("settings", [dict(subgraph="full"), dict(algo="gmeta")])
def test_caches_the_tasks_share_are_never_charged_to_a_task_even_as_they_grow(monkeypatch, settings):
    # full mode: the first forward builds the whole graph's adjacency and SGC's propagated features in a cache every
    # task's input references; G-Meta: the ball index caches each new centre's ball. Counted by storage alone, they
    # were charged to every task after the first two (a first evaluation split [2, 1, 1, ...] where a second one,
    # caches built, did not)
    import cmlgraph.train.evaluate as ev

    exps, raws = _runs(seeds=(0,), **settings)
    e = exps[0]
    params = parameters_of(e.model)
    made: list[EpisodeChunks] = []

    class Spy(EpisodeChunks):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(ev, "EpisodeChunks", Spy)
    # far above 3 tasks' own bytes, below what the first forward adds to the shared caches (229 kB, 46 kB here)
    monkeypatch.setattr(ev, "input_budget", lambda device: 16 * 2**10)
    first = evaluate(e.algo, e.model, params, e.domain, raws[0], "cpu", batch_size=3)
    again = evaluate(e.algo, e.model, params, e.domain, raws[0], "cpu", batch_size=3)
    assert made[0].sizes == made[1].sizes == [3, 3, 1], (made[0].sizes, made[1].sizes)
    assert first["scores"] == again["scores"]
