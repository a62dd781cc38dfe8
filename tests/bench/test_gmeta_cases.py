"""The G-Meta bench cases: cmlgraph with and without the binary-feature tables, against the per-node references."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cmlgraph.bench.cases import build_cases, build_ratios
from cmlgraph.bench.gmeta_workload import gmeta_workload
from cmlgraph.graphs import make_synthetic


def test_gmeta_cases_time_cmlgraph_with_and_without_tables_and_both_references() -> None:
    cases = build_cases(False, domains=["gmeta"])
    names = [c.name for c in cases]
    base = "gmeta/amazon-computers"
    assert names == [f"{base}/batched", f"{base}/batched-float", f"{base}/batched-graphed",
                     f"{base}/batched-prefetch", f"{base}/per-node", f"{base}/per-node-sparse"]
    ratios = {r.name: r for r in build_ratios(cases)}
    assert ratios[f"{base}:batched/per-node"].target == 20.0
    assert {f"{base}:batched-float/per-node", f"{base}:batched/batched-float", f"{base}:batched-graphed/per-node",
            f"{base}:batched-graphed/batched", f"{base}:batched-prefetch/per-node",
            f"{base}:batched-prefetch/batched"} <= ratios.keys()


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


def _small_gmeta_graph():  # noqa: ANN202
    g = make_synthetic(num_nodes=120, num_classes=6, num_features=24, avg_degree=3.0, seed=0)
    return dataclasses.replace(g, splits={"train": [0, 1], "val": [2, 3], "test": [4, 5]})


@pytest.mark.parametrize("workers", [1, 3])
def test_the_prefetch_case_trains_what_the_batched_case_trains_with_its_layouts_built_by_the_worker(
        monkeypatch, workers) -> None:
    """``batched-prefetch`` (the trainer's pipeline: a worker thread materializes the pool's next tasks and lays out
    their balls while the step runs) meta-trains exactly what ``batched`` trains: equal weights after 6 steps (dropout
    0.5 included: the layouts draw nothing). Its step finds every task's layout built already, by the worker."""
    import threading

    import cmlgraph.bench.gmeta_workload as workload
    import cmlgraph.train.prefetch as prefetch
    from cmlgraph.graphs.balls import BallIndex

    # the trainer's build threads on a GPU host (train.prefetch_workers: auto), here on the CPU
    monkeypatch.setattr(prefetch, "prefetch_workers", lambda setting, device: workers)

    exps = []
    original = workload.build_experiment
    monkeypatch.setattr(workload, "build_experiment", lambda *a, **k: exps.append(original(*a, **k)) or exps[-1])
    torch.manual_seed(0)
    plain = gmeta_workload(_small_gmeta_graph(), "batched", "cpu")
    plain_exp = exps[-1]
    torch.manual_seed(0)
    piped = gmeta_workload(_small_gmeta_graph(), "batched-prefetch", "cpu")
    piped_exp = exps[-1]
    assert piped.info["prefetch"] is True and plain.info["prefetch"] is False
    assert piped.info["prefetch_workers"] == piped.prepare_workers == workers
    assert piped.close is not None and plain.close is None
    in_main_thread: list[bool] = []
    real = BallIndex.block

    def spy(self, nodes):  # noqa: ANN001, ANN202
        in_main_thread.append(threading.current_thread() is threading.main_thread())
        return real(self, nodes)

    try:
        torch.manual_seed(1)
        for _ in range(6):
            plain.step()
        monkeypatch.setattr(BallIndex, "block", spy)
        torch.manual_seed(1)
        for _ in range(6):
            piped.step()
    finally:
        piped.close()
    assert in_main_thread and not any(in_main_thread)  # every ball block laid out in the worker thread
    for (k, a), b in zip(plain_exp.model.state_dict().items(), piped_exp.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_the_host_preparation_of_a_task_is_timed_apart_and_not_for_the_references() -> None:
    from cmlgraph.bench.worker import time_prepare

    g = _small_gmeta_graph()
    work = gmeta_workload(g, "batched", "cpu")
    out = time_prepare(work, 0.2, lambda: None)
    assert out["host_ms_per_iter"] > 0 and out["host_iters"] >= work.cycle
    assert out["host_bound_tasks_per_s"] == pytest.approx(work.meta_batch / out["host_ms_per_iter"] * 1000)
    assert time_prepare(gmeta_workload(g, "per-node-sparse", "cpu"), 0.2, lambda: None) == {}
