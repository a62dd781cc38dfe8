"""The benchmark's parent process: prepare the graphs, run every case in its own child, collect the results.

Each child is forked from a fork server that has only imported :mod:`cmlgraph.bench.worker` (never run a case),
so cases cannot pollute each other's peak memory, and imports are paid once. A case whose child overruns its time
limit is killed; one that dies (out of memory) or raises is recorded as skipped with the reason, never crashing
the run; a case whose memory estimate exceeds the cap is skipped before it starts.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmlgraph.bench.cases import Case
from cmlgraph.bench.workloads import GRAPH_SETTING

#: Working set of PyG's ``GCNConv`` on an ``edge_index`` over one second-order task, in floats of the hidden width
#: per edge (the gathered messages ``[E, hidden]`` of each call, kept for the double backward). Measured ~9 on the
#: 100k-node synthetic graph and on Amazon-Clothing (reference (a)); 16 leaves a margin.
MESSAGE_FLOATS_PER_EDGE = 16
#: Activations of one second-order task of the full-graph GCN, in floats of the hidden width per node. Measured
#: ~22 (cmlgraph, full mode) and ~48 (reference (b)) on the 100k-node synthetic graph; 48 is used for both.
ACTIVATION_FLOATS_PER_NODE = 48


@dataclass(frozen=True)
class RunSettings:
    """How each case runs.

    Attributes:
        device: ``cpu`` or ``cuda`` (``cuda:N``).
        budget_s: Seconds of timed iterations per case (after setup and one warm-up iteration).
        timeout_s: A case still running after this many seconds is stopped and recorded as skipped.
        max_iters: Most timed iterations per case.
        threads: torch threads per case (``None``: torch's default).
        mem_cap_bytes: Cases estimated to need more memory than this are skipped before they start.
        data_root: Raw data root (Amazon-Clothing).
        start_method: ``forkserver`` (default where available) or ``spawn``.
    """

    device: str
    budget_s: float
    timeout_s: float
    max_iters: int
    threads: int | None
    mem_cap_bytes: int
    data_root: str | None = None
    start_method: str = "forkserver"


def available_memory_bytes() -> int:
    """Memory available to new processes (``MemAvailable``), or the physical memory where that is unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def estimate_bytes(case: Case, facts: dict[str, Any]) -> int | None:
    """A rough peak-memory estimate of the cases whose memory grows with the whole graph; ``None`` for the others.

    Reference (a) holds dense features ``N × F`` and PyG's per-edge messages. The full-graph cases hold the
    whole graph's activations per task: one task at a time for reference (b), every task of the meta-batch for
    cmlgraph (its meta-gradient is one backward pass over the meta-batch). k-hop cases are not estimated.
    """
    n, e, f = int(facts["nodes"]), int(facts["edges"]), int(facts["features"])
    hidden = int(GRAPH_SETTING["hidden"])
    graph = 16 * e + 24 * (e + n) + 2**29  # edge_index, the cached adjacency and its transpose, the interpreter
    if case.impl == "reference-a":
        return graph + 4 * n * f + 4 * MESSAGE_FLOATS_PER_EDGE * (e + n) * hidden
    tasks = {"reference-b": 1, "cmlgraph": int(GRAPH_SETTING["meta_batch"])}.get(case.impl, 0)
    if case.domain != "graph" or case.options.get("mode", "full") != "full" or not tasks:
        return None
    features = int(facts.get("feature_bytes", 4 * n * f))
    return graph + features + tasks * 4 * ACTIVATION_FLOATS_PER_NODE * n * hidden


def _context(method: str) -> Any:
    if method not in mp.get_all_start_methods():
        method = "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["cmlgraph.bench.worker"])
    return ctx


def run_child(ctx: Any, target: Callable[..., None], args: tuple[Any, ...], timeout_s: float) -> dict[str, Any]:
    """Run ``target(*args, conn)`` in a child and return the dict it sends, or a skip record."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, send), daemon=True)
    proc.start()
    send.close()
    result: dict[str, Any] | None = None
    try:
        if recv.poll(timeout_s):
            result = recv.recv()
    except EOFError:
        result = None
    finally:
        recv.close()
    if result is None:
        if proc.is_alive():
            proc.kill()
            proc.join()
            return {"skipped": True, "reason": f"stopped after the case's time limit of {timeout_s:.0f} s "
                                               f"(setup, warm-up and timed iterations)"}
        proc.join()
        code = proc.exitcode
        why = (f"killed by signal {-code}" + (" (out of memory?)" if code == -9 else "")) if code and code < 0 \
            else f"exit code {code}"
        return {"skipped": True, "reason": f"the case's process died: {why}"}
    proc.join(timeout=60)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return result


def run_cases(cases: list[Case], settings: RunSettings, log: Callable[[str], None] = print
              ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Prepare the graphs the cases need, run every case, and return ``(case records, graph facts)``."""
    from cmlgraph.bench import worker

    ctx = _context(settings.start_method)
    records: list[dict[str, Any]] = []
    graphs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cmlgraph-bench-") as tmp:
        files: dict[str, str] = {}
        for key in dict.fromkeys(c.graph for c in cases if c.graph):
            path = str(Path(tmp) / f"{key}.pt")
            log(f"preparing graph {key}")
            t0 = time.perf_counter()
            facts = run_child(ctx, worker.prepare_graph, (key, path, settings.data_root), 1800.0)
            facts["prepare_s"] = round(time.perf_counter() - t0, 2)
            graphs[key] = facts
            if "error" not in facts and not facts.get("skipped"):
                files[key] = path
        for case in cases:
            record = run_one(ctx, case, settings, files, graphs, log)
            records.append(record)
    return records, graphs


def run_one(ctx: Any, case: Case, settings: RunSettings, files: dict[str, str],
            graphs: dict[str, dict[str, Any]], log: Callable[[str], None]) -> dict[str, Any]:
    """One case's record: skipped up front (graph missing, memory estimate over the cap) or run in a child."""
    base = {"name": case.name, "impl": case.impl, "domain": case.domain, "graph": case.graph}
    graphed = case.options.get("impl") == "batched-graphed" or case.options.get("graphed")
    if graphed and not settings.device.startswith("cuda"):
        return {**base, **_skip("CUDA graphs need a CUDA device (--device cuda)")}
    if case.options.get("impl") == "batched-float" and settings.device.startswith("cuda"):
        # the binary-feature tables are a CPU path (binary_tables_win): on a GPU `batched` runs on floats already,
        # so this case would time the same code again (a ratio of 1 by construction) out of a GPU check's minutes
        return {**base, **_skip("on a GPU `batched` runs on float features already (the binary-feature tables "
                                "are a CPU path): the same code as `batched`")}
    if case.graph and case.graph not in files:
        facts = graphs.get(case.graph, {})
        why = facts.get("error") or facts.get("reason") or "not prepared"
        return {**base, **_skip(f"graph {case.graph} is not available: {why}")}
    if case.graph:
        need = estimate_bytes(case, graphs[case.graph])
        if need is not None and need > settings.mem_cap_bytes:
            return {**base, **_skip(f"estimated peak memory {need / 2**30:.1f} GiB exceeds the cap of "
                                    f"{settings.mem_cap_bytes / 2**30:.1f} GiB (a fraction of the available memory)"),
                    "estimated_gb": round(need / 2**30, 1)}
    log(f"running {case.name}")
    t0 = time.perf_counter()
    # the child's own time limit too, so that it skips its untimed op count rather than lose its timing
    target = functools.partial(_target(), timeout_s=settings.timeout_s)
    out = run_child(ctx, target, (case, files.get(case.graph or ""), settings.device, settings.threads,
                                  settings.budget_s, settings.max_iters), settings.timeout_s)
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    if "error" in out:
        out.update(_skip(f"failed: {out['error']}"), error=True)
    elif out.get("skipped"):
        out.update(_skip(out["reason"]))
    else:
        out["skipped"] = False
    return {**base, **out}


def _target() -> Callable[..., None]:
    from cmlgraph.bench.worker import run_case

    return run_case


def _skip(reason: str) -> dict[str, Any]:
    return {"skipped": True, "reason": reason, "tasks_per_s": None, "ms_per_iter": None,
            "peak_rss_mb": None}


__all__ = ["ACTIVATION_FLOATS_PER_NODE", "MESSAGE_FLOATS_PER_EDGE", "RunSettings", "available_memory_bytes",
           "estimate_bytes", "run_cases", "run_child", "run_one"]
