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
