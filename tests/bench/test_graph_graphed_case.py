"""The k-hop bench case through the CUDA-graph step (``graph/<key>/khop-graphed``, issue 18): listed with its ratios,
skipped on the CPU before any process starts, and its workload driven on the CPU through a stand-in capture; and
the trainer's pipeline case (``khop-prefetch``), which trains what the plain case trains."""

from __future__ import annotations

import threading

import pytest
import torch

from cmlgraph.bench.cases import build_cases, build_ratios
from cmlgraph.bench.runner import RunSettings, run_one
from cmlgraph.bench.workloads import GRAPHED_WARMUP, graph_workload
from cmlgraph.graphs import make_synthetic


@pytest.mark.parametrize("variant,option", [("khop-graphed", "graphed"), ("khop-prefetch", "prefetch")])
def test_the_k_hop_case_and_its_ratios_are_listed(variant: str, option: str) -> None:
    """The CUDA-graph case and the pipeline case (``khop-prefetch``), each with its timed ratios."""
    cases = build_cases(True)
    base = "graph/synthetic-10k"
    case = next(c for c in cases if c.name == f"{base}/{variant}")
    assert case.options == {"mode": "khop", "cml": True, option: True}
    ratios = {r.name for r in build_ratios(cases)}
    assert {f"{base}:{variant}/ref-a", f"{base}:{variant}/khop"} <= ratios
    # no ops ratio for either (a replay counts none of its kernels; the worker's ops are in another thread)
    assert not {r for r in ratios if r.endswith(" ops") and variant in r}


def test_the_graphed_k_hop_case_is_skipped_on_the_cpu_before_any_process_starts() -> None:
    case = next(c for c in build_cases(True) if c.name.endswith("/khop-graphed"))
    settings = RunSettings(device="cpu", budget_s=1.0, timeout_s=10.0, max_iters=1, threads=1, mem_cap_bytes=2**30,
                           data_root=None, start_method="spawn")
    record = run_one(None, case, settings, {}, {}, log=print)
    assert record["skipped"] and "CUDA graphs need a CUDA device" in record["reason"]


def test_the_graphed_workload_captures_during_warm_up_and_replays_when_timed(stand_in) -> None:
    """On the CPU through a stand-in capture (the real one needs CUDA): the warm-up captured at least once and
    the padded buffers grew to the batches' sizes; a timed step replays."""
    g = make_synthetic(num_nodes=800, num_classes=30, num_features=16, avg_degree=4.0, seed=0)
    work = graph_workload(g, "khop", "cpu", graphed=True)
    captures, replays = work.info["cuda_graph_captures"], work.info["cuda_graph_replays"]
    assert 1 <= captures <= 6 and replays >= GRAPHED_WARMUP - captures
    work.step()
    assert work.info["cuda_graph_replays"] >= replays + 1 or work.info["cuda_graph_captures"] == captures + 1


def _trained(work, steps: int) -> dict:
    for _ in range(steps):
        work.step()
    return {k: v.detach().clone() for k, v in work.exp.model.state_dict().items()}  # type: ignore[attr-defined]


def test_the_pipeline_trains_what_the_plain_k_hop_case_trains(monkeypatch) -> None:
    """The prefetch worker draws the same batches from a copy of the run's generator: 5 steps of the pipeline case
    leave the same weights as 5 of the plain case (CPU, eager), and the step's ops exclude the worker's host work."""
    import cmlgraph.bench.workloads as workloads
    from cmlgraph.bench.worker import count_ops

    exps = []
    original = workloads.build_experiment
    monkeypatch.setattr(workloads, "build_experiment", lambda *a, **k: exps.append(original(*a, **k)) or exps[-1])
    g = make_synthetic(num_nodes=800, num_classes=30, num_features=16, avg_degree=4.0, seed=0)
    plain = graph_workload(g, "khop", "cpu")
    plain.exp = exps[-1]  # type: ignore[attr-defined]
    piped = graph_workload(g, "khop", "cpu", prefetch=True)
    piped.exp = exps[-1]  # type: ignore[attr-defined]
    assert piped.info["prefetch"] and not piped.info["cuda_graphs"]
    try:
        a, b = _trained(plain, 5), _trained(piped, 5)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        counted = count_ops(piped, "cpu")
        assert counted["ops_per_iter"] < count_ops(plain, "cpu")["ops_per_iter"] and "step only" in counted["ops_note"]
    finally:
        piped.close()
    assert not any(t.name == "cmlgraph-bench" and t.is_alive() for t in threading.enumerate())


def test_the_pipeline_on_a_gpu_feeds_the_cuda_graph_step(stand_in) -> None:
    """As on CUDA (``graphed``, the GPU's choice, through the stand-in capture): the prefetch worker's batches go to
    the CUDA-graph step, which captured in the warm-up and replays when timed and counted."""
    from cmlgraph.bench.worker import count_ops

    g = make_synthetic(num_nodes=800, num_classes=30, num_features=16, avg_degree=4.0, seed=0)
    work = graph_workload(g, "khop", "cpu", graphed=True, prefetch=True)
    try:
        assert work.info["prefetch"] and work.info["cuda_graphs"]
        replays = work.info["cuda_graph_replays"]
        assert work.info["cuda_graph_captures"] >= 1 and replays >= 1
        counted = count_ops(work, "cpu")
        assert work.info["cuda_graph_replays"] + work.info["cuda_graph_captures"] > replays
        assert counted["ops_per_iter"] > 0
    finally:
        work.close()


def test_the_host_preparation_of_a_k_hop_batch_draws_from_its_own_stream(monkeypatch) -> None:
    """``Workload.prepare`` (timed by the bench as ``host_ms_per_iter``) prepares a whole meta-batch with its k-hop
    plans from a stream of its own: preparing batches between steps leaves what the case trains as it was, with and
    without the prefetch worker (weights after 2 steps equal those of a workload never asked to prepare)."""
    import cmlgraph.bench.workloads as workloads
    from cmlgraph.bench.worker import time_prepare

    exps = []
    original = workloads.build_experiment
    monkeypatch.setattr(workloads, "build_experiment", lambda *a, **k: exps.append(original(*a, **k)) or exps[-1])
    g = make_synthetic(num_nodes=800, num_classes=30, num_features=16, avg_degree=4.0, seed=0)
    for prefetch in (False, True):
        trained = []
        for prepare in (False, True):
            work = graph_workload(g, "khop", "cpu", prefetch=prefetch)
            work.exp = exps[-1]  # type: ignore[attr-defined]
            try:
                if prepare:
                    episodes = work.prepare()
                    assert len(episodes) == work.meta_batch
                    assert all("_plans" in ep.support_x.__dict__ for ep in episodes)  # plans built with the batch
                    out = time_prepare(work, 0.1, lambda: None)
                    assert out["host_ms_per_iter"] > 0 and out["host_iters"] >= 3
                work.step()
                if prepare:
                    work.prepare()
                trained.append(_trained(work, 1))
            finally:
                if work.close is not None:
                    work.close()
        assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0]), prefetch
