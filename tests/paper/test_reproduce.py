"""`cmlgraph reproduce`: cells trained from the paper's configs, reused like compare, reported beside the paper.

The Table 3 path is tested with a stand-in config (MAML on a tiny synthetic graph) in a temporary config folder,
so the test needs neither the real table3 configs nor their data.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from cmlgraph.errors import ConfigError
from cmlgraph.paper.cells import PAPER_CONFIGS, PaperCell
from cmlgraph.paper.reproduce import run_reproduce, write_reproduce

TINY_GRAPH = """
data: {task: graph, graph: synthetic, synthetic_nodes: 300, synthetic_classes: 12, queries: 3}
model: {gnn: sgc, hidden: 8}
algo: {algo: maml, cml: true, inner_steps: 1, inner_lr: 0.5}
train: {steps: 3, meta_batch: 2, val_every: 3, val_tasks: 3, test_tasks: 6}
"""
TINY = {"train": {"meta_batch": 2, "val_every": 2, "val_tasks": 3, "test_tasks": 5}}
CELL = PaperCell("table3", "table3-gmeta.yaml", "synthetic", "gmeta", 2, 1, 55.15, 61.17)
MISSING = PaperCell("table3", "table3-gmeta.yaml", "cora-full", "gmeta", 5, 1, 60.44, 60.49)


@pytest.fixture()
def configs(tmp_path: Path) -> Path:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "table3-gmeta.yaml").write_text(TINY_GRAPH)
    return folder


def test_table3_path_pairs_runs_reports_paper_and_reuses(tmp_path, configs):
    logs: list[str] = []
    results = run_reproduce([CELL, MISSING], tmp_path / "runs", runs=2, steps=2, configs_dir=configs,
                            data_root=str(tmp_path / "no-data"), log=logs.append)
    assert sum("training" in m for m in logs) == 4 and any("not running table3/cora-full" in m for m in logs)
    assert results[1].skipped and "cora.npz" in results[1].skipped and results[1].paired is None
    files = write_reproduce(results, tmp_path / "out")
    assert [f.name for f in files] == ["reproduce.md", "reproduce.csv"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "reproduce.csv")))
    assert [r["id"] for r in rows] == [CELL.id, MISSING.id] and rows[1]["runs"] == "0"
    row = rows[0]
    assert float(row["paper_base"]) == 55.15 and float(row["paper_diff"]) == pytest.approx(6.02)
    for arm, cml in (("base", False), ("cml", True)):
        summaries = [json.loads((tmp_path / "runs" / n / "summary.json").read_text())
                     for n in row[f"{arm}_runs"].split(";")]
        assert [s["cml"] for s in summaries] == [cml, cml] and [s["seed"] for s in summaries] == [0, 1]
        assert all(s["steps"] == 2 and s["ways"] == 2 and s["shots"] == 1 for s in summaries)  # steps capped
        assert float(row[f"{arm}_mean"]) == pytest.approx(100 * sum(s["mean"] for s in summaries) / 2)
    diffs = [float(c - b) for nb, nc in zip(row["base_runs"].split(";"), row["cml_runs"].split(";"), strict=True)
             for b, c in zip(torch.load(tmp_path / "runs" / nb / "scores.pt")["scores"],
                             torch.load(tmp_path / "runs" / nc / "scores.pt")["scores"], strict=True)]
    assert int(row["paired_tasks"]) == 12 and float(row["diff_mean"]) == pytest.approx(100 * sum(diffs) / 12)
    # the paired CI over runs: one difference of test means per seed, Student-t with 1 degree of freedom (12.71)
    per_seed = [sum(diffs[:6]) / 6, sum(diffs[6:]) / 6]
    assert float(row["diff_ci95"]) == pytest.approx(100 * 12.7062 * abs(per_seed[0] - per_seed[1]) / 2, rel=1e-4)
    md = (tmp_path / "out" / "reproduce.md").read_text()
    assert "| table3 | synthetic, 2-way 1-shot | G-Meta | accuracy % | 55.15 |" in md
    assert "not run: data missing" in md and "Tan et al." in md
    # runs cut short by --steps are flagged against the paper config's length (3 steps in the stand-in config)
    assert "**Not the paper's settings**" in md and f"- {CELL.id}: meta-iterations capped at 2 (paper config: 3)" in md
    warned = next(ln for ln in md.splitlines() if "only 6 test tasks" in ln)  # the runs' own warnings, once per kind
    assert "**Warnings of the runs**" in md and warned.startswith(f"- {CELL.id}: ") and "(4 runs: " in warned
    again: list[str] = []
    run_reproduce([CELL], tmp_path / "runs", runs=2, steps=2, configs_dir=configs, log=again.append)
    assert len(again) == 4 and all("reusing" in m for m in again)
    # one run per arm: no spread over runs to report, so no "± 0.00"; the paired difference pools tasks and keeps one
    one = run_reproduce([CELL], tmp_path / "runs", runs=1, steps=2, configs_dir=configs, log=lambda m: None)
    write_reproduce(one, tmp_path / "one")
    line = next(ln for ln in (tmp_path / "one" / "reproduce.md").read_text().splitlines() if "| G-Meta |" in ln)
    cols = [c.strip() for c in line.split("|")]
    assert cols[6].endswith("(1 run, no CI)") and cols[8].endswith("(1 run, no CI)")
    assert cols[10].endswith("(1 run, no CI)") and cols[11].startswith("± ") and cols[12] == "1"
    single = next(csv.DictReader(open(tmp_path / "one" / "reproduce.csv")))
    assert single["base_ci95"] == single["cml_ci95"] == single["diff_ci95"] == "" and single["diff_ci95_tasks"] != ""


def test_missing_config_is_a_clear_error_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"table3-gmeta\.yaml do not exist.*--only"):
        run_reproduce([CELL], tmp_path / "runs", runs=1, configs_dir=tmp_path, train_fn=pytest.fail)
    assert not (tmp_path / "runs").exists()


def test_a_bad_cell_setting_fails_before_any_run(tmp_path, configs):
    bad = PaperCell("table3", "table3-gmeta.yaml", "synthetic", "gmeta", 1, 1)
    with pytest.raises(ConfigError, match="--ways 1"):
        run_reproduce([CELL, bad], tmp_path / "runs", runs=1, configs_dir=configs, train_fn=pytest.fail)


def test_sinusoid_cells_from_paper_config_and_figure2_fits_match_evaluation(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(PAPER_CONFIGS / "sinusoid.yaml", configs / "sinusoid.yaml")
    cells = [PaperCell("sinusoid", "sinusoid.yaml", "sinusoid", "maml", None, k) for k in (5, 10)]
    results = run_reproduce(cells, tmp_path / "runs", runs=1, steps=3, overrides=TINY, configs_dir=configs,
                            log=lambda m: None)
    files = write_reproduce(results, tmp_path / "out")
    assert (tmp_path / "out" / "figure2.png") in files and (tmp_path / "out" / "figure2.png").stat().st_size > 0
    base, cml = results[1].pairs[0]
    for run, cml_on in ((base, False), (cml, True)):
        s = json.loads((run / "summary.json").read_text())
        assert (s["shots"], s["cml"], s["gamma"], s["co_depth"], s["steps"]) == (10, cml_on, 0.2, 1, 3)
    md = (tmp_path / "out" / "reproduce.md").read_text()
    assert "| sinusoid | sinusoid, K = 10 | MAML | MSE | — |" in md and "no sinusoid MSE" in md

    # The plotted fit is the evaluated prediction: on a run's first test task it gives that task's score.
    from cmlgraph.paper.figure2 import adapted_curve

    episodes = torch.load(cml / "test_episodes.pt")
    sx, sy, qx, qy = (episodes[k][0] for k in ("support_x", "support_y", "query_x", "query_y"))
    fit, steps = adapted_curve(cml, sx, sy, qx)
    assert steps == 1
    score = float(torch.load(cml / "scores.pt")["scores"][0])
    assert float(((fit - qy.reshape(-1)) ** 2).mean()) == pytest.approx(score, rel=1e-5)


def test_cli_lists_cells_with_data_status_and_rejects_unknown_selectors(tmp_path, capsys):
    from cmlgraph.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--only", "cifar"])
    assert exc.value.code == 2 and "--only 'cifar' matches no experiment" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--only", "sinusoid,cora-full", "--list", "--data-root", str(tmp_path)])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "sinusoid/maml/k20" in out and "table3/cora-full/gmeta/5way-5shot" in out
    assert "data missing (cora.npz" in out


def test_tlp_runs_add_tlps_own_100_task_figure(tmp_path, configs):
    """Runs under TLP's protocol carry TLP's 100-task figure (``tlp100_mean``); reproduce.md lists its mean over
    the runs beside the paper's numbers, in a table of its own, and only when every run has it."""
    results = run_reproduce([CELL], tmp_path / "runs", runs=2, steps=2, configs_dir=configs, log=lambda m: None)
    write_reproduce(results, tmp_path / "plain")
    assert "TLP's 100 tasks" not in (tmp_path / "plain" / "reproduce.md").read_text()  # runs without the figure
    for (base, cml), (vb, vc) in zip(results[0].pairs, ((0.60, 0.70), (0.62, 0.75)), strict=True):
        for run, value in ((base, vb), (cml, vc)):
            summary = json.loads((run / "summary.json").read_text())
            (run / "summary.json").write_text(json.dumps({**summary, "tlp100_mean": value}))
    results = run_reproduce([CELL], tmp_path / "runs", runs=2, steps=2, configs_dir=configs, log=lambda m: None)
    write_reproduce(results, tmp_path / "tlp")
    md = (tmp_path / "tlp" / "reproduce.md").read_text()
    assert "| synthetic, 2-way 1-shot | G-Meta | 55.15 | 61.00 | 61.17 | 72.50 |" in md
    row = next(csv.DictReader(open(tmp_path / "tlp" / "reproduce.csv")))
    assert float(row["base_tlp100"]) == pytest.approx(61.0) and float(row["cml_tlp100"]) == pytest.approx(72.5)


def test_other_settings_never_replace_finished_runs(tmp_path, configs):
    """A second call with another ``--steps`` trains new runs beside the finished ones (next free names) and
    deletes nothing; a killed (unfinished) folder of the same name is replaced."""
    first = run_reproduce([CELL], tmp_path / "runs", runs=1, steps=2, configs_dir=configs, log=lambda m: None)
    kept = {p: (p / "summary.json").read_bytes() for pair in first[0].pairs for p in pair}
    logs: list[str] = []
    second = run_reproduce([CELL], tmp_path / "runs", runs=1, steps=3, configs_dir=configs, log=logs.append)
    assert all((p / "summary.json").read_bytes() == b for p, b in kept.items())  # untouched
    new = [p for pair in second[0].pairs for p in pair]
    assert not set(new) & set(kept) and all(p.name.endswith("-1") for p in new)
    assert all(json.loads((p / "summary.json").read_text())["steps"] == 3 for p in new)
    assert sum("holds a finished run of other settings: kept" in m for m in logs) == 2
    # an unfinished folder of the planned name (a run killed before it finished) is replaced, not suffixed
    killed = tmp_path / "runs2" / new[0].name.removesuffix("-1")
    shutil.copytree(new[0], killed)
    (killed / "summary.json").unlink()
    third = run_reproduce([CELL], tmp_path / "runs2", runs=1, steps=4, configs_dir=configs, log=lambda m: None)
    assert third[0].pairs[0][0] == killed and (killed / "summary.json").is_file()
