"""`cmlgraph compare`: tables equal the runs' summaries, finished runs are reused, pairs share test tasks."""

from __future__ import annotations

import csv
import json
import re

from cmlgraph.compare import run_compare, write_outputs

TINY = {"train": {"steps": 2, "meta_batch": 2, "val_tasks": 3, "test_tasks": 6, "val_every": 2}}


def test_compare_two_tiny_domains_matches_summaries_and_reuses_runs(tmp_path):
    trained = []
    cells = run_compare(["sinusoid", "digits"], ["maml"], [0, 1], tmp_path / "runs", TINY,
                        log=lambda m: trained.append(m) if "] training " in m else None)
    assert len(trained) == 8
    files = write_outputs(cells, tmp_path / "out")
    assert all(f.is_file() and f.stat().st_size > 0 for f in files)
    rows = list(csv.DictReader(open(tmp_path / "out" / "compare.csv")))
    assert [r["domain"] for r in rows] == ["sinusoid", "digits"]
    for row in rows:
        for arm in ("base", "cml"):
            means = [json.loads((tmp_path / "runs" / name / "summary.json").read_text())["mean"]
                     for name in row[f"{arm}_runs"].split(";")]
            assert float(row[f"{arm}_mean"]) == sum(means) / len(means)
        assert int(row["paired_tasks"]) == 12
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| sinusoid | maml | MSE |" in md and "| digits | maml | accuracy % |" in md
    again = []
    run_compare(["sinusoid", "digits"], ["maml"], [0, 1], tmp_path / "runs", TINY,
                log=lambda m: again.append(m))
    assert all(re.match(r"\[\d/8\] reusing", m) for m in again) and len(again) == 8


def test_execution_strategies_do_not_block_reuse_but_settings_do():
    from cmlgraph.compare import _key, domain_config

    base = domain_config("sinusoid", "maml", True, 0)
    other_exec = domain_config("sinusoid", "maml", True, 0, {"data": {"subgraph": "full", "subgraph_threshold": 7},
                                                             "train": {"batched": "off"}})
    assert _key(base) == _key(other_exec)
    assert _key(base) != _key(domain_config("sinusoid", "maml", True, 0, {"train": {"meta_lr": 0.5}}))
