"""scripts/time_gmeta_blocks.py (the docs' G-Meta per-task blocks timings) runs and times both modes on the rows
each projects."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "time_gmeta_blocks.py"


def test_both_modes_are_timed_on_their_own_rows(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "synthetic", "--graph-nodes", "600", "--tasks", "3",
                          "--nodes", "6", "--reps", "2", "--rounds", "1"], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout
    rows = {m.group(1): int(m.group(2)) for m in re.finditer(r"T=3 n=6 (union|blocks) +pass .* rows +(\d+)", out)}
    assert set(rows) == {"union", "blocks"}, out
    assert rows["union"] < rows["blocks"] <= 3 * rows["union"]  # Σ U_t: at least the union, at most T times it
