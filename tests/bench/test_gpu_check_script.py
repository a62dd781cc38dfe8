"""scripts/gpu_check.sh parses, and without a GPU exits 0 with its message before running anything."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


def test_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path only")
def test_no_gpu_exits_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("python,message", [(None, "no python on PATH"),
                                            ("#!/bin/sh\nexit 1\n", "cannot import torch")])
def test_a_missing_environment_is_not_reported_as_no_gpu(tmp_path: Path, python, message) -> None:
    """Without the project's python (or with one lacking torch) the check fails loudly (exit 2), instead of saying
    "no CUDA device" and exiting 0 on a machine that may well have a GPU."""
    shims = tmp_path / "bin"
    shims.mkdir()
    if python is not None:
        (shims / "python").write_text(python)
        (shims / "python").chmod(0o755)
    env = {"PATH": str(shims), "HOME": str(tmp_path)}
    bash = subprocess.run(["bash", "-c", "command -v bash"], capture_output=True, text=True).stdout.strip()
    proc = subprocess.run([bash, str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 2 and message in proc.stderr, (proc.returncode, proc.stderr)
    assert "no CUDA device" not in proc.stdout


def _bench_calls(tmp_path: Path, data_root: Path) -> list[list[str]]:
    """Runs the script against a ``python`` shim that claims a GPU and records each call; returns the bench calls."""
    shims, log = tmp_path / "bin", tmp_path / "calls.log"
    shims.mkdir()
    (shims / "python").write_text('#!/bin/bash\n[ "$1" = - ] && cat > /dev/null\n'
                                  f'(IFS=$\'\\t\'; echo "$*") >> {log}\nexit 0\n')
    (shims / "python").chmod(0o755)
    env = {"PATH": f"{shims}:/usr/bin:/bin", "HOME": str(tmp_path), "CMLGRAPH_DATA": str(data_root)}
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    calls = [line.split("\t") for line in log.read_text().splitlines()]
    return [c for c in calls if c[:3] == ["-m", "cmlgraph", "bench"]]


def test_the_bench_calls_cover_the_khop_and_gmeta_ratios_the_issue_asks_for(tmp_path: Path) -> None:
    """The benches the script starts hold the k-hop and the G-Meta cases whose ratios it prints (a ``--quick`` bench
    has no G-Meta case, so asking one for the G-Meta figure printed nothing)."""
    from cmlgraph.bench.cases import build_cases, build_ratios

    data = tmp_path / "data"
    (data / "amazon_computers").mkdir(parents=True)
    ratios = set()
    for call in _bench_calls(tmp_path, data):
        assert "--device" in call and call[call.index("--device") + 1] == "cuda"
        domains = call[call.index("--domains") + 1].split(",") if "--domains" in call else None
        ratios |= {r.name for r in build_ratios(build_cases("--quick" in call, domains=domains))}
    assert "gmeta/amazon-computers:batched/per-node" in ratios
    assert any(name.startswith("graph/synthetic-10k:khop/ref-a") for name in ratios), ratios


def test_without_amazon_computer_the_gmeta_bench_is_skipped_with_a_message(tmp_path: Path) -> None:
    calls = _bench_calls(tmp_path, tmp_path / "empty")
    assert all("gmeta" not in " ".join(c) for c in calls)
