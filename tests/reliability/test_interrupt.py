"""Ctrl-C (or SIGTERM) during meta-training: the step finishes, a checkpoint is written, and a resume ends
bit-identical to an uninterrupted run; a second signal stops at once (``cmlgraph/train/interrupt.py``).

The SIGINT is sent by the test hook (``CMLGRAPH_TEST_KILL_AT=<event>:<n>:INT``) from inside the run, so it arrives at
a known point. With :func:`conftest.tiny_settings` (8 steps) logs fall at steps 2,4,6,8, validations at 0,4,8 (3
tasks each, so ``eval`` events 1-3 are the start's validation and 4-6 step 4's) and checkpoints at 3,4,6,8.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import (
    assert_checkpoint_whole,
    assert_same_run,
    forked,
    metrics,
    reference_runs,
    tiny_settings,
    write_config,
)

from cmlgraph.runs import checkpoint_step, describe_run, run_status, run_step
from cmlgraph.train.interrupt import RunTerminated, StopRequest, run_stopped, stopped_gracefully
from cmlgraph.train.io import KILL_ENV, load_torch
from cmlgraph.train.trainer import resume
from tests.conftest import ctrl_c_at

VARIANTS = {
    "cml": {},
    "prefetch": {"train": {"prefetch": "on", "prefetch_workers": 2}},  # batches drawn ahead in a worker thread
}


def _settings(variant: str) -> dict:
    s = tiny_settings()
    for section, values in VARIANTS[variant].items():
        s.setdefault(section, {}).update(values)
    return s


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """One uninterrupted run per variant (forked like the interrupted ones)."""
    return reference_runs(tmp_path_factory.mktemp("ref"), {v: _settings(v) for v in VARIANTS})


def _interrupted(tmp_path: Path, variant: str, at: str, status: int = 130) -> Path:
    cfg = write_config(tmp_path, _settings(variant))
    code = forked(["train", "--config", str(cfg), "--runs-dir", str(tmp_path / "runs"), "--name", "k", "--quiet"], at)
    assert code == status, f"the signal at {at} did not stop the run with status {status} (exit code {code})"
    run = tmp_path / "runs" / "k"
    assert not (run / "summary.json").exists()
    assert_checkpoint_whole(run)
    return run


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_resumes_bit_identical(tmp_path, references, variant):
    run = _interrupted(tmp_path, variant, "step_end:5:INT")  # Ctrl-C during step 5, which has no checkpoint
    assert load_torch(run / "checkpoint.pt")["step"] == 5  # without the graceful stop: step 4's (1 step lost)
    assert checkpoint_step(run) == 5
    record = describe_run(run)
    assert record["status"] == "resumable" and record["checkpoint_step"] == 5
    assert run_status(record) == "resumable from step 5/8" and run_step(record) == 5
    assert [r["step"] for r in metrics(run)] == [2, 4]
    resume(run, progress=False)
    assert_same_run(references[variant], run)


@pytest.mark.parametrize("at", ["step_end:8:INT", "eval:8:INT"])
def test_ctrl_c_in_the_last_step_or_its_validation_stops_before_the_test(tmp_path, references, at):
    """The loop ends after the last step: a Ctrl-C then (found by a new-user trial) was announced, then ignored, and
    the test ran. It stops there too; a resume only tests."""
    run = _interrupted(tmp_path, "cml", at)
    assert load_torch(run / "checkpoint.pt")["step"] == 8 and not (run / "model.pt").exists()
    resume(run, progress=False)
    assert_same_run(references["cml"], run)


def test_a_second_ctrl_c_stops_at_once_and_the_last_checkpoint_resumes(tmp_path, references):
    # the first during step 4, the second during step 4's validation: no checkpoint of step 4 is written
    run = _interrupted(tmp_path, "cml", "step_end:4:INT,eval:5:INT")
    assert load_torch(run / "checkpoint.pt")["step"] == 3
    record = describe_run(run)
    # the steps column shows where a resume continues (3), not the last logged step (2, or 4 when logged later)
    assert run_status(record) == "resumable from step 3/8" and run_step(record) == 3
    resume(run, progress=False)
    assert_same_run(references["cml"], run)


def test_sigterm_stops_like_ctrl_c_with_status_143(tmp_path, references):
    """What a cluster's scheduler sends a preempted job: the step finishes, its checkpoint is written, exit 143."""
    run = _interrupted(tmp_path, "cml", "step_end:5:TERM", status=143)
    assert load_torch(run / "checkpoint.pt")["step"] == 5
    resume(run, progress=False)
    assert_same_run(references["cml"], run)


def test_a_second_sigterm_ends_the_process_at_once(tmp_path, references):
    run = _interrupted(tmp_path, "cml", "step_end:4:TERM,eval:5:TERM", status=-signal.SIGTERM)
    assert load_torch(run / "checkpoint.pt")["step"] == 3
    resume(run, progress=False)
    assert_same_run(references["cml"], run)


def test_ctrl_c_before_the_first_checkpoint_says_resume_restarts(tmp_path, references):
    run = _interrupted(tmp_path, "cml", "step_begin:1:INT,step_end:1:INT")  # twice in step 1: no checkpoint
    assert not (run / "checkpoint.pt").exists()
    assert run_status(describe_run(run)) == "resumable (no checkpoint: restarts at step 0/8)"
    resume(run, progress=False)
    assert_same_run(references["cml"], run)


def test_the_cli_says_where_it_stopped_and_how_to_resume(tmp_path):
    """The real entry point: the run says where it stopped, and the process then ends by SIGINT, as Python ends on an
    uncaught Ctrl-C, with no traceback (typer alone turns KeyboardInterrupt into a plain exit status 130)."""
    cfg = write_config(tmp_path, tiny_settings())
    env = {**os.environ, KILL_ENV: "step_end:5:INT", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "cmlgraph", "train", "--config", str(cfg), "--runs-dir",
                           str(tmp_path / "runs"), "--name", "k", "--quiet"], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    spaced = tmp_path / "my runs"  # the command printed is one a shell runs: the path quoted
    stopped = subprocess.run([sys.executable, "-m", "cmlgraph", "train", "--config", str(cfg), "--runs-dir",
                              str(spaced), "--name", "k", "--quiet"], env=env, capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
    assert f"cmlgraph train --resume '{spaced / 'k'}'" in " ".join(stopped.stdout.split())
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == -signal.SIGINT, out
    assert "Traceback" not in out and "stopping after this meta-step" in out
    assert f"at step 5 of 8, checkpoint written: resume with `cmlgraph train --resume {tmp_path / 'runs' / 'k'}`" \
        in out


_SCRIPT = """
import sys, torch, cmlgraph
from cmlgraph.graphs import from_arrays
gen = torch.Generator().manual_seed(0)
g = from_arrays(torch.randint(0, 60, (2, 200), generator=gen), torch.randn(60, 5, generator=gen),
                torch.arange(60) % 6, name="script-graph", split="2/2/2")
try:
    cmlgraph.fit(g, name="k", runs_dir=sys.argv[1], ways=2, shots=2, queries=2, steps=8, val_every=4, val_tasks=3,
                 test_tasks=5, log_every=2, checkpoint_every=3, hidden=8)
finally:
    print("finally ran", flush=True)
"""


@pytest.mark.parametrize("how", ["INT", "TERM"])
def test_a_python_script_stopped_in_fit_ends_as_python_ends_on_that_signal(tmp_path, how):
    """A script calling ``cmlgraph.fit`` ends by SIGINT after Ctrl-C, with Python's usual traceback, as on any Ctrl-C
    (it used to end with status 1: Python gives the SIGINT exit only to KeyboardInterrupt itself, not a subclass,
    and a shell loop over seeds went on to the next after a Ctrl-C); after SIGTERM it ends with status 143 and no
    traceback. ``finally`` blocks run in both, after the checkpoint."""
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, KILL_ENV: f"step_end:5:{how}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "finally ran" in proc.stdout and load_torch(tmp_path / "runs" / "k" / "checkpoint.pt")["step"] == 5, out
    if how == "INT":
        assert proc.returncode == -signal.SIGINT, out
        assert "KeyboardInterrupt: at step 5 of 8, checkpoint written" in " ".join(proc.stderr.split()), out
    else:
        assert proc.returncode == 143 and "Traceback" not in out, out


def test_ctrl_c_in_a_shell_loop_of_runs_ends_the_loop(tmp_path):
    """``for s in 1 2; do cmlgraph train ...; done`` in a terminal: Ctrl-C reaches the shell and the run (the whole
    foreground process group). The run stops with its checkpoint and the loop ends; with the plain exit status 130
    it had, bash took the Ctrl-C as handled by the run and started the next one."""
    cfg = write_config(tmp_path, tiny_settings())
    env = {**os.environ, KILL_ENV: "step_end:5:PGINT", "OMP_NUM_THREADS": "1"}
    loop = (f"for s in 1 2; do {shlex.quote(sys.executable)} -m cmlgraph train --config {shlex.quote(str(cfg))} "
            f"--runs-dir {shlex.quote(str(tmp_path / 'runs'))} --name k$s --quiet; done; echo loop went on")
    # a session of its own: the group signalled is the shell's and its run's, not pytest's
    proc = subprocess.run(["bash", "-c", loop], env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path,
                          start_new_session=True)
    out = proc.stdout + proc.stderr
    assert load_torch(tmp_path / "runs" / "k1" / "checkpoint.pt")["step"] == 5, out
    assert not (tmp_path / "runs" / "k2").exists() and "loop went on" not in out, out
    assert proc.returncode == -signal.SIGINT, out


def test_a_corrupt_checkpoint_is_named_not_read(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("data: {task: sinusoid}\ntrain: {steps: 8}\n")
    assert checkpoint_step(run) is None
    (run / "checkpoint.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        checkpoint_step(run)
    record = describe_run(run)
    assert run_status(record) == "resumable? checkpoint unreadable" and "not a readable" in record["checkpoint_error"]


def test_stop_request_handler():
    said: list[str] = []
    before, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopRequest(said.append) as stop:
            assert stop.installed
            os.kill(os.getpid(), signal.SIGINT)  # the first: a request, no exception
            assert stop.requested and len(said) == 1
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # the second: at once
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored by the second
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with StopRequest(said.append, enabled=False) as stop:  # torchrun ranks: untouched
            assert not stop.installed and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job ignores Ctrl-C: left so
        with StopRequest(said.append) as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # (SIGTERM is still taken over)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a program's own SIGTERM handling (here: ignore) is kept
        with StopRequest(said.append):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with StopRequest(said.append) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested and stop.signum == signal.SIGTERM and "SIGTERM" in said[-1]
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        seen: list[bool] = []
        thread = threading.Thread(target=lambda: seen.append(StopRequest(said.append).__enter__().installed))
        thread.start()
        thread.join()
        assert seen == [False]  # only the main thread may install a handler
    finally:
        signal.signal(signal.SIGINT, before)
        signal.signal(signal.SIGTERM, before_term)
    # Ctrl-C's stop is a KeyboardInterrupt of that exact type (Python ends only that one by SIGINT), SIGTERM's a
    # SystemExit with status 143; both marked as a run's stop, unlike a bare Ctrl-C
    ctrl_c, term = run_stopped("at step 5"), run_stopped("at step 5", signal.SIGTERM)
    assert type(ctrl_c) is KeyboardInterrupt and str(ctrl_c) == "at step 5"
    assert isinstance(term, RunTerminated) and isinstance(term, SystemExit) and term.code == 143
    assert str(term) == "at step 5"
    assert stopped_gracefully(ctrl_c) and stopped_gracefully(term) and not stopped_gracefully(KeyboardInterrupt())


def test_a_fit_run_on_an_in_memory_graph_resumes_with_that_graph(tmp_path, monkeypatch):
    """The stop message of a ``cmlgraph.fit`` run on a FewShotGraph names ``cmlgraph.resume(..., graph=...)`` (a new
    user's trial was told `cmlgraph train --resume`, which could not find the graph); in a new process (the graph
    no longer registered) resuming asks for the graph, takes it as a ``.npz`` file or the object, refuses another
    graph, and ends equal to the run never stopped."""
    import cmlgraph
    from cmlgraph.domains.graph import CUSTOM_GRAPHS
    from cmlgraph.errors import ConfigError, DataError
    from cmlgraph.graphs import from_arrays

    def graph(seed: int, labels_seed: int = 0, x: torch.Tensor | None = None):
        gen = torch.Generator().manual_seed(seed)
        y = torch.arange(60) % 6
        if labels_seed:
            y = y[torch.randperm(60, generator=torch.Generator().manual_seed(labels_seed))]
        features = torch.randn(60, 5, generator=gen) if x is None else x
        return from_arrays(torch.randint(0, 60, (2, 200), generator=gen), features, y, name="interrupt-mem",
                           split="2/2/2")

    settings = {"ways": 2, "shots": 2, "queries": 2, "steps": 8, "val_every": 4, "val_tasks": 3, "test_tasks": 5,
                "log_every": 2, "checkpoint_every": 3, "seed": 1, "hidden": 8, "runs_dir": str(tmp_path)}
    g = graph(0)
    ref, _ = cmlgraph.fit(g, name="ref", **settings)
    with ctrl_c_at(monkeypatch, "step_end:5:INT"), \
            pytest.raises(KeyboardInterrupt, match=r"cmlgraph\.resume\('.+/k', graph=the same FewShotGraph\)"):
        cmlgraph.fit(g, name="k", **settings)
    run = tmp_path / "k"
    CUSTOM_GRAPHS.pop("interrupt-mem")  # as in a new process
    with pytest.raises(ConfigError, match="in-memory graph 'interrupt-mem'.*--graph interrupt-mem.npz"):
        cmlgraph.resume(run)
    with pytest.raises(DataError):  # another graph of that name: the saved test tasks do not fit its labels
        cmlgraph.resume(run, graph=graph(1, labels_seed=1))
    # the same labels, other edges; the same edges and labels, constant features: the fingerprint tells them
    # apart (a new-user trial's resume had trained on such graphs silently, one to chance)
    for other in (graph(1), graph(0, x=torch.ones(60, 5))):
        with pytest.raises(DataError, match="not the one it was trained on"):
            cmlgraph.resume(run, graph=other)
    g.save(tmp_path / "g.npz")
    cmlgraph.resume(run, graph=tmp_path / "g.npz")
    a, b = load_torch(ref / "model.pt"), load_torch(run / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_registered_graph_run_resumes_where_its_data_is_without_cmlgraph_data(tmp_path, monkeypatch, data_root):
    """Started with ``$CMLGRAPH_DATA``, resumed without it: the run reads the root it recorded (it used to fail,
    and ``--data-root`` was refused with ``--resume``); ``--data-root`` is taken too; ``--graph`` is refused."""
    if not (data_root / "planetoid" / "ind.cora.x").is_file():
        pytest.skip("Cora is not under the data root")
    from cmlgraph.cli import main
    from cmlgraph.config import Config, apply_overrides
    from cmlgraph.errors import ConfigError
    from cmlgraph.train.trainer import train

    monkeypatch.setenv("CMLGRAPH_DATA", str(data_root))
    settings = {"data": {"task": "graph", "graph": "cora", "ways": 2, "shots": 2, "queries": 3},
                "train": {"steps": 6, "val_every": 3, "val_tasks": 3, "test_tasks": 5, "log_every": 2,
                          "checkpoint_every": 100},
                "run": {"runs_dir": str(tmp_path)}}
    ref = train(apply_overrides(Config(), {**settings, "run": {**settings["run"], "name": "ref"}}, "test"),
                progress=False)[0]
    with ctrl_c_at(monkeypatch, "step_end:4:INT"), pytest.raises(KeyboardInterrupt):
        train(apply_overrides(Config(), {**settings, "run": {**settings["run"], "name": "k"}}, "test"), progress=False)
    monkeypatch.delenv("CMLGRAPH_DATA")
    shutil.copytree(tmp_path / "k", tmp_path / "k2")
    resume(tmp_path / "k", progress=False)  # the recorded root
    with pytest.raises(ConfigError, match="registered graph 'cora'"):
        resume(tmp_path / "k2", progress=False, graph=tmp_path / "other.npz")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(tmp_path / "k2"), "--data-root", str(data_root), "--quiet"])
    assert exit_info.value.code in (0, None)
    for run in ("k", "k2"):
        a, b = load_torch(ref / "model.pt"), load_torch(tmp_path / run / "model.pt")
        assert all(torch.equal(a[key], b[key]) for key in a), run
        # where it read its data, for `cmlgraph eval` in a shell without the variable (it recorded datasets/)
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        assert summary["provenance"]["data_root"] == str(data_root.absolute()), run


def test_a_corrupt_checkpoint_on_resume_says_how_to_restart(tmp_path, references):
    from cmlgraph.errors import CmlgraphError

    run = _interrupted(tmp_path, "cml", "step_end:5:INT")
    (run / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CmlgraphError, match="delete .*checkpoint.pt and resume again"):
        resume(run, progress=False)


def test_ctrl_c_before_a_run_starts_says_interrupted_and_a_second_exits_quietly(monkeypatch, capsys):
    """Typer turns Ctrl-C into a bare exit 130; where no run said anything (the data still loading) the CLI says
    "interrupted", and a further Ctrl-C while Python shuts down ends the process at once (a new-user trial saw
    "Exception ignored in atexit callback ... KeyboardInterrupt" tracebacks)."""
    import cmlgraph.train.interrupt as interrupt
    import cmlgraph.train.trainer as trainer
    from cmlgraph.cli import main

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", stopped)
    monkeypatch.setattr(interrupt, "_ANNOUNCED", [False])
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--task", "sinusoid", "--steps", "2", "--quiet"])
        assert exit_info.value.code == 130
        assert capsys.readouterr().err.strip().endswith("interrupted")
        quick = signal.getsignal(signal.SIGINT)
        assert quick not in (before[signal.SIGINT], signal.default_int_handler) and callable(quick)
        exits: list[int] = []
        monkeypatch.setattr(os, "_exit", exits.append)
        quick(signal.SIGINT, None)
        assert exits == [130]
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_a_stopped_compare_says_the_same_command_continues(monkeypatch, capsys):
    import cmlgraph.compare as compare
    import cmlgraph.train.interrupt as interrupt
    from cmlgraph.cli import main

    def stopped(*args, **kwargs):
        raise run_stopped("at step 4 of 6, checkpoint written")

    monkeypatch.setattr(compare, "run_compare", stopped)
    monkeypatch.setattr(interrupt, "_ANNOUNCED", [False])
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["compare", "--domains", "sinusoid", "--seeds", "0", "--steps", "2"])
        assert exit_info.value.code == 130
        captured = capsys.readouterr()
        assert "run the same command again to continue" in " ".join(captured.out.split())
        assert "interrupted" not in captured.err  # said already
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_the_progress_bar_shows_no_loss_before_one_is_read_back():
    from cmlgraph.train.progress import bar_info

    assert bar_info(True, None, None) == ""
    assert bar_info(False, None, 0.5) == "best val 0.5000"
    assert bar_info(True, 1.25, 0.5) == "meta+γ·co loss 1.2500  best val 0.5000"
    assert bar_info(False, float("nan"), None) == "outer loss nan"  # a skipped step's loss is shown as it is
