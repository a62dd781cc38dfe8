"""The G-Meta bench cases: cmlgraph with and without the binary-feature tables, against the per-node references."""

from __future__ import annotations

import dataclasses

from cmlgraph.bench.cases import build_cases, build_ratios
from cmlgraph.bench.gmeta_workload import gmeta_workload
from cmlgraph.graphs import make_synthetic


def test_gmeta_cases_time_cmlgraph_with_and_without_tables_and_both_references() -> None:
    cases = build_cases(False, domains=["gmeta"])
    names = [c.name for c in cases]
    base = "gmeta/amazon-computers"
    assert names == [f"{base}/batched", f"{base}/batched-float", f"{base}/batched-graphed", f"{base}/per-node",
                     f"{base}/per-node-sparse"]
    ratios = {r.name: r for r in build_ratios(cases)}
    assert ratios[f"{base}:batched/per-node"].target == 20.0
    assert {f"{base}:batched-float/per-node", f"{base}:batched/batched-float", f"{base}:batched-graphed/per-node",
            f"{base}:batched-graphed/batched"} <= ratios.keys()


def test_the_cuda_graph_case_is_skipped_on_the_cpu_before_any_process_starts(tmp_path) -> None:
    from cmlgraph.bench.runner import RunSettings, run_one

    case = next(c for c in build_cases(False, domains=["gmeta"]) if c.name.endswith("/batched-graphed"))
    settings = RunSettings(device="cpu", budget_s=1.0, timeout_s=10.0, max_iters=1, threads=1, mem_cap_bytes=2**30,
                           data_root=None, start_method="spawn")
    record = run_one(None, case, settings, {}, {}, log=print)
    assert record["skipped"] and "CUDA graphs need a CUDA device" in record["reason"]


def test_the_float_case_is_skipped_on_a_gpu_where_it_is_the_batched_case_again(tmp_path) -> None:
    """The binary-feature tables are a CPU path: on a GPU `batched-float` would time `batched`'s code again (a
    ratio of 1 by construction) out of a GPU check's minutes; skipped before any process starts there."""
    from cmlgraph.bench.runner import RunSettings, run_one

    case = next(c for c in build_cases(False, domains=["gmeta"]) if c.name.endswith("/batched-float"))
    settings = RunSettings(device="cuda", budget_s=1.0, timeout_s=10.0, max_iters=1, threads=1, mem_cap_bytes=2**30,
                           data_root=None, start_method="spawn")
    record = run_one(None, case, settings, {}, {}, log=print)
    assert record["skipped"] and "runs on float features already" in record["reason"]


def test_batched_float_runs_without_the_tables_that_batched_uses() -> None:
    """Binary features (about half set) take the tables in `batched` and not in `batched-float`."""
    g = make_synthetic(num_nodes=120, num_classes=6, num_features=24, avg_degree=3.0, seed=0)
    g = dataclasses.replace(g, x=(g.x > 0).float(), splits={"train": [0, 1], "val": [2, 3], "test": [4, 5]})
    with_tables = gmeta_workload(g, "batched", "cpu")
    without = gmeta_workload(g, "batched-float", "cpu")
    assert with_tables.info["binary_tables"] is True and without.info["binary_tables"] is False
    assert with_tables.cycle == without.cycle == 4
    for work in (with_tables, without):
        work.step()  # a whole meta-iteration runs
