"""What runs inside a benchmark child process: prepare a graph file, or build and time one case.

Why a child per case: the peak resident memory (``ru_maxrss``) of a process never goes down, so each case runs in
a fresh process and reads its own peak at the end; a case that crashes, runs out of memory or overruns its time
limit takes only its own process down. The parent preloads this module in a fork server, so every child starts
with the imports done (the same baseline a spawned process has after importing) without paying them again.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from cmlgraph.bench.cases import GRAPHS, Case
from cmlgraph.bench.graphs import build_graph, load_saved_graph, save_graph
from cmlgraph.bench.reference import reference_workload
from cmlgraph.bench.workloads import Workload, graph_workload, image_workload, sinusoid_workload
from cmlgraph.graphs import FewShotGraph


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


#: Untimed meta-iterations before the timed warm-up on CUDA: its lazy start-up (cuBLAS and cuSPARSE handles, lazy
#: kernel loading, the caching allocator's first growth) is paid there by every case alike, not by the one
#: warm-up whose time may become the measurement (``timed_from_warmup``).
CUDA_WARMUP = 3


def time_workload(work: Workload, budget_s: float, max_iters: int, sync: Callable[[], None],
                  warmup: int = 0) -> dict[str, Any]:
    """Time meta-iterations after ``warmup`` untimed ones and one timed warm-up, for about ``budget_s`` seconds and
    at most ``max_iters`` (rounded up to whole cycles).

    A workload that cycles through a pool of tasks of different sizes (``work.cycle`` > 1) is timed in whole
    cycles, so that every task counts equally however many iterations fit the budget (otherwise a slow
    implementation timed on 6 iterations of a 4-task pool would count two tasks twice); the figure is then the
    median over cycles of the mean iteration time within a cycle. At least one cycle is timed after the warm-up.
    When the warm-up alone exceeds the budget (a reference taking a minute per iteration), it is the measurement;
    ``timed_from_warmup`` says so.
    """
    for _ in range(warmup):
        work.step()
    sync()
    t = time.perf_counter()
    work.step()
    sync()
    warm = time.perf_counter() - t
    cycle = max(1, work.cycle)
    times: list[float] = []
    per_iter: list[float] = []  # one value per timed cycle: its mean iteration time
    if warm >= budget_s:
        times = per_iter = [warm]
    else:
        start = time.perf_counter()
        while len(times) < max_iters:
            group = []
            for _ in range(cycle):
                t = time.perf_counter()
                work.step()
                sync()
                group.append(time.perf_counter() - t)
            times += group
            per_iter.append(statistics.fmean(group))
            if time.perf_counter() - start + cycle * statistics.median(per_iter) > budget_s:
                break
    med = statistics.median(per_iter)
    return {"tasks_per_s": work.meta_batch / med, "ms_per_iter": 1000 * med, "ms_per_iter_min": 1000 * min(times),
            "iters": len(times), "cycle": cycle, "warmup_ms": 1000 * warm, "timed_from_warmup": warm >= budget_s,
            "meta_batch": work.meta_batch}


#: The host's preparation of meta-batches (:attr:`Workload.prepare`) is timed over at most this many of them.
PREPARE_ITERS = 20


def time_prepare(work: Workload, budget_s: float, sync: Callable[[], None]) -> dict[str, Any]:
    """The host's time to prepare one meta-batch (:attr:`Workload.prepare`: sampling, materializing, host-built
    layouts), untimed for the case: one warm-up call, then at least ``max(cycle, 3)`` calls and at most
    :data:`PREPARE_ITERS`, within about ``budget_s`` seconds; the median, in ``host_ms_per_iter``.

    Why (issue 18): on a GPU the trainer's prefetch worker prepares the next meta-batches while the step runs, so
    a pipelined step (``khop-prefetch``, ``batched-prefetch``) can be no faster than this, however fast its CUDA
    graph replays; ``host_bound_tasks_per_s`` is that bound. It is the time until each call returns: copies to
    the device are queued (pinned, ``non_blocking``) and the device is synchronised once after the calls.
    A workload without a separate preparation reports nothing.

    A case whose prefetcher builds ``W`` meta-batches at once (:attr:`Workload.prepare_workers` > 1, threads) is
    also timed ``W`` calls at once, ``host_pooled_ms_per_iter`` (wall time over the calls, from ``W`` threads, each
    as many calls as the serial timing made over ``W``), and its bound is the faster of the two."""
    if work.prepare is None:
        return {}
    work.prepare()
    times: list[float] = []
    start = time.perf_counter()
    least = max(work.cycle, 3)
    while len(times) < PREPARE_ITERS and (len(times) < least or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        work.prepare()
        times.append(time.perf_counter() - t)
    sync()
    med = statistics.median(times)
    out: dict[str, Any] = {"host_ms_per_iter": 1000 * med, "host_iters": len(times),
                           "host_workers": work.prepare_workers}
    best = med
    if work.prepare_workers > 1:
        pooled = _time_pooled(work.prepare, work.prepare_workers, max(2, -(-len(times) // work.prepare_workers)))
        sync()
        out["host_pooled_ms_per_iter"] = 1000 * pooled
        best = min(med, pooled)
    out["host_bound_tasks_per_s"] = work.meta_batch / best
    return out


def _time_pooled(prepare: Callable[[], Any], workers: int, each: int) -> float:
    """Seconds per call of ``prepare`` called ``each`` times by each of ``workers`` threads at once (wall time over
    all calls). An error in a thread is raised here."""
    errors: list[BaseException] = []
    ready = threading.Barrier(workers + 1)

    def run() -> None:
        ready.wait()
        try:
            for _ in range(each):
                prepare()
        except BaseException as exc:  # noqa: BLE001  (raised in the caller)
            errors.append(exc)

    threads = [threading.Thread(target=run, name=f"cmlgraph-bench-prep-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall / (workers * each)


#: Ops are counted (one more cycle, slower under the counting mode) where a cycle takes at most the case's time
#: budget or this many seconds: a reference at a minute an iteration is not run again for its count.
OPS_COUNT_S = 10.0


def count_ops(work: Workload, device: str) -> dict[str, Any]:
    """Aten ops per meta-iteration of ``work`` (untimed: one cycle of steps under
    :class:`~cmlgraph.train.launch_counter.LaunchCounter`): ``ops_per_iter`` counts every op of the calling thread
    that launches work, host and device (on the CPU all of them run there; a prefetch worker's run in its own
    thread and are not counted: ``ops_note`` says so); on CUDA ``device_ops_per_iter`` those on the GPU (a CUDA
    graph's replay counts none of the kernels it replays). On a GPU an eager meta-iteration of small tasks costs about
    a launch per op, so these show where its time goes on any machine (docs/gpu.md, "Ops per meta-iteration").
    A workload the counting mode breaks reports ``ops_error`` instead."""
    from cmlgraph.train.launch_counter import LaunchCounter

    cycle = max(1, work.cycle)
    captures = work.info.get("cuda_graph_captures")
    every, on_gpu = LaunchCounter(), LaunchCounter("cuda")
    try:
        with every, on_gpu if device.startswith("cuda") else contextlib.nullcontext():
            for _ in range(cycle):
                work.step()
    except Exception as exc:  # noqa: BLE001 - the timing stands; the count is a note
        return {"ops_error": _error(exc)}
    out: dict[str, Any] = {"ops_per_iter": every.total / cycle}
    counted = every.total
    if device.startswith("cuda"):
        out["device_ops_per_iter"] = on_gpu.total / cycle
        counted = on_gpu.total
    if counted:
        out["tasks_per_kop"] = 1000 * work.meta_batch * cycle / counted
    if work.info.get("cuda_graph_captures") != captures:  # a recapture's warm-up and check counted: not typical
        out["ops_note"] = "a CUDA graph was captured again while counting"
    if work.info.get("prefetch"):
        out["ops_note"] = "the step only: the prefetch worker's host work and copies run in its own thread"
    return out


def build_workload(case: Case, graph: FewShotGraph | None, device: str) -> Workload:
    """The workload of a case."""
    opts = dict(case.options)
    if case.workload == "sinusoid":
        return sinusoid_workload(device=device, **opts)
    if case.workload == "images":
        return image_workload(device=device, **opts)
    if graph is None:
        raise ValueError(f"case {case.name} needs a graph")
    if case.workload == "graph":
        return graph_workload(graph, opts["mode"], device, cml=opts["cml"], graphed=bool(opts.get("graphed")),
                              prefetch=bool(opts.get("prefetch")))
    if case.workload == "reference":
        return reference_workload(graph, opts["kind"], device)
    if case.workload == "gmeta":
        from cmlgraph.bench.gmeta_workload import gmeta_workload

        return gmeta_workload(graph, opts["impl"], device)
    raise ValueError(f"unknown workload {case.workload!r} of case {case.name}")


def _error(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:400]


def run_case(case: Case, graph_file: str | None, device: str, threads: int | None, budget_s: float,
             max_iters: int, conn: Connection, timeout_s: float | None = None) -> None:
    """Child entry: build the case's workload, time it and send the result dict through ``conn``.

    After the timing, the ops of one more cycle are counted (:func:`count_ops`) where that fits: a cycle of at most
    ``max(budget_s, OPS_COUNT_S)`` seconds that, at 3 times its timed length under the counting mode, still ends
    before ``timeout_s`` (the parent's limit, which would lose the timing with the process)."""
    result: dict[str, Any]
    # The notices cmlgraph/_warnings.py silences, again: imports after it may have reset the filters.
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
    work: Workload | None = None
    started = time.perf_counter()
    try:
        if threads:
            torch.set_num_threads(threads)
        cuda = device.startswith("cuda")
        if cuda:  # the case's GPU made current: the syncs, the peak memory and any "cuda" tensor go there
            gpu = torch.device(device)
            torch.cuda.set_device(gpu.index if gpu.index is not None else torch.cuda.current_device())
        base = peak_rss_mb()
        t0 = time.perf_counter()
        graph = load_saved_graph(Path(graph_file), case.graph or "graph") if graph_file else None
        work = build_workload(case, graph, device)
        setup = time.perf_counter() - t0
        sync = (lambda: torch.cuda.synchronize(torch.cuda.current_device())) if cuda else (lambda: None)
        result = time_workload(work, budget_s, max_iters, sync, warmup=CUDA_WARMUP if cuda else 0)
        result.update(setup_s=setup, base_rss_mb=base, **work.info)
        if cuda:  # the timed steps' peak, before the counted cycle
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(torch.cuda.current_device()) / 2**20
        left = None if timeout_s is None else timeout_s - (time.perf_counter() - started)
        if work.prepare is not None and left is not None and left < 3 * budget_s + 1:
            result["prepare_error"] = "not timed: too little of the case's time limit left"
        else:
            try:  # the timing stands whatever happens here; the preparation's time is a further fact
                result.update(time_prepare(work, budget_s, sync))
            except Exception as exc:  # noqa: BLE001
                result["prepare_error"] = _error(exc)
        cycle_s = result["ms_per_iter"] * max(1, work.cycle) / 1000
        left = None if timeout_s is None else timeout_s - (time.perf_counter() - started)
        if cycle_s > max(budget_s, OPS_COUNT_S):
            result["ops_error"] = f"not counted: a cycle takes {cycle_s:.1f} s, over {max(budget_s, OPS_COUNT_S):g} s"
        elif left is not None and 3 * cycle_s > left - 1:
            result["ops_error"] = "not counted: too little of the case's time limit left"
        else:
            result.update(count_ops(work, device))
    except Exception as exc:  # noqa: BLE001 - reported as a failed case, the others still run
        result = {"error": _error(exc)}
    finally:
        if work is not None and work.close is not None:
            work.close()
    result["peak_rss_mb"] = peak_rss_mb()
    conn.send(result)
    conn.close()


def prepare_graph(key: str, path: str, data_root: str | None, conn: Connection) -> None:
    """Child entry: generate or load a benchmark graph, save it to ``path`` and send its facts."""
    try:
        graph = build_graph(GRAPHS[key], data_root)
        facts: dict[str, Any] = save_graph(graph, Path(path))
        facts["notes"] = list(graph.notes)
    except Exception as exc:  # noqa: BLE001 - e.g. a dataset that is not available: its cases are skipped
        facts = {"error": _error(exc)}
    conn.send(facts)
    conn.close()


__all__ = ["CUDA_WARMUP", "PREPARE_ITERS", "build_workload", "peak_rss_mb", "prepare_graph", "run_case", "time_prepare",
           "time_workload"]
