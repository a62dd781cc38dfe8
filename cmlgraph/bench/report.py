"""The benchmark's outputs: ratios between cases, machine facts, the rich tables and the JSON document."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from cmlgraph.bench.cases import MEMORY_TARGETS_MB, Ratio


def compute_ratios(ratios: list[Ratio], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each ratio's value (``None`` when either case was skipped) and whether it meets its target."""
    by_name = {r["name"]: r for r in records}
    out = []
    for r in ratios:
        num, den = by_name[r.numerator].get(r.metric), by_name[r.denominator].get(r.metric)
        value = num / den if num is not None and den else None
        meets = None
        if value is not None and r.target is not None:
            meets = value >= r.target if r.target_kind == ">=" else value <= r.target
        out.append({"name": r.name, "numerator": r.numerator, "denominator": r.denominator, "metric": r.metric,
                    "ratio": value, "target": r.target, "target_kind": r.target_kind if r.target else None,
                    "meets_target": meets})
    return out


def target_checks(ratios: list[dict[str, Any]], records: list[dict[str, Any]], device: str = "cpu"
                  ) -> list[dict[str, Any]]:
    """Every target of issue 5 with its measured value: the ratio targets and cmlgraph's peak memory (on a GPU the
    peak GPU memory the case allocated: its host RSS there is mostly the CUDA context and libraries)."""
    out = [{"name": r["name"], "value": r["ratio"], "target": r["target"], "kind": r["target_kind"],
            "met": r["meets_target"]} for r in ratios if r["target"] is not None]
    key, label = ("peak_gpu_mb", "peak GPU MiB") if device.startswith("cuda") else ("peak_rss_mb", "peak RSS MiB")
    for r in records:
        if r["name"] in MEMORY_TARGETS_MB:
            limit = MEMORY_TARGETS_MB[r["name"]]
            value = r.get(key)
            out.append({"name": f"{r['name']} {label}", "value": value, "target": limit, "kind": "<=",
                        "met": None if value is None else value <= limit})
    return out


def param_counts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Saved (inference) parameter counts of cmlgraph with and without CML on the same graph: equal by design."""
    by_name = {r["name"]: r for r in records}
    out = []
    for r in records:
        if not r["name"].endswith("/khop-maml"):
            continue
        cml = by_name.get(r["name"][: -len("-maml")], {})
        a, b = cml.get("saved_params"), r.get("saved_params")
        out.append({"graph": r["graph"], "cml": a, "maml": b, "equal": a == b if a is not None and b is not None
                    else None})
    return out


def machine_info(device: str, threads: int | None) -> dict[str, Any]:
    """Facts that make the numbers interpretable: CPU count, torch version, device, threads."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "cpu_affinity": affinity, "torch": torch.__version__,
                            "device": device, "torch_threads": threads or torch.get_num_threads(),
                            "python": platform.python_version(), "platform": platform.platform(),
                            "processor": platform.processor() or platform.machine()}
    try:
        import torch_geometric

        info["torch_geometric"] = torch_geometric.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    try:
        load = os.getloadavg()
        info["load_average"] = [round(v, 2) for v in load]
    except OSError:  # pragma: no cover
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _num(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def print_tables(doc: dict[str, Any], console: Console) -> None:
    """The cases, the graph comparison side by side, the ratios and the targets."""
    table = Table(title=f"cmlgraph bench ({'quick' if doc['settings']['quick'] else 'full'}, "
                        f"{doc['machine']['device']}, {doc['machine']['torch_threads']} threads)")
    cuda = str(doc["machine"]["device"]).startswith("cuda")
    table.caption = ("prep ms: the host's median time to prepare one meta-batch (sampling, materializing, k-hop plans "
                     "or ball layouts), timed apart from the step (with several prefetch build threads: their pooled "
                     "time); a pipelined step on a GPU is no faster")
    for col, justify in (("case", "left"), ("impl", "left"), ("tasks/s", "right"), ("ms/iter", "right"),
                         ("GPU ops/iter" if cuda else "ops/iter (host+device)", "right"),
                         ("prep ms", "right"), ("peak RSS MB", "right"),
                         ("iters", "right"), ("note", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for r in doc["cases"]:
        notes = [] if r["skipped"] else ["timed from the warm-up"] if r.get("timed_from_warmup") else []
        notes += [r[k] for k in ("ops_note", "ops_error") if r.get(k) and not r["skipped"]]
        if not r["skipped"] and r.get("cuda_graph_replays") and cuda:
            notes.append("GPU ops: a replay counts none of its kernels")
        if host_bound(r):
            notes.append("waits on its prep")
        note = r.get("reason", "") if r["skipped"] else "; ".join(notes)
        ops = r.get("device_ops_per_iter" if cuda else "ops_per_iter")
        table.add_row(r["name"], r["impl"], _num(r["tasks_per_s"], 2), _num(r["ms_per_iter"]), _num(ops, 0),
                      _num(host_ms(r), 2), _num(r["peak_rss_mb"], 0), str(r.get("iters", "")), note)
    console.print(table)
    _graph_table(doc, console)
    rt = Table(title="ratios (tasks/s ÷ tasks/s; CML/MAML: ms ÷ ms; ops: tasks per op ÷ tasks per op, a rough "
                     "guide to eager GPU launches, not to CPU speed)")
    for col in ("ratio", "value", "target", "met"):
        rt.add_column(col)
    for r in doc["ratios"]:
        rt.add_row(r["name"], _num(r["ratio"], 2) + ("×" if r["ratio"] is not None else ""),
                   _target(r["target_kind"], r["target"]), _met(r["meets_target"]))
    console.print(rt)
    memory = [t for t in doc["targets"] if t["name"].endswith("MiB")]
    for t in memory:
        console.print(f"{t['name']}: {_num(t['value'], 0)} (target {_target(t['kind'], t['target'])}: "
                      f"{_met(t['met']) or 'not measured'})")
    for p in doc["param_counts"]:
        console.print(f"saved parameters on {p['graph']}: CML {p['cml']}, MAML {p['maml']} "
                      f"({'equal' if p['equal'] else 'DIFFERENT' if p['equal'] is False else 'unknown'})")


#: A pipelined case (prefetch worker) whose step takes at most this much more than its host preparation is said to
#: be bound by that preparation: the step waits for the worker's next meta-batch.
HOST_BOUND_SLACK = 1.1


def host_ms(record: dict[str, Any]) -> float | None:
    """The host's time per meta-batch a pipelined case's prefetcher can reach: the faster of one preparation at a
    time and, with several build threads, their pooled time (:func:`cmlgraph.bench.worker.time_prepare`)."""
    figures = [v for v in (record.get("host_ms_per_iter"), record.get("host_pooled_ms_per_iter")) if v is not None]
    return min(figures) if figures else None


def host_bound(record: dict[str, Any]) -> bool:
    """Whether a pipelined case (``prefetch`` in its facts) ran about as slowly as its host's preparation of a
    meta-batch (``host_ms_per_iter``, :func:`cmlgraph.bench.worker.time_prepare`), i.e. waited on its worker."""
    host, step = host_ms(record), record.get("ms_per_iter")
    return bool(record.get("prefetch")) and host is not None and step is not None and \
        step <= HOST_BOUND_SLACK * host


def _target(kind: str | None, value: float | None) -> str:
    return "" if value is None else f"{kind} {value:g}"


def _met(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: ""}[met]


def _graph_table(doc: dict[str, Any], console: Console) -> None:
    by = {r["name"]: r for r in doc["cases"]}
    ratios = {r["name"]: r["ratio"] for r in doc["ratios"]}
    # Only the graph domain's cases (gmeta cases carry a graph too, but their ratios are in the ratio table).
    keys = list(dict.fromkeys(r["graph"] for r in doc["cases"] if r["graph"] and r["name"].startswith("graph/")))
    if not keys:
        return
    table = Table(title="graphs: tasks/s, and cmlgraph ÷ reference")
    for col in ("graph", "nodes", "khop", "full", "ref-a", "ref-b", "khop÷a", "khop÷b", "full÷a", "full÷b"):
        table.add_column(col, justify="left" if col == "graph" else "right")
    for key in keys:
        nodes = doc["settings"]["graphs"].get(key, {}).get("nodes")
        cells = [_num(by.get(f"graph/{key}/{v}", {}).get("tasks_per_s"), 2) for v in ("khop", "full", "ref-a",
                                                                                      "ref-b")]
        cells += [_num(ratios.get(f"graph/{key}:{m}/{ref}"), 1) for m in ("khop", "full") for ref in ("ref-a",
                                                                                                    "ref-b")]
        table.add_row(key, f"{nodes:,}" if isinstance(nodes, int) else "—", *cells)
    console.print(table)


def write_document(path: str | Path, doc: dict[str, Any]) -> None:
    """Write the JSON document atomically."""
    from cmlgraph.train.io import write_json

    write_json(path, doc)


__all__ = ["HOST_BOUND_SLACK", "compute_ratios", "host_bound", "host_ms", "machine_info", "param_counts",
           "print_tables", "target_checks", "write_document"]
