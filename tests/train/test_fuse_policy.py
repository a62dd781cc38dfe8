"""Fused eager meta-steps or each run's CUDA graph (:mod:`cmlgraph.train.fuse_policy`): the group's timed trial,
driven on the CPU through the stand-in capture (tests/conftest.py) with a clock of the test's own."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

import cmlgraph.train.cuda_graphs as cuda_graphs
import cmlgraph.train.parallel as parallel
from cmlgraph.train.fuse_policy import TRIAL_STEPS, FusePolicy, captures_working
from cmlgraph.train.parallel import train_parallel
from cmlgraph.train.trainer import train
from tests.train.test_parallel_runs import AMMGNN, GMETA, GRAPH, _assert_equal_runs, _cfg


def _captured() -> SimpleNamespace:
    return SimpleNamespace(_graphed=SimpleNamespace(failed=None, graph=object()))


class PhaseClock:
    """Seconds that pass per call: ``alone`` in the alone trial, ``fused`` otherwise (so a timed lockstep lasts
    one such step: ``begin`` reads the clock, ``end`` reads it again)."""

    def __init__(self, alone: float, fused: float) -> None:
        self.alone, self.fused, self.now, self.policy = alone, fused, 0.0, None

    def __call__(self) -> float:
        self.now += self.alone if self.policy.phase == "alone-trial" else self.fused
        return self.now


def _drive(policy: FusePolicy, trainers, locksteps: int, runs: int = 2, fusing: bool = True) -> list[bool]:
    """``locksteps`` through the policy: what it allowed each time; where it allowed fusing, the runs fused
    (``fusing``) or could not."""
    fuses = []
    for _ in range(locksteps):
        fuses.append(policy.fuses)
        policy.begin()
        policy.end(runs, trainers, fused=runs if policy.fuses and fusing else 0)
    return fuses


@pytest.mark.parametrize("alone,fused,chosen", [(1.0, 3.0, "alone"), (3.0, 1.0, "fuse")])
def test_the_trial_times_both_ways_and_keeps_the_faster(alone, fused, chosen):
    lines: list[str] = []
    clock = PhaseClock(alone, fused)
    policy = FusePolicy("auto", torch.device("cpu"), say=lines.append, clock=clock)
    clock.policy = policy
    fuses = _drive(policy, [_captured(), _captured()], 1 + TRIAL_STEPS + 1 + TRIAL_STEPS + 3)
    # probe (alone), the alone trial, one untimed fused step, the fused trial, then the choice
    assert fuses == [False] * (1 + TRIAL_STEPS) + [True] * (1 + TRIAL_STEPS) + [chosen == "fuse"] * 3
    assert policy.phase == chosen
    assert policy.timings["alone"] == [alone / 2] * TRIAL_STEPS  # seconds per run-step: 2 runs a lockstep
    assert policy.timings["fuse"] == [fused / 2] * TRIAL_STEPS
    assert len(lines) == 1 and f"{alone / 2 * 1e3:.2f} ms" in lines[0] and f"{fused / 2 * 1e3:.2f} ms" in lines[0]


def test_locksteps_that_did_not_fuse_time_nothing_and_runs_that_never_fuse_step_alone():
    """In the fused half, a lockstep in which no run fused (other steps, draws outside the streams, one run left)
    is no fused timing; where the runs' steps never fuse, the trial ends after 3 x TRIAL_STEPS locksteps with each
    run stepping alone, said on the console (the alone steps had been timed as "fused" ones)."""
    lines: list[str] = []
    clock = PhaseClock(1.0, 1.0)
    policy = FusePolicy("auto", torch.device("cpu"), say=lines.append, clock=clock)
    clock.policy = policy
    _drive(policy, [_captured(), _captured()], 1 + TRIAL_STEPS + 1 + 3 * TRIAL_STEPS, fusing=False)
    assert policy.timings["fuse"] == [] and policy.phase == "alone"
    assert len(lines) == 1 and "did not fuse" in lines[0]


def test_no_trial_without_working_captures_and_on_always_steps_alone():
    eager = SimpleNamespace(_graphed=None)
    failed = SimpleNamespace(_graphed=SimpleNamespace(failed="RuntimeError: x", graph=None))
    for trainers in ([eager, eager], [_captured(), failed], []):
        assert not captures_working(trainers)
        policy = FusePolicy("auto", torch.device("cpu"))
        assert _drive(policy, trainers, 4) == [False, True, True, True] and policy.timings == {"alone": [],
                                                                                              "fuse": []}
    for trainers in ([_captured(), _captured()], [eager, eager]):  # on: the captured step asked for, no trial;
        policy = FusePolicy("on", torch.device("cpu"))  # never fused, even where the first step was not captured
        assert _drive(policy, trainers, 4) == [False] * 4 and policy.phase == "alone"
    assert FusePolicy("off", torch.device("cpu")).fuses  # never captured: fused from the start


@pytest.fixture
def graphed_on_cpu(stand_in, monkeypatch):
    """Runs on the CPU get a ``GraphedMetaStep`` as CUDA runs do (eligibility's device check bypassed), recorded
    through the stand-in graph; the fused steps are counted."""
    monkeypatch.setattr(cuda_graphs, "ineligible", lambda *args, **kwargs: None)
    monkeypatch.setattr(cuda_graphs, "config_ineligible", lambda cfg: None)
    calls: list[int] = []
    original = parallel.fused_gradients

    def spy(trainers, episodes, **kwargs):
        calls.append(len(trainers))
        return original(trainers, episodes, **kwargs)

    monkeypatch.setattr(parallel, "fused_gradients", spy)
    return calls


def _policy_with(monkeypatch, alone: float, fused: float) -> None:
    real = parallel.FusePolicy

    def make(mode, device, say=lambda line: None):
        clock = PhaseClock(alone, fused)
        clock.policy = policy = real(mode, device, say=say, clock=clock)
        return policy

    monkeypatch.setattr(parallel, "FusePolicy", make)


@pytest.mark.parametrize("alone,fused,chosen", [(1.0, 3.0, "alone"), (3.0, 1.0, "fuse")])
def test_a_group_whose_runs_replay_graphs_steps_the_faster_way_and_equals_separate_runs(
        tmp_path, graphed_on_cpu, monkeypatch, alone, fused, chosen):
    steps = 1 + TRIAL_STEPS + 1 + TRIAL_STEPS + 3
    settings = {**GRAPH, "train": {**GRAPH["train"], "steps": steps, "val_every": 7, "log_every": 3}}
    _policy_with(monkeypatch, alone, fused)
    separate = [train(_cfg(settings, tmp_path, f"alone-s{s}", train__seed=s), progress=False)[0] for s in (0, 1)]
    out = io.StringIO()
    results = train_parallel([_cfg(settings, tmp_path, f"group-s{s}", train__seed=s) for s in (0, 1)],
                             Console(file=out, width=300), progress=False)
    assert [r.error for r in results] == [None, None]
    fused_steps = 1 + TRIAL_STEPS + (3 if chosen == "fuse" else 0)
    assert graphed_on_cpu == [2] * fused_steps  # fused only in the trial's fused half, and after it if chosen
    said = out.getvalue()
    assert ("the runs step alone, each replaying its CUDA graph" in said) == (chosen == "alone")
    assert f"group-s0 {fused_steps}/{steps}" in said
    for a, r in zip(separate, results, strict=True):  # either way, each folder equals its run alone
        _assert_equal_runs(a, r.run_dir)


def test_cuda_graphs_on_steps_each_run_alone_through_its_graph(tmp_path, graphed_on_cpu, monkeypatch):
    replays: list[int] = []
    real_replay = cuda_graphs.GraphedMetaStep._replay

    def counted(self, episodes):
        replays.append(id(self))
        return real_replay(self, episodes)

    monkeypatch.setattr(cuda_graphs.GraphedMetaStep, "_replay", counted)
    settings = {**GRAPH, "train": {**GRAPH["train"], "steps": 5, "cuda_graphs": "on"}}
    results = train_parallel([_cfg(settings, tmp_path, f"g{s}", train__seed=s) for s in (0, 1)], progress=False)
    assert [r.error for r in results] == [None, None]
    assert graphed_on_cpu == []  # never fused: each step replayed the run's own graph
    # each run: its first step captured and replayed once for the check, then a replay a step
    assert len(replays) == 2 * 5 and len(set(replays)) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the trial runs where the runs' steps are captured: CUDA")
def test_a_group_on_cuda_times_both_ways_says_which_it_keeps_and_finishes(tmp_path):
    """The real thing (no stand-in, no clock of ours): two k-hop GCN runs on CUDA capture their steps, the group
    times them alone and fused, says which it keeps, and both runs finish with finite scores."""
    import json

    steps = 1 + TRIAL_STEPS + 1 + TRIAL_STEPS + 3
    settings = {**GRAPH, "train": {**GRAPH["train"], "steps": steps, "val_every": steps, "device": "cuda",
                                   "cuda_graphs": "auto"}}
    out = io.StringIO()
    results = train_parallel([_cfg(settings, tmp_path, f"cuda-s{s}", train__seed=s) for s in (0, 1)],
                             Console(file=out, width=300), progress=False)
    assert [r.error for r in results] == [None, None]
    said = out.getvalue()
    assert "--parallel-runs on cuda" in said, said
    for r in results:
        summary = json.loads((r.run_dir / "summary.json").read_text())
        assert summary["steps_run"] == steps and summary["mean"] == summary["mean"] and "peak_gpu_mb" in summary


@pytest.mark.parametrize("model", [{"gnn": "gcn"}, {"gnn": "gat", "gat_heads": 2}, "gmeta", "ammgnn"])
def test_runs_that_draw_dropout_over_padded_graphs_step_alone_and_equal_separate_runs(tmp_path, graphed_on_cpu,
                                                                                       monkeypatch, model):
    # a captured step on padded buffers (k-hop plans, GAT's unions, G-Meta's balls: Table 3, AMM-GNN's trees) draws
    # its masks over the padded shapes; a fused step over each task's own rows from the run's stream: fusing (in the
    # trial, or after it) made each folder differ from its run alone
    steps = 1 + TRIAL_STEPS + 1 + TRIAL_STEPS + 3
    base = GMETA if model == "gmeta" else AMMGNN if model == "ammgnn" else \
        {**GRAPH, "model": {**GRAPH["model"], **model, "dropout": 0.5}}
    settings = {**base, "train": {**base["train"], "steps": steps, "val_every": 7, "log_every": 3}}
    _policy_with(monkeypatch, 3.0, 1.0)  # fusing would win a trial
    separate = [train(_cfg(settings, tmp_path, f"alone-s{s}", train__seed=s), progress=False)[0] for s in (0, 1)]
    out = io.StringIO()
    results = train_parallel([_cfg(settings, tmp_path, f"group-s{s}", train__seed=s) for s in (0, 1)],
                             Console(file=out, width=300), progress=False)
    assert [r.error for r in results] == [None, None]
    assert graphed_on_cpu == []  # never fused
    assert "padded buffers" in out.getvalue() and "ms a run-step" not in out.getvalue()  # no trial
    for a, r in zip(separate, results, strict=True):
        _assert_equal_runs(a, r.run_dir)


def test_padded_draws_skip_the_trial():
    lines: list[str] = []
    policy = FusePolicy("auto", torch.device("cpu"), say=lines.append)
    policy.begin()
    policy.end(2, [_captured(), _captured()], padded_draws=True)
    assert policy.phase == "alone" and not policy.fuses and len(lines) == 1 and "padded" in lines[0]
    policy = FusePolicy("auto", torch.device("cpu"))
    policy.end(2, [SimpleNamespace(_graphed=None)] * 2, padded_draws=True)  # no captures: fused as before
    assert policy.phase == "fuse"
