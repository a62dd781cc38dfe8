"""``run_bench``: the benchmark end to end, what ``cmlgraph bench`` calls."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from cmlgraph.bench.cases import build_cases, build_ratios
from cmlgraph.bench.report import (
    compute_ratios,
    machine_info,
    param_counts,
    print_tables,
    target_checks,
    write_document,
)
from cmlgraph.bench.runner import RunSettings, available_memory_bytes, run_cases
from cmlgraph.core.memory import device_memory
from cmlgraph.errors import ConfigError
from cmlgraph.validate import device_unavailable

#: Defaults per set: seconds of timed iterations per case, case time limit, most timed iterations.
DEFAULTS = {"quick": {"budget_s": 2.0, "timeout_s": 60.0, "max_iters": 3},
            "full": {"budget_s": 20.0, "timeout_s": 300.0, "max_iters": 50}}


def check_device(device: str) -> str:
    """``cpu`` or an available ``cuda``/``cuda:N``; anything else raises with the fix."""
    if device != "cpu" and device != "cuda" and not device.startswith("cuda:"):
        raise ConfigError(f"--device {device!r} is invalid; use cpu or cuda")
    why = device_unavailable(device)
    if why is not None:
        raise ConfigError(why)
    return device


def memory_cap(device: str, fraction: float) -> int:
    """Bytes a case may be estimated to need before it is skipped unstarted: ``fraction`` of the memory available
    to new processes, and on a GPU also of the GPU's memory (the case's tensors live there: a case the host could
    hold but the GPU cannot would run until it failed out of memory, spending the time of a GPU check)."""
    cap = fraction * available_memory_bytes()
    if device.startswith("cuda"):
        gpu = device_memory(device)
        if gpu is not None:
            cap = min(cap, fraction * gpu)
    return int(cap)


def default_start_method(device: str, quick: bool) -> str:
    """The start method of each case's fresh process when ``--start-method`` is not given.

    CUDA cannot be re-initialised in a forked child (PyTorch's "CUDA error: initialization error"; see the
    ``torch.multiprocessing`` notes on CUDA), so a CUDA run always spawns; on the CPU ``--quick`` uses the cheaper
    forkserver and the full set spawns.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        quick: Whether the reduced set runs.

    Returns:
        ``spawn`` or ``forkserver``.
    """
    if device.startswith("cuda"):
        return "spawn"
    return "forkserver" if quick else "spawn"


def run_bench(
    quick: bool = False,
    json_path: str | Path | None = None,
    device: str = "cpu",
    graphs: list[str] | None = None,
    domains: list[str] | None = None,
    budget_s: float | None = None,
    timeout_s: float | None = None,
    max_iters: int | None = None,
    threads: int = 1,
    start_method: str | None = None,
    mem_fraction: float = 0.5,
    data_root: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its document (also written to ``json_path`` when given).

    Args:
        quick: The reduced set (sinusoid, Conv4 at 28 px, the 10k-node graph) instead of the full one.
        json_path: Where to write the JSON document (atomically).
        device: ``cpu`` or ``cuda``.
        graphs: Graph keys to run (default: all of the set; see ``cmlgraph.bench.cases.GRAPHS``).
        domains: Domains to run (``sinusoid``, ``images``, ``graph``; default: all).
        budget_s: Seconds of timed iterations per case after the warm-up.
        timeout_s: Time limit of a case; a case over it is stopped and recorded as skipped.
        max_iters: Most timed iterations per case.
        threads: torch threads in each case; 1 (the default) gives stable, comparable timings on a shared machine,
            0 keeps torch's default.
        start_method: How each case's fresh process starts: ``spawn`` (a new interpreter: the exact peak RSS of
            a standalone process; default of the full set) or ``forkserver`` (forked from a server that only
            imported the modules: no import cost per case, but shared library pages the case never touches are
            not counted, some 70 MB less; default of ``--quick``).
        mem_fraction: Fraction of the available memory a case may be estimated to need before it is skipped.
        data_root: Raw data root for Amazon-Clothing (default: ``$CMLGRAPH_DATA``).
        console: Where the progress lines and tables go.

    Raises:
        ConfigError: An invalid device, graph key or setting.
    """
    console = console or Console()
    device = check_device(device)
    d = DEFAULTS["quick" if quick else "full"]
    settings = RunSettings(
        device=device, budget_s=float(budget_s if budget_s is not None else d["budget_s"]),
        timeout_s=float(timeout_s if timeout_s is not None else d["timeout_s"]),
        max_iters=int(max_iters if max_iters is not None else d["max_iters"]), threads=threads or None,
        mem_cap_bytes=0, data_root=data_root,  # set below, once the settings are valid (it may read the GPU)
        start_method=start_method or default_start_method(device, quick))
    if settings.start_method not in ("spawn", "forkserver"):
        raise ConfigError(f"--start-method {settings.start_method!r} is invalid; use spawn or forkserver")
    if device.startswith("cuda") and settings.start_method != "spawn":
        raise ConfigError(f"--start-method {settings.start_method} cannot run --device {device}: CUDA does not "
                          f"initialise in a forked process; use --start-method spawn (the default on CUDA)")
    for name, value in (("budget", settings.budget_s), ("timeout", settings.timeout_s),
                        ("max-iters", settings.max_iters), ("mem-fraction", mem_fraction)):
        if value <= 0:
            raise ConfigError(f"--{name} {value} is invalid; use a positive value")
    if threads < 0:
        raise ConfigError(f"--threads {threads} is invalid; use 0 (torch's default) or a positive count")
    cases = build_cases(quick, graphs, domains)
    settings = replace(settings, mem_cap_bytes=memory_cap(device, mem_fraction))
    t0 = time.perf_counter()
    records, graph_facts = run_cases(cases, settings, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    doc = {
        "machine": machine_info(device, settings.threads),
        "settings": {"quick": quick, "budget_s": settings.budget_s, "timeout_s": settings.timeout_s,
                     "max_iters": settings.max_iters, "mem_cap_gb": round(settings.mem_cap_bytes / 2**30, 2),
                     "start_method": settings.start_method, "graphs": graph_facts},
        "cases": records,
        "ratios": compute_ratios(build_ratios(cases), records),
        "param_counts": param_counts(records),
        "wall_time_s": round(time.perf_counter() - t0, 2),
    }
    doc["targets"] = target_checks(doc["ratios"], records, device)
    print_tables(doc, console)
    if json_path is not None:
        write_document(json_path, doc)
        console.print(f"wrote {json_path}")
    return doc


__all__ = ["DEFAULTS", "check_device", "memory_cap", "run_bench"]
