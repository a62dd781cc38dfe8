"""scripts/predict_demo.py writes under runs/ by default; no demo output is tracked at the root (issue 19 item 9)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "predict_demo.py"


def test_support_defaults_to_runs_predict_demo(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "support", "synthetic", "--shots", "2"], cwd=tmp_path, check=True,
                   capture_output=True, text=True)
    out = tmp_path / "runs" / "predict-demo" / "labels.csv"
    assert out.is_file()
    assert not (tmp_path / "labels.csv").exists()
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["label"].startswith("class-") for r in rows)


def test_no_demo_csv_tracked_at_the_repository_root() -> None:
    tracked = subprocess.run(["git", "ls-files", "labels.csv", "predictions.csv"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split()
    assert tracked == []
