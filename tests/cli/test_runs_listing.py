"""`cmlgraph runs`: finished, killed (resumable) and running run folders, table and --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cmlgraph.runs import list_runs, run_status
from cmlgraph.train.io import KILL_ENV
from cmlgraph.train.run_dir import RunLock


def _cli(args, cwd, kill_at=None):
    env = dict(os.environ)
    env.pop(KILL_ENV, None)
    env["COLUMNS"] = "250"  # one table row per line
    if kill_at:
        env[KILL_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "cmlgraph", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_runs_lists_finished_and_killed_runs(tmp_path):
    runs = tmp_path / "runs"
    common = ["--task", "sinusoid", "--steps", "6", "--val-every", "3", "--test-tasks", "3", "--quiet",
              "--runs-dir", runs]
    assert _cli(["train", *common, "--name", "done", "--no-cml"], tmp_path).returncode == 0
    killed = _cli(["train", *common, "--name", "a-killed", "--algo", "anil"], tmp_path, kill_at="step_end:5")
    assert killed.returncode == -9
    (runs / "notes").mkdir()  # not a run folder: ignored
    records = {r["name"]: r for r in list_runs(runs)}
    assert set(records) == {"done", "a-killed"}
    done, dead = records["done"], records["a-killed"]
    assert done["status"] == "finished" and done["metric"] == "mse" and done["mean"] is not None
    assert done["algorithm"] == "maml" and done["cml"] is False and done["dataset"] == "sinusoid"
    assert done["cmlgraph"] and done["step"] == 6
    assert dead["status"] == "resumable" and dead["mean"] is None and dead["algorithm"] == "anil" and dead["cml"]
    assert dead["step"] == 3 and dead["steps"] == 6  # the last logged step before the kill (validation at 3)
    assert dead["checkpoint_step"] == 3 and done["checkpoint_step"] is None  # read from checkpoint.pt, no torch
    assert [r["name"] for r in list_runs(runs)] == ["done", "a-killed"]  # by start time, not by name

    table = _cli(["runs", runs], tmp_path)
    assert table.returncode == 0 and "done" in table.stdout and "finished" in table.stdout
    assert "resumable from step 3/6" in table.stdout  # where --resume continues: the checkpoint of step 3
    # how big a run was, and that it warned: 6 of 6 steps, 3 test tasks, one warning (fewer than 500 test tasks)
    assert any("only 3 test tasks" in w for w in done["warnings"]) and dead["warnings"] == []
    row = next(ln for ln in table.stdout.splitlines() if " done " in ln)
    assert " 6/6 " in row and " ! 1 " in row and " 3 " in row and "gave N warnings" in table.stdout
    as_json = json.loads(_cli(["runs", runs, "--json"], tmp_path).stdout)
    assert {r["name"]: r["status"] for r in as_json} == {"done": "finished", "a-killed": "resumable"}

    with RunLock(runs / "a-killed"):  # a live process holds the folder
        assert {r["name"]: r["status"] for r in list_runs(runs)}["a-killed"] == "running"
    assert _cli(["train", "--resume", runs / "a-killed", "--quiet"], tmp_path).returncode == 0
    assert {r["name"]: r["status"] for r in list_runs(runs)}["a-killed"] == "finished"


def test_runs_on_a_missing_folder_is_one_line(tmp_path):
    res = _cli(["runs", tmp_path / "nothing"], tmp_path)
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_a_numerically_failed_run_is_listed_as_failed_not_resumable(tmp_path):
    # resuming a run stopped by a non-finite step (nan_policy stop) or by every meta-batch skipped repeats the same
    # steps and the same failure: the listing says failed, with the message, not resumable
    runs = tmp_path / "runs"
    common = ["--task", "sinusoid", "--steps", "6", "--val-every", "3", "--test-tasks", "3", "--quiet",
              "--runs-dir", runs, "--inner-lr", "1e38"]
    stopped = _cli(["train", *common, "--name", "nan-stop"], tmp_path)
    skipped = _cli(["train", *common, "--name", "nan-skip", "--nan-policy", "skip"], tmp_path)
    assert stopped.returncode == 2 and skipped.returncode == 2, (stopped.stderr, skipped.stderr)
    records = {r["name"]: r for r in list_runs(runs)}
    assert records["nan-stop"]["status"] == "failed" and "non-finite" in records["nan-stop"]["error"]
    skip = records["nan-skip"]
    assert skip["status"] == "failed" and "all 6 meta-batches were skipped" in skip["error"]
    table = _cli(["runs", runs], tmp_path)
    assert "nan-skip failed" in table.stdout and "resumable" not in table.stdout
    # the step that failed (its message's), not the last logged one (0: the losses are read back in batches)
    assert records["nan-stop"]["step"] == 1 and "at step 1 of 6" in records["nan-stop"]["error"]
    assert run_status(records["nan-stop"]) == "failed at step 1/6" and run_status(skip) == "failed at step 6/6"
    assert "failed at step 1/6" in " ".join(table.stdout.split())
    # tried again: failed again (a killed attempt would be resumable, not failed: the record is removed first)
    assert _cli(["train", "--resume", runs / "nan-skip", "--quiet"], tmp_path).returncode == 2
    assert {r["name"]: r["status"] for r in list_runs(runs)}["nan-skip"] == "failed"


def test_piped_runs_keeps_each_name_on_one_line_and_an_empty_folder_says_so(tmp_path):
    """``cmlgraph runs | grep`` at the default 80 columns folded long run names over two lines (a new-user trial
    could not copy them); an empty folder printed an empty table with no hint."""
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in (KILL_ENV, "COLUMNS")}
    listing = subprocess.run([sys.executable, "-m", "cmlgraph", "runs", str(runs)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0 and "no run folders in" in listing.stdout and "┏" not in listing.stdout
    name = "sinusoid-maml-a-rather-long-run-name-of-a-sweep-seed-0001"
    assert _cli(["train", "--task", "sinusoid", "--steps", "2", "--val-every", "2", "--test-tasks", "3", "--quiet",
                 "--runs-dir", runs, "--name", name], tmp_path).returncode == 0
    listing = subprocess.run([sys.executable, "-m", "cmlgraph", "runs", str(runs)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert any(name in line for line in listing.stdout.splitlines()), listing.stdout
    one = subprocess.run([sys.executable, "-m", "cmlgraph", "runs", str(runs / name)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # a run folder itself: listed, not "none"
    assert one.returncode == 0 and any(name in line for line in one.stdout.splitlines()), one.stdout
