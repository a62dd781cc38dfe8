"""Two gloo processes on 127.0.0.1, started with ``python -m torch.distributed.run``, end with the parameters of a
one-process run of the same seed; only rank 0 writes, and a killed distributed run resumes to the same end.

Each launch costs a few seconds of imports per process, so the runs are tiny (6 sinusoid steps) and the one-process
reference is shared by the tests of this module.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cmlgraph.config import from_yaml
from cmlgraph.train.distributed import TIMEOUT_ENV
from cmlgraph.train.io import KILL_ENV, load_torch
from cmlgraph.train.trainer import train

SETTINGS = {
    "data": {"task": "sinusoid", "shots": 5, "queries": 5},
    "model": {"hidden": 16},
    "algo": {"algo": "maml", "cml": True},
    # checkpoints at steps 2, 3, 4, 6; validation at 3 and 6; diagnostics at 3 and 6 (reduced over the ranks)
    "train": {"steps": 6, "meta_batch": 4, "val_every": 3, "val_tasks": 5, "test_tasks": 6, "log_every": 1,
              "checkpoint_every": 2, "diag_every": 3, "seed": 3},
}
RUN_FILES = {"config.yaml", "metrics.jsonl", "checkpoint.pt", "test_episodes.pt", "model.pt", "scores.pt",
             "summary.json"}
TIMING = {"time_s", "wall_time_s", "provenance"}  # provenance: the command and time of each process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(args: list[str], cwd: Path, kill_at: str | None = None, timeout: float = 120,
              env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node 2 ... -m cmlgraph train ARGS`` with one thread each."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        KILL_ENV)}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    if kill_at:
        env[KILL_ENV] = kill_at
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "cmlgraph", "train", *args, "--quiet"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_params_close(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor], what: str) -> None:
    assert ref.keys() == got.keys(), what
    for k in ref:
        assert torch.allclose(ref[k], got[k], atol=1e-6, rtol=1e-5), f"{what}: {k} differs by " \
                                                                     f"{(ref[k] - got[k]).abs().max():.3g}"


def _assert_same_result(ref: Path, run: Path) -> None:
    _assert_params_close(load_torch(ref / "model.pt"), load_torch(run / "model.pt"), "model.pt")
    _assert_params_close(load_torch(ref / "checkpoint.pt")["model"], load_torch(run / "checkpoint.pt")["model"],
                         "final parameters")
    a, b = _records(ref), _records(run)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "meta_loss", "co_loss", "lr", "val"):
            assert (ra.get(key) is None) == (rb.get(key) is None), (ra["step"], key)
            if ra.get(key) is not None:
                assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-7), (ra["step"], key)
        if "diag" in ra:
            assert rb["diag"]["cos_extractor"] == pytest.approx(ra["diag"]["cos_extractor"], abs=1e-5)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (ref, run))
    assert sb["mean"] == pytest.approx(sa["mean"], rel=1e-5)
    assert {k: v for k, v in sa.items() if k not in TIMING | {"mean", "ci95", "best_val"}} == \
        {k: v for k, v in sb.items() if k not in TIMING | {"mean", "ci95", "best_val"}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dist")
    (folder / "cfg.yaml").write_text(yaml.safe_dump(SETTINGS))
    return folder


@pytest.fixture(scope="module")
def reference(workdir) -> Path:
    """The one-process run (in this process: no torchrun variables, hence no process group)."""
    cfg = from_yaml(workdir / "cfg.yaml")
    cfg.run.runs_dir = str(workdir / "one")
    cfg.run.name = "ref"
    run, _ = train(cfg, progress=False)
    assert not torch.distributed.is_initialized()
    return run


def test_two_processes_end_with_the_parameters_of_one(workdir, reference):
    cwd = workdir / "cwd-two"
    cwd.mkdir()
    runs = workdir / "two"
    proc = _torchrun(["--config", str(workdir / "cfg.yaml"), "--runs-dir", str(runs)], cwd)
    assert proc.returncode == 0, _explain(proc)
    folders = list(runs.iterdir())
    assert len(folders) == 1, f"expected one run folder, found {[p.name for p in folders]}"
    run = folders[0]
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert list(cwd.iterdir()) == [], "a process wrote into its working folder"
    assert proc.stdout.count("test MSE") == 1, "only rank 0 reports"
    _assert_same_result(reference, run)


def test_killed_distributed_run_resumes_to_the_same_end(workdir, reference):
    cwd = workdir / "cwd-resume"
    cwd.mkdir()
    runs = workdir / "resume"
    # both ranks SIGKILL themselves as step 5 begins: the folder holds the checkpoint of step 4 (or 3)
    killed = _torchrun(["--config", str(workdir / "cfg.yaml"), "--runs-dir", str(runs), "--name", "r"], cwd,
                       kill_at="step_begin:5")
    assert killed.returncode != 0, _explain(killed)
    run = runs / "r"
    assert [p.name for p in runs.iterdir()] == ["r"]
    assert (run / "checkpoint.pt").is_file() and not (run / "summary.json").exists()
    assert load_torch(run / "checkpoint.pt")["step"] in (3, 4)
    resumed = _torchrun(["--resume", str(run)], cwd)
    assert resumed.returncode == 0, _explain(resumed)
    assert [p.name for p in runs.iterdir()] == ["r"]
    assert list(cwd.iterdir()) == []
    _assert_same_result(reference, run)


def test_a_finished_rank_of_the_command_exits_without_interpreter_finalisation(monkeypatch):
    """A torchrun rank whose run finished and left its process group ends with ``os._exit(0)`` after flushing (torch's
    TCPStore server thread, destroyed at interpreter exit, could abort it: exit -6 after a complete run); a failed
    command, or one that never joined a group, exits normally."""
    import cmlgraph.cli as cli
    import cmlgraph.train.distributed as distributed

    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise RuntimeError("os._exit")

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    monkeypatch.setattr(distributed, "_LEFT", False)
    cli._finish_rank(SystemExit(0))  # one process: returns, the interpreter exits normally
    monkeypatch.setattr(distributed, "_LEFT", True)
    cli._finish_rank(SystemExit(2))  # an error keeps its exit status
    assert exits == []
    with pytest.raises(RuntimeError, match="os._exit"):
        cli._finish_rank(SystemExit(0))
    assert exits == [0]


def test_early_stopping_stops_every_rank(workdir):
    """``train.patience``: rank 0 validates, and every rank must stop where rank 0 stops. The other ranks never
    learned the early-stopping count, stepped on into an all-reduce that rank 0 never joined, and hung until the
    process-group timeout (3 hours by default; 60 s here), failing a run whose folder was complete."""
    settings = {**SETTINGS, "train": {**SETTINGS["train"], "steps": 40, "val_every": 1, "patience": 1,
                                      "diag_every": 0, "checkpoint_every": 5}}
    cfg = workdir / "patience.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    cwd = workdir / "cwd-patience"
    cwd.mkdir()
    runs = workdir / "patience"
    proc = _torchrun(["--config", str(cfg), "--runs-dir", str(runs)], cwd, env_extra={TIMEOUT_ENV: "60"})
    assert proc.returncode == 0, _explain(proc)
    summary = json.loads((next(runs.iterdir()) / "summary.json").read_text())
    assert summary["stopped_early"] is True
