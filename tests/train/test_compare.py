"""`cmlgraph compare`: tables equal the runs' summaries, finished runs are reused, pairs share test tasks."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from cmlgraph.compare import run_compare, write_outputs
from cmlgraph.errors import ConfigError

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


def test_a_training_free_baseline_is_a_reference_row_without_a_cml_arm(tmp_path):
    """``--algos maml,sgc-proto``: the baseline is not meta-trained, so it has no CML arm. It is run once a seed and
    shown as a reference row, not as a "with CML" result equal to its own base runs with a difference of +0.00 ± 0.00
    (a new-user trial, session 41)."""
    trained: list[str] = []
    cells = run_compare(["synthetic"], ["maml", "sgc-proto"], [0, 1], tmp_path / "runs", TINY,
                        log=lambda m: trained.append(m) if "] training " in m else None)
    assert len(trained) == 6  # maml's 2 arms × 2 seeds, sgc-proto's one run a seed
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if "sgc-proto" in p.name) == [
        "synthetic-sgc-proto-base-s0", "synthetic-sgc-proto-base-s1"]
    base, ref = cells
    assert not base.training_free and ref.training_free
    write_outputs(cells, tmp_path / "out")
    rows = {r["algorithm"]: r for r in csv.DictReader(open(tmp_path / "out" / "compare.csv"))}
    assert rows["sgc-proto"]["cml_mean"] == rows["sgc-proto"]["diff_mean"] == rows["sgc-proto"]["cml_runs"] == ""
    assert rows["sgc-proto"]["training_free"] == "True" and rows["maml"]["cml_mean"] != ""
    means = [json.loads((tmp_path / "runs" / f"synthetic-sgc-proto-base-s{s}" / "summary.json").read_text())["mean"]
             for s in (0, 1)]
    assert float(rows["sgc-proto"]["base_mean"]) == pytest.approx(sum(means) / 2)
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| synthetic | sgc-proto (training-free) | accuracy % |" in md and "| — | — | — | 2 | 12 |" in md
    assert "no CML arm" in md


def test_execution_strategies_do_not_block_reuse_but_settings_do():
    from cmlgraph.compare import _key, domain_config

    base = domain_config("sinusoid", "maml", True, 0)
    other_exec = domain_config("sinusoid", "maml", True, 0, {"data": {"subgraph": "full", "subgraph_threshold": 7},
                                                             "train": {"batched": "off"}})
    assert _key(base) == _key(other_exec)
    assert _key(base) != _key(domain_config("sinusoid", "maml", True, 0, {"train": {"meta_lr": 0.5}}))


def test_an_unknown_domain_is_refused_before_anything_is_written(tmp_path):
    """A misspelled domain used to be taken for a graph (a graph-preset note, "[1/2] training ...", then an error
    listing only graphs, and an empty runs folder); now it is refused first, naming the task domains too."""
    import pytest

    from cmlgraph.compare import check_domains, run_compare
    from cmlgraph.domains.graph import register_graph
    from cmlgraph.errors import ConfigError
    from cmlgraph.graphs import from_arrays

    logged: list[str] = []
    with pytest.raises(ConfigError, match=r"unknown domain 'sinusiod' \(did you mean 'sinusoid'\?\); valid: "
                                          r"sinusoid, omniglot, digits, or a graph: .*cora"):
        run_compare(["sinusiod"], ["maml"], [0], tmp_path / "runs", log=logged.append)
    assert not logged and not (tmp_path / "runs").exists()
    check_domains(["sinusoid", "digits", "omniglot", "cora", "Amazon_Computers", "synthetic"])  # all valid
    gen = torch.Generator().manual_seed(0)
    name = register_graph(from_arrays(torch.randint(0, 30, (2, 60), generator=gen), torch.randn(30, 4, generator=gen),
                                      torch.arange(30) % 6, name="compare-user-graph", split="2/2/2"))
    check_domains([name])  # a user's graph registered in this process is a domain too


def test_a_graph_file_is_refused_naming_the_leaderboard(tmp_path):
    with pytest.raises(ConfigError, match=r"'g\.npz' is a graph file.*cmlgraph leaderboard --graphs g\.npz"):
        run_compare(["g.npz"], ["maml"], [0], tmp_path / "runs", log=lambda m: None)
    assert not (tmp_path / "runs").exists()


def test_an_unknown_algorithm_is_refused_naming_the_flag_given(tmp_path):
    """``--algos mamlx`` used to be reported as ``--algo = 'mamlx'`` (the per-run check), a flag compare has not."""
    import pytest

    from cmlgraph.compare import run_compare
    from cmlgraph.errors import ConfigError

    logged: list[str] = []
    with pytest.raises(ConfigError, match=r"--algos: unknown algorithm 'mamlx' \(did you mean 'maml'\?\); valid: "
                                          r"maml, anil"):
        run_compare(["sinusoid"], ["anil", "mamlx"], [0], tmp_path / "runs", log=logged.append)
    assert not logged and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("parallel_runs", [1, 2])
def test_a_stopped_run_is_resumed_by_the_next_compare_not_trained_again(tmp_path, monkeypatch, parallel_runs):
    """Ctrl-C stops a comparison during its first run (a checkpoint at step 4; with ``--parallel-runs 2`` both runs
    of the group stop there); the same compare run again resumes the stopped runs from step 4 instead of training
    them from step 0 (their folders used to be replaced), and every folder ends equal to an uninterrupted
    comparison's."""
    from cmlgraph.train.interrupt import stopped_gracefully
    from cmlgraph.train.io import load_torch
    from tests.conftest import ctrl_c_at

    settings = {"train": {"steps": 6, "meta_batch": 2, "val_tasks": 3, "test_tasks": 6, "val_every": 3}}
    run_compare(["sinusoid"], ["maml"], [0], tmp_path / "ref", settings, log=lambda m: None)
    # the group's steps alternate between its two runs: the 7th is the first run's step 4
    with ctrl_c_at(monkeypatch, "step_end:4:INT" if parallel_runs == 1 else "step_end:7:INT"), \
            pytest.raises(KeyboardInterrupt, match="at step 4 of 6, checkpoint written") as stop:
        run_compare(["sinusoid"], ["maml"], [0], tmp_path / "runs", settings, log=lambda m: None,
                    parallel_runs=parallel_runs)
    assert stopped_gracefully(stop.value)
    stopped = [p.parent for p in (tmp_path / "runs").glob("*/checkpoint.pt")]
    assert len(stopped) == parallel_runs and not any((f / "summary.json").exists() for f in stopped)
    logs: list[str] = []
    run_compare(["sinusoid"], ["maml"], [0], tmp_path / "runs", settings, log=logs.append, parallel_runs=parallel_runs)
    for folder in stopped:
        assert sum(f"resuming {folder} from its checkpoint at step 4" in m for m in logs) == 1, logs
    assert sum("] training " in m for m in logs) == 2 - parallel_runs  # only what never started is trained
    ref = sorted(p.name for p in (tmp_path / "ref").iterdir() if p.is_dir())
    assert ref == sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()) and len(ref) == 2
    for name in ref:
        a, b = (load_torch(tmp_path / d / name / "model.pt") for d in ("ref", "runs"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_runs_that_kept_their_untrained_start_are_named_under_the_table(tmp_path):
    """A new-user trial's MAML arms both kept the step-0 start (best validation at step 0) and the table showed
    a CML − base difference of +0.00 as if it were a result; the runs are now named, and what that means."""
    from cmlgraph.compare import Cell, kept_its_start

    assert kept_its_start({"steps_run": 40, "best_step": 0}) and not kept_its_start({"steps_run": 40, "best_step": 8})
    assert not kept_its_start({"steps_run": 0, "best_step": 0})  # a training-free run trains nothing
    cell = Cell("accuracy", (0.9, 0.1), (0.9, 0.1), (0.0, 0.0), 2, 200, ["b0", "b1"], ["c0", "c1"],
                kept_start=["b0", "b1", "c0", "c1"], domain="mysbm", algorithm="maml")
    write_outputs([cell], tmp_path)
    md = " ".join((tmp_path / "compare.md").read_text().split())
    assert "4 of 4 mysbm maml runs kept their step-0 parameters" in md and "b0, b1, c0, c1" in md
    assert "compares starts, not meta-learning" in md
    cell.kept_start = []
    write_outputs([cell], tmp_path)
    assert "step-0" not in (tmp_path / "compare.md").read_text()


def test_a_ci_that_rounds_to_zero_says_every_seed_gave_the_same_value():
    """Two seeds whose differences were equal gave "-0.08 ± 0.00", which read as perfect precision (a trial)."""
    from cmlgraph.compare import _fmt

    assert _fmt(-0.0008, 1.9e-8, "accuracy") == "-0.08 ± 0.00 (every seed the same)"
    assert _fmt(0.5, 0.01, "accuracy") == "50.00 ± 1.00" and _fmt(0.5, None, "accuracy") == "50.00 (1 seed, no CI)"
