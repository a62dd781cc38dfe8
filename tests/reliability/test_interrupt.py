"""Ctrl-C (or SIGTERM) during meta-training: the step finishes, a checkpoint is written, and a resume ends
bit-identical to an uninterrupted run; a second signal stops at once (``cmlgraph/train/interrupt.py``).

The SIGINT is sent by the test hook (``CMLGRAPH_TEST_KILL_AT=<event>:<n>:INT``) from inside the run, so it arrives at
a known point. With :func:`conftest.tiny_settings` (8 steps) logs fall at steps 2,4,6,8, validations at 0,4,8 (3
tasks each, so ``eval`` events 1-3 are the start's validation and 4-6 step 4's) and checkpoints at 3,4,6,8.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import assert_checkpoint_whole, assert_same_run, forked, metrics, tiny_settings, write_config

from cmlgraph.runs import checkpoint_step, describe_run, run_status
from cmlgraph.train.interrupt import RunInterrupted, StopRequest, exit_status
from cmlgraph.train.io import KILL_ENV, load_torch
from cmlgraph.train.trainer import resume

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
    root = tmp_path_factory.mktemp("ref")
    import cmlgraph.train.plots as plots

    saved, plots.plot_run = plots.plot_run, lambda run_dir: []
    try:
        out = {}
        for variant in VARIANTS:
            cfg = write_config(root, _settings(variant), f"{variant}.yaml")
            assert forked(["train", "--config", str(cfg), "--runs-dir", str(root), "--name", variant, "--quiet"]) == 0
            out[variant] = root / variant
        return out
    finally:
        plots.plot_run = saved


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
    assert run_status(record) == "resumable from step 5/8"
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
    assert run_status(describe_run(run)) == "resumable from step 3/8"
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
    """The real entry point (typer turns KeyboardInterrupt into exit status 130 and prints nothing itself)."""
    cfg = write_config(tmp_path, tiny_settings())
    env = {**os.environ, KILL_ENV: "step_end:5:INT", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "cmlgraph", "train", "--config", str(cfg), "--runs-dir",
                           str(tmp_path / "runs"), "--name", "k", "--quiet"], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 130, out
    assert "stopping after this meta-step" in out
    assert f"at step 5 of 8, checkpoint written: resume with `cmlgraph train --resume {tmp_path / 'runs' / 'k'}`" \
        in out


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
    assert issubclass(RunInterrupted, KeyboardInterrupt)
    assert exit_status(RunInterrupted("x", signal.SIGTERM)) == 143 and exit_status(RunInterrupted("x")) is None
    wrapped = SystemExit(130)
    wrapped.__context__ = RuntimeError("typer's Exit")
    wrapped.__context__.__cause__ = RunInterrupted("x", signal.SIGTERM)
    assert exit_status(wrapped) == 143 and exit_status(SystemExit(130)) is None
