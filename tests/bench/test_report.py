"""``cmlgraph bench``'s printed tables (no timing: hand-written documents)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from cmlgraph.bench.report import print_tables


def _doc(names: list[str]) -> dict[str, Any]:
    cases = [{"name": n, "impl": "cmlgraph" if n.endswith(("khop", "batched")) else "reference-a",
              "graph": n.split("/")[1], "skipped": False, "tasks_per_s": 2.0, "ms_per_iter": 500.0,
              "peak_rss_mb": 100.0, "iters": 3} for n in names]
    return {"cases": cases, "ratios": [], "targets": [], "param_counts": [],
            "settings": {"quick": False, "graphs": {"g": {"nodes": 10}, "amazon-computers": {"nodes": 13752}}},
            "machine": {"device": "cpu", "torch_threads": 1}}


def _printed(doc: dict[str, Any]) -> str:
    console = Console(record=True, width=160)
    print_tables(doc, console)
    return console.export_text()


def test_gmeta_only_bench_prints_no_empty_graph_table() -> None:
    text = _printed(_doc(["gmeta/amazon-computers/batched", "gmeta/amazon-computers/per-node"]))
    assert "gmeta/amazon-computers/batched" in text
    assert "graphs: tasks/s" not in text


def test_graph_bench_prints_its_graph_table() -> None:
    text = _printed(_doc(["graph/g/khop", "graph/g/ref-a", "gmeta/amazon-computers/batched"]))
    table = text[text.index("graphs: tasks/s"):]
    assert "g " in table and "amazon-computers" not in table.split("\n\n")[0]


def test_the_host_preparation_is_a_column_and_a_pipelined_case_waiting_on_it_says_so() -> None:
    from cmlgraph.bench.report import host_bound

    doc = _doc(["graph/g/khop", "graph/g/khop-prefetch", "graph/g/ref-a"])
    by = {c["name"]: c for c in doc["cases"]}
    by["graph/g/khop"].update(host_ms_per_iter=490.0)  # not pipelined: its step includes the preparation
    by["graph/g/khop-prefetch"].update(host_ms_per_iter=480.0, prefetch=True)  # 500 ms a step: waits on it
    text = _printed(doc)
    assert "prep ms" in text and "480.00" in text and "490.00" in text
    assert "timed apart from the step" in " ".join(text.split())  # the column's caption says what it is
    assert text.count("waits on its prep") == 1
    assert host_bound(by["graph/g/khop-prefetch"]) and not host_bound(by["graph/g/khop"])
    by["graph/g/khop-prefetch"]["host_ms_per_iter"] = 100.0  # the step is 5x its preparation: the GPU's own time
    assert not host_bound(by["graph/g/khop-prefetch"])
