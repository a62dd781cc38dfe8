"""scripts/time_host_prep.py (docs/gpu.md, "Host work per meta-batch") prints its figures as JSON, and without
Amazon-Computer says on stderr that it left the G-Meta rows out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "time_host_prep.py"


def test_the_k_hop_figures_are_printed_and_missing_data_is_said(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CMLGRAPH_DATA"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "2", "--data-root", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {"khop-gcn ms/batch", "khop-sgc ms/batch", "build_plan support ms", "build_plan query ms"}
    assert all(v > 0 for v in out.values())
    assert "G-Meta not timed" in proc.stderr and "--data-root" in proc.stderr


def test_a_worker_count_below_one_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--workers", "0"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--workers 0: must be >= 1" in proc.stderr


def test_workers_time_the_prefetchers_builders(monkeypatch) -> None:
    """``--workers N``: the k-hop preparation also through the trainer's prefetcher with 1 and N build threads and
    with N build processes (in process here, the processes stood in by threads: spawning them beside the rest of
    the suite on 2 cores starved its other tests; tests/domains/test_tree_builds.py spawns real ones)."""
    import importlib.util

    from cmlgraph.domains.graph import GraphDomain

    spec = importlib.util.spec_from_file_location("time_host_prep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    asked: list[tuple[str, int]] = []
    monkeypatch.setattr(GraphDomain, "host_build", lambda self, device, workers=1: asked.append((device, workers)))
    out = module.khop(1, workers=2)
    assert {"khop-gcn ms/batch, 1 build threads", "khop-gcn ms/batch, 2 build threads",
            "khop-gcn ms/batch, 2 build processes"} <= set(out) and all(v > 0 for v in out.values())
    assert asked == [("cpu", 2)]
