"""The bench's timing loop: whole cycles of a task pool, so every task counts equally (on a simulated clock)."""

from __future__ import annotations

import threading
import types

import pytest

import cmlgraph.bench.worker as worker
from cmlgraph.bench.workloads import Workload


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [0.0]
    monkeypatch.setattr(worker, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def _pool_workload(costs_s: list[float], clock: list[float]) -> tuple[Workload, list[int]]:
    seen: list[int] = []

    def step() -> None:
        i = len(seen) % len(costs_s)
        seen.append(i)
        clock[0] += costs_s[i]

    return Workload(step, 1, {}, cycle=len(costs_s)), seen


def test_a_pool_workload_is_timed_in_whole_cycles_and_scored_by_its_cycle_mean(clock: list[float]) -> None:
    costs = [1.0, 1.0, 1.0, 9.0]  # one heavy task in four
    work, seen = _pool_workload(costs, clock)
    out = worker.time_workload(work, budget_s=30.0, max_iters=6, sync=lambda: None)
    timed = seen[1:]  # after the warm-up
    assert out["cycle"] == 4 and out["iters"] == len(timed) == 8  # 6 rounded up to two whole cycles
    assert all(timed.count(i) == 2 for i in range(4))  # each task equally often
    # The cycle mean, 3 s: not the per-iteration median (1 s), which 6 loose iterations would have given.
    assert out["ms_per_iter"] == pytest.approx(3000.0) and out["ms_per_iter_min"] == pytest.approx(1000.0)


def test_the_budget_stops_after_a_whole_cycle(clock: list[float]) -> None:
    work, seen = _pool_workload([1.0, 1.0, 1.0, 9.0], clock)
    out = worker.time_workload(work, budget_s=15.0, max_iters=100, sync=lambda: None)
    assert out["iters"] == 4 and out["ms_per_iter"] == pytest.approx(3000.0)


def test_a_single_task_workload_keeps_per_iteration_timing(clock: list[float]) -> None:
    work, seen = _pool_workload([2.0], clock)
    out = worker.time_workload(work, budget_s=9.0, max_iters=50, sync=lambda: None)
    assert out["cycle"] == 1 and out["iters"] == len(seen) - 1 == 4
    assert out["ms_per_iter"] == pytest.approx(2000.0) and out["tasks_per_s"] == pytest.approx(0.5)


def test_a_warm_up_over_budget_is_the_measurement(clock: list[float]) -> None:
    work, _ = _pool_workload([20.0, 1.0], clock)
    out = worker.time_workload(work, budget_s=10.0, max_iters=50, sync=lambda: None)
    assert out["timed_from_warmup"] and out["iters"] == 1 and out["ms_per_iter"] == pytest.approx(20000.0)


def test_untimed_warm_up_steps_pay_the_start_up_before_the_timed_one(clock: list[float]) -> None:
    """On CUDA the first steps pay lazy start-up (library handles, kernel loading, allocator growth): with
    ``warmup`` steps first, a start-up of 20 s is neither the timed warm-up nor the measurement."""
    costs = iter([20.0, 5.0, 1.0] + [1.0] * 100)
    steps: list[float] = []

    def step() -> None:
        steps.append(next(costs))
        clock[0] += steps[-1]

    out = worker.time_workload(Workload(step, 1, {}), budget_s=10.0, max_iters=5, sync=lambda: None, warmup=2)
    assert not out["timed_from_warmup"] and out["warmup_ms"] == pytest.approx(1000.0)
    assert out["ms_per_iter"] == pytest.approx(1000.0) and out["iters"] == 5


def test_a_case_on_a_second_gpu_makes_it_current_and_syncs_and_measures_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spawned case's current device is ``cuda:0``: a case on ``cuda:1`` synchronised and read the peak memory
    of GPU 0 (times of kernel launches only, a peak of 0). The CUDA calls are stood in (no GPU here)."""
    import torch

    from cmlgraph.bench.cases import Case

    calls: list[tuple[str, object]] = []
    current = [0]
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: (calls.append(("set_device", d)),
                                                             current.__setitem__(0, d)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(("synchronize", d)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: (calls.append(("peak", d)), 2**21)[1])
    monkeypatch.setattr(worker, "build_workload", lambda case, graph, device: Workload(lambda: None, 1, {}))
    sent: list[dict] = []
    conn = types.SimpleNamespace(send=sent.append, close=lambda: None)
    worker.run_case(Case("x/y", "cmlgraph", "sinusoid", "sinusoid"), None, "cuda:1", None, 0.01, 3, conn)
    assert "error" not in sent[0], sent[0]
    assert calls[0] == ("set_device", 1)
    assert {d for kind, d in calls if kind in ("synchronize", "peak")} == {1}
    assert sent[0]["peak_gpu_mb"] == 2.0


def test_ops_are_counted_per_iteration_over_a_whole_cycle() -> None:
    """``count_ops`` runs one cycle under the launch counter: ops per iteration are the cycle's mean (views free),
    tasks per 1000 ops follow; a step the counting breaks leaves a note, not a failed case."""
    import torch

    x = torch.ones(3)
    calls = [0]

    def step() -> None:  # alternately 1 and 3 ops that launch work, and a view each time
        calls[0] += 1
        y = x.view(3, 1) + 1
        if calls[0] % 2 == 0:
            (y * 2).sum()

    out = worker.count_ops(Workload(step, 4, {}, cycle=2), "cpu")
    assert calls[0] == 2
    assert out["ops_per_iter"] == pytest.approx(2.0) and "device_ops_per_iter" not in out
    assert out["tasks_per_kop"] == pytest.approx(1000 * 4 / 2.0)

    def broken() -> None:
        raise RuntimeError("no mode here")

    assert "no mode here" in worker.count_ops(Workload(broken, 1, {}), "cpu")["ops_error"]


def test_the_op_count_is_skipped_rather_than_lose_the_timing_and_the_workload_is_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A case near its time limit sends its timing without the op count (the parent would kill it while counting);
    the workload's ``close`` runs (a prefetch worker's thread), whatever happened."""
    from cmlgraph.bench.cases import Case

    closed: list[bool] = []
    monkeypatch.setattr(worker, "build_workload", lambda case, graph, device: Workload(
        lambda: None, 1, {}, close=lambda: closed.append(True)))
    sent: list[dict] = []
    conn = types.SimpleNamespace(send=sent.append, close=lambda: None)
    worker.run_case(Case("x/y", "cmlgraph", "sinusoid", "sinusoid"), None, "cpu", None, 0.01, 3, conn, timeout_s=0.5)
    assert sent[0]["ms_per_iter"] >= 0 and "too little" in sent[0]["ops_error"] and "ops_per_iter" not in sent[0]
    worker.run_case(Case("x/y", "cmlgraph", "sinusoid", "sinusoid"), None, "cpu", None, 0.01, 3, conn, timeout_s=60)
    assert sent[1]["ops_per_iter"] == 0 and "ops_error" not in sent[1]
    assert closed == [True, True]


def test_a_failing_or_late_preparation_costs_a_case_neither_its_timing_nor_its_op_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's preparation (``Workload.prepare``) is timed after the step: where it raises, the case still sends
    its timing and op count with the error named; near the time limit it is not timed at all, saying so."""
    from cmlgraph.bench.cases import Case

    def broken() -> None:
        raise RuntimeError("prep broke")

    monkeypatch.setattr(worker, "build_workload", lambda case, graph, device: Workload(
        lambda: None, 1, {}, prepare=broken))
    sent: list[dict] = []
    conn = types.SimpleNamespace(send=sent.append, close=lambda: None)
    worker.run_case(Case("x/y", "cmlgraph", "graph", "graph"), None, "cpu", None, 0.01, 3, conn, timeout_s=60)
    assert sent[0]["ms_per_iter"] >= 0 and "ops_per_iter" in sent[0] and "error" not in sent[0]
    assert "prep broke" in sent[0]["prepare_error"] and "host_ms_per_iter" not in sent[0]
    worker.run_case(Case("x/y", "cmlgraph", "graph", "graph"), None, "cpu", None, 0.01, 3, conn, timeout_s=0.5)
    assert sent[1]["ms_per_iter"] >= 0 and "not timed" in sent[1]["prepare_error"]


def test_a_case_with_several_build_threads_is_also_timed_that_many_preparations_at_once() -> None:
    """``prepare_workers`` > 1 (a G-Meta case's prefetcher on a GPU host): the preparation is also run by that many
    threads at once, and the bound is the faster figure (structure only: no wall-clock assertion)."""
    seen: set[str] = set()
    lock = threading.Lock()

    def prepare() -> None:
        with lock:
            seen.add(threading.current_thread().name)

    out = worker.time_prepare(Workload(lambda: None, 4, {}, prepare=prepare, prepare_workers=3), 0.01, lambda: None)
    assert out["host_workers"] == 3 and out["host_pooled_ms_per_iter"] > 0
    best = min(out["host_ms_per_iter"], out["host_pooled_ms_per_iter"])
    assert out["host_bound_tasks_per_s"] == pytest.approx(4 / best * 1000)
    assert {n for n in seen if n.startswith("cmlgraph-bench-prep-")} == {f"cmlgraph-bench-prep-{i}" for i in range(3)}
    one = worker.time_prepare(Workload(lambda: None, 4, {}, prepare=prepare), 0.01, lambda: None)
    assert one["host_workers"] == 1 and "host_pooled_ms_per_iter" not in one

    def broken() -> None:
        if threading.current_thread().name.startswith("cmlgraph-bench-prep-"):
            raise RuntimeError("prep broke in a thread")

    with pytest.raises(RuntimeError, match="prep broke in a thread"):
        worker.time_prepare(Workload(lambda: None, 1, {}, prepare=broken, prepare_workers=2), 0.01, lambda: None)
