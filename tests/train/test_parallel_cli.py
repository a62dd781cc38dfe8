"""``--parallel-runs N`` on ``compare``, ``leaderboard`` and ``reproduce``: grouping, reuse and bad values."""

from __future__ import annotations

import csv

import pytest

import cmlgraph.train.parallel as parallel
from cmlgraph.cli import main
from cmlgraph.compare import obtain_runs, run_compare

TINY = {"train": {"steps": 3, "meta_batch": 2, "val_tasks": 3, "test_tasks": 6, "val_every": 3}}


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    import cmlgraph.train.plots as plots

    monkeypatch.setattr(plots, "plot_run", lambda run_dir: [])


@pytest.fixture
def group_sizes(monkeypatch) -> list[int]:
    sizes: list[int] = []
    original = parallel.train_parallel

    def spy(cfgs, console=None, progress=True):
        sizes.append(len(cfgs))
        return original(cfgs, console, progress)

    monkeypatch.setattr(parallel, "train_parallel", spy)
    return sizes


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_compare_parallel_equals_one_by_one_and_reuses(tmp_path, group_sizes):
    logs: list[str] = []
    run_compare(["sinusoid"], ["maml"], [0, 1, 2], tmp_path / "one", TINY, log=lambda m: None)
    assert group_sizes == []  # the default trains one run after another
    cells = run_compare(["sinusoid"], ["maml"], [0, 1, 2], tmp_path / "par", TINY, log=logs.append, parallel_runs=2)
    assert group_sizes == [2, 2, 2]  # 6 runs of one shape (3 seeds x 2 arms) in groups of at most 2
    assert sum("together with 1 more" in m for m in logs) == 6
    one = run_compare(["sinusoid"], ["maml"], [0, 1, 2], tmp_path / "one", TINY, log=lambda m: None)
    for a, b in zip(one, cells, strict=True):
        assert a.base[0] == pytest.approx(b.base[0], rel=1e-5) and a.cml[0] == pytest.approx(b.cml[0], rel=1e-5)
        assert a.diff[0] == pytest.approx(b.diff[0], rel=1e-4, abs=1e-7)
    again: list[str] = []
    run_compare(["sinusoid"], ["maml"], [0, 1, 2], tmp_path / "par", TINY, log=again.append, parallel_runs=4)
    assert len(again) == 6 and all("reusing" in m for m in again)
    assert len(group_sizes) == 3  # nothing trained


def test_identical_missing_runs_train_once(tmp_path, group_sizes):
    from cmlgraph.compare import domain_config

    cfgs = [domain_config("sinusoid", "maml", True, s, TINY) for s in (0, 0, 1)]
    logs: list[str] = []
    paths = obtain_runs([(c, f"r{i}", logs.append) for i, c in enumerate(cfgs)], tmp_path, parallel_runs=3)
    assert paths[0] == paths[1] != paths[2] and group_sizes == [2]
    assert any(m.startswith("reusing") for m in logs)


def test_compare_cli_flag(tmp_path, capsys, group_sizes):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--domains", "sinusoid", "--seeds", "0,1", "--steps", "2", "--test-tasks", "6",
              "--runs-dir", str(tmp_path), "--parallel-runs", "2"])
    assert exit_.value.code == 0
    assert group_sizes == [2, 2]
    rows = _rows(tmp_path / "compare.csv")
    assert rows[0]["seeds"] == "2"


@pytest.mark.parametrize("command", [["compare", "--domains", "sinusoid"], ["leaderboard", "--graphs", "cora"],
                                     ["reproduce", "--only", "sinusoid"]])
@pytest.mark.parametrize("bad", ["0", "-3"])
def test_bad_parallel_runs_is_refused(tmp_path, capsys, command, bad):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--runs-dir", str(tmp_path / "runs"), "--parallel-runs", bad])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"--parallel-runs {bad}" in err and "at least 1" in err
    assert not (tmp_path / "runs").exists()


def test_training_free_baselines_in_a_group_finish_and_equal_their_runs_alone(tmp_path):
    """A leaderboard with --parallel-runs 3 stopped at its first group (session 27): three sgc-proto seeds were
    scored when their group opened and then stepped as if they trained ("it has no meta-gradients")."""
    from cmlgraph.api import make_config
    from cmlgraph.train.parallel import raise_first_error, train_parallel
    from cmlgraph.train.trainer import train

    def cfg(seed, runs):
        c = make_config(task="graph", graph="synthetic", ways=2, shots=2, algo="sgc-proto", seed=seed,
                        test_tasks=20, val_tasks=10, synthetic_nodes=300, synthetic_classes=12)
        c.run.runs_dir, c.run.name = str(tmp_path / runs), f"s{seed}"
        return c

    results = train_parallel([cfg(s, "group") for s in (0, 1, 2)], progress=False)
    raise_first_error(results)
    for seed, res in zip((0, 1, 2), results, strict=True):
        assert res.error is None and res.summary is not None and res.summary["steps"] == 0
        _, alone = train(cfg(seed, "alone"), progress=False)
        assert res.summary["mean"] == pytest.approx(alone["mean"])
