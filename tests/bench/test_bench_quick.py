"""``cmlgraph bench --quick --json`` runs end to end and writes a well-formed document (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CASE_KEYS = {"name": str, "impl": str, "skipped": bool}
NUMBERS = ("tasks_per_s", "ms_per_iter", "peak_rss_mb")


def test_quick_bench_writes_every_case(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "cmlgraph", "bench", "--quick", "--json", str(out),
                           "--budget", "0.5"], capture_output=True, text=True, timeout=85, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())

    names = [c["name"] for c in doc["cases"]]
    assert len(names) == len(set(names))
    assert {"sinusoid/mlp/batched", "sinusoid/mlp/loop", "graph/synthetic-10k/khop", "graph/synthetic-10k/ref-a",
            "graph/synthetic-10k/ref-b", "graph/synthetic-10k/khop-maml",
            "graph/synthetic-10k/khop-prefetch"} <= set(names)
    for case in doc["cases"]:
        for key, kind in CASE_KEYS.items():
            assert isinstance(case[key], kind), (case["name"], key)
        assert not case.get("error"), case
        for key in NUMBERS:
            value = case[key]
            if case["skipped"]:
                assert value is None or isinstance(value, (int, float))
            else:
                assert isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, (case, key)
        if case["skipped"]:
            assert isinstance(case["reason"], str) and case["reason"]
        elif case.get("ops_error"):  # a reference whose cycle outlasts the count's limit is not run again for it
            assert case["impl"].startswith("reference") and case["ops_error"].startswith("not counted:"), case
        else:  # each run case's ops per meta-iteration, counted after its timing
            assert case["ops_per_iter"] > 0 and case["tasks_per_kop"] > 0, case
            if case["impl"] == "cmlgraph" and case["domain"] == "graph":  # its host's preparation, timed apart
                assert case["host_ms_per_iter"] > 0 and case["host_bound_tasks_per_s"] > 0, case
    prefetch = next(c for c in doc["cases"] if c["name"] == "graph/synthetic-10k/khop-prefetch")
    assert "the step only" in prefetch["ops_note"]  # its worker's ops run in another thread: said, not compared

    assert doc["ratios"]
    for ratio in doc["ratios"]:
        assert ratio["numerator"] in names and ratio["denominator"] in names
        assert isinstance(ratio["name"], str)
        assert ratio["ratio"] is None or (isinstance(ratio["ratio"], float) and ratio["ratio"] > 0)

    ops = {r["name"]: r for r in doc["ratios"] if r["metric"] == "tasks_per_kop"}
    ref_a = next(c for c in doc["cases"] if c["name"] == "graph/synthetic-10k/ref-a")
    if ref_a.get("ops_error"):  # a slow machine: reference (a)'s cycle outlasted the count's limit, said so
        assert ops["graph/synthetic-10k:khop/ref-a ops"]["ratio"] is None and "a cycle takes" in ref_a["ops_error"]
    else:
        assert ops["graph/synthetic-10k:khop/ref-a ops"]["ratio"] > 1  # fewer ops a task than the reference
    assert ops["sinusoid/mlp:batched/loop ops"]["ratio"] > 1  # vmap: one launch for the meta-batch's tasks

    machine = doc["machine"]
    assert isinstance(machine["cpu_count"], int) and machine["cpu_count"] > 0
    assert isinstance(machine["torch"], str) and machine["device"] == "cpu"
    assert doc["param_counts"] and all(p["equal"] for p in doc["param_counts"])
    assert "graph/synthetic-10k/khop" in proc.stdout  # the table
