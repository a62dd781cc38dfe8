"""Shared helpers of the reliability tests: tiny sinusoid configs, forked runs killed by the test hook, run comparison.

Killed runs are forked from the test process (imports already done, so a run takes well under a second) and run the
real CLI entry point; ``CMLGRAPH_TEST_KILL_AT=<event>:<n>`` makes the child SIGKILL itself at a named point (see
``cmlgraph.train.io.kill_point``). One test also uses a genuine ``python -m cmlgraph`` subprocess.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from cmlgraph.train.io import KILL_ENV, load_torch

TIMING = {"time_s", "wall_time_s", "provenance"}  # provenance: the command and time of each process


def tiny_settings(**train: Any) -> dict[str, Any]:
    """A sinusoid run of 8 steps: logs at 2,4,6,8; validation at 4,8; checkpoints at 3,4,6,8."""
    settings = {
        "data": {"task": "sinusoid", "shots": 5, "queries": 5},
        "model": {"hidden": 16},
        "train": {"steps": 8, "meta_batch": 2, "val_every": 4, "val_tasks": 3, "test_tasks": 5, "log_every": 2,
                  "checkpoint_every": 3, "seed": 1},
    }
    settings["train"].update(train)
    return settings


def write_config(folder: Path, settings: dict[str, Any], name: str = "cfg.yaml") -> Path:
    """Write ``settings`` as a YAML config file."""
    path = folder / name
    path.write_text(yaml.safe_dump(settings))
    return path


def _child(argv: list[str], kill_at: str | None) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal (a test worker may differ)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if kill_at:
        os.environ[KILL_ENV] = kill_at
    else:
        os.environ.pop(KILL_ENV, None)
    if argv[0] == "--api-resume":
        from cmlgraph.train.trainer import resume

        resume(argv[1], progress=False)
        return
    from cmlgraph.cli import main

    main(argv)


def forked(argv: list[str], kill_at: str | None = None, timeout: float = 60) -> int:
    """Run the CLI (or ``["--api-resume", DIR]``) in a forked child; returns its exit code (-9: SIGKILL)."""
    proc = mp.get_context("fork").Process(target=_child, args=(argv, kill_at))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise AssertionError(f"{argv} did not end in {timeout} s")
    return int(proc.exitcode)


def reference_runs(root: Path, settings: dict[str, dict[str, Any]]) -> dict[str, Path]:
    """One uninterrupted run per ``settings`` entry (forked like the killed and interrupted ones, no plots), each in
    ``root/<name>``."""
    import cmlgraph.train.plots as plots

    saved, plots.plot_run = plots.plot_run, lambda run_dir: []
    try:
        for name, values in settings.items():
            cfg = write_config(root, values, f"{name}.yaml")
            assert forked(["train", "--config", str(cfg), "--runs-dir", str(root), "--name", name, "--quiet"]) == 0
        return {name: root / name for name in settings}
    finally:
        plots.plot_run = saved


def xfail_if_cli_resume_bug(stderr: str) -> None:
    """``cmlgraph/cli.py`` (not owned here) refuses every ``--resume``: ``flags = dict(locals())`` also holds its
    local imports ``resume_run``/``train_run``. Until it takes ``locals()`` before those imports, xfail."""
    if "--resume-run" in stderr:
        pytest.xfail("cmlgraph/cli.py bug: `flags = dict(locals())` picks up the local imports resume_run/train_run,"
                     " so every --resume is refused; take locals() before those imports")


def strip(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without its timing fields."""
    out = {k: v for k, v in rec.items() if k not in TIMING}
    if isinstance(out.get("baseline_val"), dict):  # the baseline check's own timing
        out["baseline_val"] = {k: v for k, v in out["baseline_val"].items() if k != "seconds"}
    return out


def metrics(run: Path) -> list[dict[str, Any]]:
    """``metrics.jsonl`` without timing fields and without the step-0 validation of the start (every line must
    parse)."""
    recs = [strip(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["step"] > 0]


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


def assert_same_run(ref: Path, run: Path) -> None:
    """Bit-identical parameters, metrics and summary (timing aside); no temp file left behind."""
    _same_tensors(load_torch(ref / "model.pt"), load_torch(run / "model.pt"), "model.pt")
    ca, cb = load_torch(ref / "checkpoint.pt"), load_torch(run / "checkpoint.pt")
    _same_tensors(ca["best_params"], cb["best_params"], "checkpoint best_params")
    _same_tensors(ca["model"], cb["model"], "checkpoint model")
    assert (ca["step"], ca["best"], ca["best_step"], ca["skipped"]) == (cb["step"], cb["best"], cb["best_step"],
                                                                        cb["skipped"])
    assert torch.equal(load_torch(ref / "scores.pt")["scores"], load_torch(run / "scores.pt")["scores"])
    sa, sb = (strip(json.loads((r / "summary.json").read_text())) for r in (ref, run))
    assert sa == sb
    ma, mb = metrics(ref), metrics(run)
    steps = [r["step"] for r in mb]
    assert steps == sorted(set(steps)), f"duplicated or unordered steps {steps}"
    assert ma == mb
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def assert_checkpoint_whole(run: Path) -> None:
    """``checkpoint.pt``, when present, is a complete, loadable checkpoint."""
    ckpt = run / "checkpoint.pt"
    if ckpt.exists():
        state = load_torch(ckpt)
        assert {"model", "optimizer", "generator", "step", "config"} <= set(state)


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """Forking after OpenMP ran on several threads deadlocks the child (libgomp is not fork-safe): use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_plots_no_kill(monkeypatch):
    """Skip the PNG plots (a second per run, irrelevant here) and make sure no kill hook leaks in."""
    import cmlgraph.train.plots as plots

    monkeypatch.setattr(plots, "plot_run", lambda run_dir: [])
    monkeypatch.delenv(KILL_ENV, raising=False)
