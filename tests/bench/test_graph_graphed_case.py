"""The k-hop bench case through the CUDA-graph step (``graph/<key>/khop-graphed``, issue 18): listed with its ratios,
skipped on the CPU before any process starts, and its workload driven on the CPU through a stand-in capture."""

from __future__ import annotations

from cmlgraph.bench.cases import build_cases, build_ratios
from cmlgraph.bench.runner import RunSettings, run_one
from cmlgraph.bench.workloads import GRAPHED_WARMUP, graph_workload
from cmlgraph.graphs import make_synthetic


def test_the_graphed_k_hop_case_and_its_ratios_are_listed() -> None:
    cases = build_cases(True)
    base = "graph/synthetic-10k"
    case = next(c for c in cases if c.name == f"{base}/khop-graphed")
    assert case.options == {"mode": "khop", "cml": True, "graphed": True}
    ratios = {r.name for r in build_ratios(cases)}
    assert {f"{base}:khop-graphed/ref-a", f"{base}:khop-graphed/khop"} <= ratios


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
