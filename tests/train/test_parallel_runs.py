"""``--parallel-runs``: runs trained together in one process equal the same runs trained alone (issue 18 item 5)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

import cmlgraph.train.parallel as parallel
from cmlgraph.config import Config, apply_overrides
from cmlgraph.domains.graph import register_graph
from cmlgraph.errors import ConfigError
from cmlgraph.graphs import from_arrays
from cmlgraph.train.io import load_torch
from cmlgraph.train.parallel import check_parallel_runs, group_runs, train_parallel
from cmlgraph.train.trainer import train
from tests.conftest import register_sparse_graph

TIMING = {"time_s", "wall_time_s", "provenance"}

SINUSOID = {
    "data": {"task": "sinusoid", "shots": 5, "queries": 5},
    "model": {"hidden": 16},
    "train": {"steps": 6, "meta_batch": 3, "val_every": 3, "val_tasks": 3, "test_tasks": 5, "log_every": 2,
              "checkpoint_every": 2},
}


def _graph() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 60
    y = torch.arange(n) % 6
    edges = torch.randint(0, n, (2, 160), generator=gen)
    register_graph(from_arrays(edges, torch.randn(n, 5, generator=gen), y, name="parallel-tiny", split="2/2/2"))


_graph()

# k-hop computation trees with batched tasks: the graph path that fuses (a GNN on one shared full graph)
GRAPH = {
    "data": {"task": "graph", "graph": "parallel-tiny", "ways": 2, "shots": 2, "queries": 2, "subgraph": "khop"},
    "model": {"gnn": "gcn", "hidden": 8},
    "train": {"steps": 4, "meta_batch": 2, "val_every": 2, "val_tasks": 3, "test_tasks": 4, "log_every": 1,
              "checkpoint_every": 2, "batched": "on"},
}

# SGC on the whole graph (the practitioner's default mode on dense graphs): tasks batch as gathered propagated rows
FULL_SGC = {**GRAPH, "data": {**GRAPH["data"], "subgraph": "full"},
            "model": {"gnn": "sgc", "hidden": 8, "init": "random"}}

# GCN on the whole graph: its tasks run as one pass over the graph (GNNBackbone._whole_graph_tasks), so runs fuse
FULL_GCN = {**GRAPH, "data": {**GRAPH["data"], "subgraph": "full"}, "model": {"gnn": "gcn", "hidden": 8}}
# GAT on the whole graph: every task's attention per edge in one pass (GNNBackbone._gat_attend), so runs fuse too
FULL_GAT = {**GRAPH, "data": {**GRAPH["data"], "subgraph": "full"},
            "model": {"gnn": "gat", "hidden": 8, "gat_heads": 2}}
# GAT on each episode's own k-hop subgraph: the R·B tasks run as one pass over their subgraphs' disjoint union
KHOP_GAT = {**GRAPH, "model": {"gnn": "gat", "hidden": 8, "gat_heads": 2}}

# GNN feature dropout, each run's masks from its own stream: k-hop trees (each run's own padding per level), SGC's
# gathered whole-graph rows, per-task whole-graph GCN and GAT k-hop passes, and sparse features (block-diagonal values)
DROP = {"model": {"gnn": "gcn", "hidden": 8, "dropout": 0.5}}
KHOP_DROP = {**GRAPH, **DROP}
KHOP_SAGE_DROP = {**GRAPH, "model": {**DROP["model"], "gnn": "sage", "layers": 3}}
KHOP_SGC_DROP = {**GRAPH, "model": {"gnn": "sgc", "hidden": 8, "init": "random", "dropout": 0.3}}
FULL_SGC_DROP = {**FULL_SGC, "model": {**FULL_SGC["model"], "dropout": 0.5}}
FULL_GCN_DROP = {**FULL_GCN, **DROP}
KHOP_GAT_DROP = {**KHOP_GAT, "model": {**KHOP_GAT["model"], "dropout": 0.5}}


register_sparse_graph("parallel-sparse", nodes=60, edges=160, classes=6, split="2/2/2", seed=1)
KHOP_SPARSE_DROP = {**KHOP_DROP, "data": {**GRAPH["data"], "graph": "parallel-sparse", "features": "raw"}}
FULL_SGC_SPARSE_DROP = {**FULL_SGC_DROP, "data": {**FULL_SGC["data"], "graph": "parallel-sparse", "features": "raw"},
                        "model": {**FULL_SGC_DROP["model"], "layers": 1}}  # Â X stays sparse: block-diagonal rows

# G-Meta (TLP's ball GCN, dropout on support passes: each run's masks from its own RNG stream) and AMM-GNN (its own
# regulariser, dropout): Table 3's paths, fused (issue 18 item 5)
GMETA = {
    "data": {"task": "graph", "graph": "parallel-tiny", "ways": 2, "shots": 2, "queries": 2},
    "algo": {"algo": "gmeta", "first_order": True, "inner_steps": 2},
    "model": {"dropout": 0.5},
    "train": {"steps": 4, "meta_batch": 2, "val_every": 2, "val_tasks": 3, "test_tasks": 4, "log_every": 1,
              "checkpoint_every": 2, "batched": "on"},
}
AMMGNN = {**GMETA, "algo": {**GMETA["algo"], "algo": "ammgnn"}}

# Conv4 on the embedded digits with batched tasks (auto batches Conv4 only on a GPU): the image path's fusion on CPU
DIGITS = {
    "data": {"task": "digits", "ways": 3, "shots": 1, "queries": 2, "image_size": 28},
    "train": {"steps": 3, "meta_batch": 2, "val_every": 3, "val_tasks": 3, "test_tasks": 4, "log_every": 1,
              "checkpoint_every": 3, "batched": "on"},
}


def _cfg(settings: dict[str, Any], tmp: Path, name: str, **changes: Any) -> Config:
    cfg = Config()
    apply_overrides(cfg, settings, "test")
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        apply_overrides(cfg, {section: {key: value}}, "test")
    apply_overrides(cfg, {"run": {"runs_dir": str(tmp), "name": name}}, "test")
    return cfg


def _strip(rec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rec.items() if k not in TIMING}
    if isinstance(out.get("baseline_val"), dict):
        out["baseline_val"] = {k: v for k, v in out["baseline_val"].items() if k != "seconds"}
    return out


def _close(a: Any, b: Any, path: str = "") -> None:
    """Equal up to float rounding (numbers), exactly otherwise."""
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7), path
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _assert_equal_runs(alone: Path, together: Path) -> None:
    wa, wb = load_torch(alone / "model.pt"), load_torch(together / "model.pt")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=k)
    sa, sb = (_strip(json.loads((r / "summary.json").read_text())) for r in (alone, together))
    _close(sa, sb, "summary")
    ma, mb = ([_strip(json.loads(line)) for line in (r / "metrics.jsonl").read_text().splitlines()]
              for r in (alone, together))
    _close(ma, mb, "metrics")


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    import cmlgraph.train.plots as plots

    monkeypatch.setattr(plots, "plot_run", lambda run_dir: [])


@pytest.fixture
def fused_calls(monkeypatch) -> list[int]:
    """The group size of each fused meta-step; a negative size where the runs drew from their own streams."""
    calls: list[int] = []
    original = parallel.fused_gradients

    def spy(trainers, episodes, **kwargs):
        calls.append(-len(trainers) if kwargs.get("generators") is not None else len(trainers))
        return original(trainers, episodes, **kwargs)

    monkeypatch.setattr(parallel, "fused_gradients", spy)
    return calls


@pytest.mark.parametrize("settings,arms", [(SINUSOID, {"algo__cml": True}), (GRAPH, {"algo__cml": True}),
                                           (FULL_SGC, {"algo__cml": True}), (FULL_GCN, {"algo__cml": True}),
                                           (FULL_GAT, {"algo__cml": True}), (KHOP_GAT, {"algo__cml": True}),
                                           (SINUSOID, {"algo__cml": False, "algo__control": "noise"}),
                                           (SINUSOID, {"algo__cml": True, "train__prefetch": "on"}),
                                           (GMETA, {"algo__cml": True}), (GMETA, {"algo__cml": False}),
                                           (AMMGNN, {"algo__cml": True}),
                                           (SINUSOID, {"algo__cml": True, "algo__algo": "maml++",
                                                       "algo__inner_steps": 2}),
                                           (SINUSOID, {"algo__cml": True, "algo__algo": "sharp-maml",
                                                       "algo__sam_inner": True}),
                                           (SINUSOID, {"algo__cml": False, "algo__algo": "sharp-maml",
                                                       "algo__control": "noise"}),
                                           (GRAPH, {"algo__cml": True, "algo__algo": "protonet"}),
                                           (KHOP_DROP, {"algo__cml": True}), (KHOP_SAGE_DROP, {"algo__cml": True}),
                                           (KHOP_SGC_DROP, {"algo__cml": True}), (FULL_SGC_DROP, {"algo__cml": True}),
                                           (FULL_GCN_DROP, {"algo__cml": True}), (KHOP_GAT_DROP, {"algo__cml": True}),
                                           (KHOP_SPARSE_DROP, {"algo__cml": True}),
                                           (FULL_SGC_SPARSE_DROP, {"algo__cml": True}),
                                           pytest.param(DIGITS, {"algo__cml": True}, marks=pytest.mark.slow)],
                         ids=["sinusoid-cml", "graph-khop", "graph-full-sgc", "graph-full-gcn", "graph-full-gat",
                              "graph-khop-gat",
                              "sinusoid-noise",
                              "sinusoid-prefetch", "gmeta-cml", "gmeta", "ammgnn-cml", "mamlpp-cml", "sharp-inner-cml",
                              "sharp-noise",
                              "protonet-khop-cml", "khop-dropout", "khop-sage3-dropout", "khop-sgc-dropout",
                              "full-sgc-dropout", "full-gcn-dropout", "khop-gat-dropout", "khop-sparse-dropout",
                              "full-sgc-sparse-dropout", "digits-conv4"])
def test_parallel_runs_equal_separate_runs(tmp_path, fused_calls, settings, arms):
    seeds = (0, 1)
    alone = [train(_cfg(settings, tmp_path, f"alone-s{s}", train__seed=s, **arms), progress=False)[0]
             for s in seeds]
    out = io.StringIO()
    results = train_parallel([_cfg(settings, tmp_path, f"group-s{s}", train__seed=s, **arms) for s in seeds],
                             Console(file=out, width=300), progress=False)
    assert [r.error for r in results] == [None, None]
    steps = settings["train"]["steps"]
    assert f"group-s0 {steps - 1}/{steps}, group-s1 {steps - 1}/{steps}" in out.getvalue()  # said on the console
    said = out.getvalue()  # each run's test lines come under its name
    # the runs' validations scored in one pass, except where the method's prediction is its own (ProtoNet), it has
    # learned per-run rates (MAML++) or its tasks run one by one there (Conv4 on the CPU)
    together = settings is not DIGITS and arms.get("algo__algo") not in ("maml++", "protonet")
    assert ("validations scored with other runs': group-s0 2, group-s1 2" in said) == together
    assert ("test tasks scored in one pass: group-s0, group-s1" in said) == together  # the final tests too
    assert said.index("test of group-s0") < said.index("test of group-s1") < said.rindex("evaluating on")
    assert fused_calls and max(map(abs, fused_calls)) == 2 and len(fused_calls) >= steps - 1  # the first: alone
    # G-Meta, AMM-GNN and GNNs with dropout draw masks: fused, each run's masks come from its own stream
    assert all(n < 0 for n in fused_calls) == (settings.get("model", {}).get("dropout", 0) > 0)
    for a, r in zip(alone, results, strict=True):
        assert r.run_dir is not None and r.summary is not None
        _assert_equal_runs(a, r.run_dir)
    # the seeds really differ: a fused computation that mixed the runs up would not keep them apart
    w0, w1 = (load_torch(r.run_dir / "model.pt") for r in results)
    assert any(not torch.allclose(w0[k], w1[k]) for k in w0)


def test_fused_whole_graph_dropout_runs_in_one_pass_as_on_a_gpu(tmp_path, fused_calls, monkeypatch):
    """On a GPU a whole-graph pass with dropout runs the fused runs' tasks in one pass, each task's masks drawn from
    its run's stream in its own pass's order (:meth:`GNNBackbone._task_scales`): each folder still equals its run
    alone (on the CPU the same runs step task by task: ``full-gcn-dropout`` above)."""
    import cmlgraph.backbones.gnn as gnn

    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)
    passes: list[int] = []
    chunk = gnn.GNNBackbone._whole_graph_chunk
    monkeypatch.setattr(gnn.GNNBackbone, "_whole_graph_chunk",
                        lambda self, *a: passes.append(a[3]) or chunk(self, *a))
    test_parallel_runs_equal_separate_runs(tmp_path, fused_calls, FULL_GCN_DROP, {"algo__cml": True})
    assert 2 * FULL_GCN_DROP["train"]["meta_batch"] in passes  # the two runs' tasks in one pass


def _assert_found_out_and_redone(tmp_path: Path, settings: dict[str, Any], fused_calls: list[int]) -> None:
    """Two seeds of ``settings`` together: the one fused step tried is found out (the global RNG moved), redone run
    by run, never tried again; each folder equals its run alone."""
    alone = [train(_cfg(settings, tmp_path, f"a{s}", train__seed=s), progress=False)[0] for s in (0, 1)]
    out = io.StringIO()
    results = train_parallel([_cfg(settings, tmp_path, f"g{s}", train__seed=s) for s in (0, 1)],
                             Console(file=out, width=300), progress=False)
    assert fused_calls == [-2]  # tried once, found out, never again
    assert "g0 0/4, g1 0/4" in out.getvalue()
    for a, r in zip(alone, results, strict=True):
        _assert_equal_runs(a, r.run_dir)


def test_a_fused_step_that_draws_outside_the_streams_is_redone_run_by_run(tmp_path, fused_calls, monkeypatch):
    """The safety net: an encoder that claims its own streams but draws from the global RNG in a fused step is
    caught (the global RNG moved), that step is redone run by run and the runs are never fused again."""
    import cmlgraph.backbones.gmeta as gmeta
    from cmlgraph.core.dropout import dropout

    monkeypatch.setattr(gmeta, "_dropout_streams", lambda h, p, draws: dropout(h, p))
    _assert_found_out_and_redone(tmp_path, GMETA, fused_calls)


def test_gat_attention_dropout_is_found_out_and_stepped_alone(tmp_path, fused_calls, monkeypatch):
    """GAT's attention dropout (``GNNBackbone(attn_dropout=...)``, a Python API argument) is drawn inside PyG's
    GATConv from torch's global RNG: the GNN backbone claims its own streams (for its feature dropout), so the first
    fused step is tried, found out, redone run by run, and the runs are not fused again; each folder still equals
    its run alone."""
    import cmlgraph.backbones.gnn as gnn

    class DroppingGAT(gnn.GATConv):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "dropout": 0.3})

    monkeypatch.setattr(gnn, "GATConv", DroppingGAT)
    _assert_found_out_and_redone(tmp_path, FULL_GAT, fused_calls)


def test_the_first_step_probe_sees_draws_from_the_devices_own_generator(tmp_path, fused_calls, monkeypatch):
    """On a GPU, dropout draws from the CUDA generator, not the CPU one: the probe of a run's first step compares
    every global generator of the run's device, so runs that draw there fuse with their own streams. (A probe of
    the CPU generator alone saw no draw on a GPU and fused such runs on the one shared CUDA generator: each run's
    masks then depended on the group.) The device's generator is stood in for by one more generator here."""
    from cmlgraph.train.trainer import Trainer

    device_gen = torch.Generator().manual_seed(0)
    real = parallel._global_states
    monkeypatch.setattr(parallel, "_global_states", lambda device: [*real(device), device_gen.get_state()])
    original = Trainer._train_step

    def drawing_step(self):
        torch.rand(1, generator=device_gen)  # as a CUDA run's dropout moves the CUDA generator
        return original(self)

    monkeypatch.setattr(Trainer, "_train_step", drawing_step)
    results = train_parallel([_cfg(GRAPH, tmp_path, f"g{s}", train__seed=s) for s in (0, 1)], progress=False)
    assert [r.error for r in results] == [None, None]
    assert fused_calls and all(n == -2 for n in fused_calls)  # fused, each run drawing from its own stream


def test_each_run_draws_from_its_own_seeding_of_the_devices_generator(tmp_path, monkeypatch):
    """Each run of a group starts from the device generator's state that its own seeding left (a CUDA run's
    ``torch.manual_seed`` seeds the CUDA generator too), not from the last-built run's: the device's generator is
    stood in for by one more generator that ``torch.manual_seed`` seeds and each step draws from. (The group kept
    only the CPU state of each run's seeding: on a GPU every run's first dropout draws came from the last seed.)"""
    from cmlgraph.train.trainer import Trainer

    device_gen = torch.Generator()
    monkeypatch.setattr(parallel, "_device_states", lambda device: [device_gen.get_state()])
    monkeypatch.setattr(parallel, "_set_device_states",
                        lambda device, states: device_gen.set_state(states[0]) if states else None)
    real_seed = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda seed: (device_gen.manual_seed(seed), real_seed(seed))[1])
    drawn: dict[int, list[float]] = {}
    original = Trainer._train_step

    def drawing_step(self):
        drawn.setdefault(int(self.cfg.train.seed), []).append(torch.rand(1, generator=device_gen).item())
        return original(self)

    monkeypatch.setattr(Trainer, "_train_step", drawing_step)
    results = train_parallel([_cfg(GRAPH, tmp_path, f"g{s}", train__seed=s) for s in (3, 4)], progress=False)
    assert [r.error for r in results] == [None, None]
    for seed in (3, 4):  # each run's first draw: what its seed gives (the rest of its steps were fused)
        assert drawn[seed][0] == torch.rand(1, generator=torch.Generator().manual_seed(seed)).item()


def test_group_tasks_keeps_each_runs_own_groups():
    from cmlgraph.core.streams import TaskStreams, group_tasks

    rows = [3, 4, 2, 5, 1, 1]
    assert group_tasks(rows, 7) == [(0, 2), (2, 4), (4, 6)]
    # runs of 3 and 3 tasks: alone [0,2) [2,3) and [3,6); a group never mixes tasks of two of a run's groups
    assert group_tasks(rows, 7, [3, 3]) == [(0, 2), (2, 3), (3, 6)]
    assert group_tasks(rows, 6, [3, 3]) == [(0, 1), (1, 3), (3, 5), (5, 6)]
    assert group_tasks([1, 1, 1, 1], 4, [2, 2]) == [(0, 4)]  # two runs' whole groups merge where they fit
    assert group_tasks([1, 1, 1, 1], 3, [2, 2]) == [(0, 2), (2, 4)]
    assert group_tasks([9, 1], 5, [1, 1]) == [(0, 1), (1, 2)]  # a task heavier than the limit runs alone
    with pytest.raises(ValueError, match="do not split 6 tasks"):
        group_tasks(rows, 7, [3, 2])
    streams = TaskStreams((2, 3), (torch.Generator(), torch.Generator()))
    assert streams.spans(0, 5) == [(0, 0, 2), (1, 2, 5)] and streams.spans(1, 3) == [(0, 1, 2), (1, 2, 3)]


def test_both_arms_and_early_stopping_in_one_group(tmp_path, fused_calls):
    """A group of base and CML runs (not fused with each other) where patience ends one run early."""
    settings = {**SINUSOID, "train": {**SINUSOID["train"], "val_every": 1, "patience": 1, "meta_lr": 0.05}}
    runs = [(0, False), (0, True), (1, True)]
    alone = [train(_cfg(settings, tmp_path, f"a{s}{c}", train__seed=s, algo__cml=c), progress=False)[0]
             for s, c in runs]
    results = train_parallel([_cfg(settings, tmp_path, f"g{s}{c}", train__seed=s, algo__cml=c) for s, c in runs],
                             progress=False)
    for a, r in zip(alone, results, strict=True):
        _assert_equal_runs(a, r.run_dir)
    assert all(n == 2 for n in fused_calls)  # only the two CML runs fuse


def test_a_failing_run_leaves_the_others_intact(tmp_path, monkeypatch):
    cfgs = [_cfg(SINUSOID, tmp_path, f"g{s}", train__seed=s) for s in (0, 1)]
    ref = train(_cfg(SINUSOID, tmp_path, "ref1", train__seed=1), progress=False)[0]
    original = parallel.apply_meta_step

    def failing(trainer, ms, **kwargs):
        if trainer.cfg.train.seed == 0 and trainer.step == 2:
            raise RuntimeError("boom")
        return original(trainer, ms, **kwargs)

    monkeypatch.setattr(parallel, "apply_meta_step", failing)
    results = train_parallel(cfgs, progress=False)
    assert "boom" in str(results[0].error) and not (results[0].run_dir / "summary.json").exists()
    assert results[1].error is None
    _assert_equal_runs(ref, results[1].run_dir)


def test_a_non_finite_step_in_a_group_is_read_back_late_and_named(tmp_path, monkeypatch):
    """Under ``nan_policy: stop`` a grouped run keeps its losses on the device until they are logged (no read-back
    per step, as alone); a non-finite step then stops that run only, naming the step."""
    from cmlgraph.algorithms.base import MetaStep
    from cmlgraph.core.objective import OuterLoss
    from cmlgraph.errors import NumericalError
    from cmlgraph.train.trainer import Trainer

    ref = train(_cfg(SINUSOID, tmp_path, "ref1", train__seed=1), progress=False)[0]
    original = parallel.apply_meta_step

    def poisoned(trainer, ms, **kwargs):
        if trainer.cfg.train.seed == 0 and trainer.step == 4:  # its fifth step
            nan = ms.loss.total * float("nan")
            ms = MetaStep(grads=ms.grads, loss=OuterLoss(meta=ms.loss.meta, co=ms.loss.co, total=nan))
        return original(trainer, ms, **kwargs)

    flushed: list[tuple[int, int]] = []
    flush = Trainer._flush

    def spy(self):
        flushed.append((int(self.cfg.train.seed), self.step))
        return flush(self)

    monkeypatch.setattr(parallel, "apply_meta_step", poisoned)
    monkeypatch.setattr(Trainer, "_flush", spy)
    results = train_parallel([_cfg(SINUSOID, tmp_path, f"g{s}", train__seed=s) for s in (0, 1)], progress=False)
    assert isinstance(results[0].error, NumericalError) and "step 5 of 6" in str(results[0].error)
    assert results[0].error.step == 5  # failed.json (cmlgraph runs: "failed at step 5/6") names it, not step 6
    assert json.loads((results[0].run_dir / "failed.json").read_text())["step"] == 5
    assert (0, 6) in flushed and (0, 5) not in flushed  # found at the next log step (log_every 2), not at once
    assert [step for seed, step in flushed if seed == 1] == [2, 3, 4, 6]  # log, validation, log, last
    assert results[1].error is None
    _assert_equal_runs(ref, results[1].run_dir)


def test_a_skipped_step_in_a_group_equals_the_run_alone(tmp_path, monkeypatch):
    """Under ``nan_policy: skip`` a grouped run undoes its non-finite step on the device (no read-back per step) and
    ends exactly as the run alone with the same non-finite step, the other run untouched."""
    from cmlgraph.algorithms.base import MetaStep
    from cmlgraph.train.trainer import Trainer

    original = Trainer._step_record

    def poisoned(self, ms):
        if self.cfg.train.seed == 0 and self.step == 2:  # its third step
            name = next(iter(ms.grads))
            ms = MetaStep(grads={**ms.grads, name: ms.grads[name] * float("inf")}, loss=ms.loss)
        return original(self, ms)

    monkeypatch.setattr(Trainer, "_step_record", poisoned)
    skip = {"train__nan_policy": "skip"}
    alone = [train(_cfg(SINUSOID, tmp_path, f"alone{s}", train__seed=s, **skip), progress=False)[0] for s in (0, 1)]
    results = train_parallel([_cfg(SINUSOID, tmp_path, f"g{s}", train__seed=s, **skip) for s in (0, 1)],
                             progress=False)
    for ref, res in zip(alone, results, strict=True):
        assert res.error is None
        _assert_equal_runs(ref, res.run_dir)
    skipped = [json.loads((r.run_dir / "summary.json").read_text())["skipped_meta_batches"] for r in results]
    assert skipped == [1, 0]


def test_groups_by_shape_and_size(tmp_path):
    cfgs = [_cfg(SINUSOID, tmp_path, f"r{i}", train__seed=i % 3, algo__cml=i < 3) for i in range(6)]
    cfgs.append(_cfg(SINUSOID, tmp_path, "other", train__seed=0, train__steps=7))  # another shape
    groups = group_runs(cfgs, 4)
    assert sorted(i for g in groups for i in g) == list(range(7))
    assert all(len(g) <= 4 for g in groups)
    assert [6] in groups  # never with the others
    assert len(group_runs(cfgs, 1)) == 7
    assert len(group_runs(cfgs, 2)) == 4  # 3 of 6 same-shape runs in groups of 2, and the other shape
    with pytest.raises(ConfigError, match="different shapes"):
        parallel.ParallelTrainer([cfgs[0], cfgs[6]], progress=False)


@pytest.mark.parametrize("bad", [0, -2])
def test_bad_group_size(bad):
    with pytest.raises(ConfigError, match="at least 1"):
        check_parallel_runs(bad)


def _group_child(cfgs: list[Config], kill_at: str) -> None:
    import os
    import signal

    from cmlgraph.train.interrupt import stopped_gracefully
    from cmlgraph.train.io import KILL_ENV

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal
    os.environ[KILL_ENV] = kill_at
    try:
        train_parallel(cfgs, progress=False)
    except KeyboardInterrupt as exc:
        if not stopped_gracefully(exc):
            raise
        raise SystemExit(130) from None


@pytest.mark.parametrize("kill_at", ["log:5", "step_end:7", "step_end:9:INT", "step_end:11:INT"])
def test_a_killed_group_resumes_per_folder(tmp_path, kill_at):
    """A group SIGKILLed mid-way (the crash tests' kill hook), or stopped by Ctrl-C: each folder, resumed on its own
    with ``cmlgraph train --resume``'s entry, ends equal to its run trained alone and uninterrupted. Ctrl-C during
    the first run's step 5 (the 9th step of the group) lets the group finish that step, and each run writes a
    checkpoint of step 5 (it has none of its own there: checkpoints at 2, 3, 4, 6)."""
    import multiprocessing as mp

    from cmlgraph.train.trainer import resume

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # forking after multi-threaded OpenMP work can deadlock the child
    try:
        seeds = (0, 1)
        alone = [train(_cfg(SINUSOID, tmp_path, f"alone-s{s}", train__seed=s), progress=False)[0] for s in seeds]
        cfgs = [_cfg(SINUSOID, tmp_path, f"group-s{s}", train__seed=s) for s in seeds]
        proc = mp.get_context("fork").Process(target=_group_child, args=(cfgs, kill_at))
        proc.start()
        proc.join(120)
        assert proc.exitcode == (130 if kill_at.endswith(":INT") else -9)  # stopped by the hook, mid-way
        folders = [tmp_path / f"group-s{s}" for s in seeds]
        assert not any((f / "summary.json").exists() for f in folders)
        if kill_at.endswith(":INT"):  # 11th: the first run's last step (6); the group stops before its tests
            step = {"step_end:9:INT": 5, "step_end:11:INT": 6}[kill_at]
            assert [load_torch(f / "checkpoint.pt")["step"] for f in folders] == [step, step]
        for a, f in zip(alone, folders, strict=True):
            resume(f, progress=False)
            _assert_equal_runs(a, f)
    finally:
        torch.set_num_threads(threads)


def test_a_failing_fused_evaluation_leaves_each_run_to_evaluate_alone(tmp_path, monkeypatch):
    """An error inside the group's one-pass evaluation (here: evaluate_runs raises) does not stop the group: every
    run validates and tests alone, with the results of a run alone."""
    import cmlgraph.train.evaluate as ev

    def broken(*args, **kwargs):
        raise RuntimeError("fused evaluation broke")

    alone = train(_cfg(SINUSOID, tmp_path, "alone-s0", train__seed=0, algo__cml=True), progress=False)[0]
    monkeypatch.setattr(ev, "evaluate_runs", broken)
    out = io.StringIO()
    results = train_parallel([_cfg(SINUSOID, tmp_path, f"group-s{s}", train__seed=s, algo__cml=True) for s in (0, 1)],
                             Console(file=out, width=300), progress=False)
    assert [r.error for r in results] == [None, None]
    said = out.getvalue()
    assert "validations scored with other runs'" not in said and "test tasks scored in one pass" not in said
    _assert_equal_runs(alone, results[0].run_dir)


def test_runs_whose_tasks_together_exceed_the_memory_budget_step_alone(tmp_path, fused_calls, monkeypatch):
    """Fused whole-graph passes hold every run's tasks at once: where the group's tasks would exceed the meta-step's
    memory budget (:func:`cmlgraph.core.memory.training_spans`) while each run's fit, the runs step alone (nothing
    fused), each folder still equal to its run alone."""
    import cmlgraph.core.memory as mem
    from cmlgraph.train.trainer import build_experiment, prepare

    e = build_experiment(prepare(_cfg(FULL_GCN, tmp_path, "probe")))
    ep = e.domain.materialize(e.domain.sample("train", 1, torch.Generator().manual_seed(0))[0], "cpu")
    per_task = mem.training_bytes(mem.task_values(e.model.extractor, ep), e.algo.kept_passes(0))
    monkeypatch.setattr(mem, "memory_budget", lambda device: 2 * per_task)  # one run's meta-batch of 2, not 4
    alone = [train(_cfg(FULL_GCN, tmp_path, f"a{s}", train__seed=s), progress=False)[0] for s in (0, 1)]
    results = train_parallel([_cfg(FULL_GCN, tmp_path, f"g{s}", train__seed=s) for s in (0, 1)],
                             Console(file=io.StringIO(), width=300), progress=False)
    assert fused_calls == []
    for a, r in zip(alone, results, strict=True):
        _assert_equal_runs(a, r.run_dir)


def test_training_free_baselines_in_a_group_are_tested_once(tmp_path, monkeypatch):
    """A training-free baseline of a group is fitted and tested when its run opens; the group's test pass tested it
    a second time (found by a new-user trial: four "test accuracy" lines for two runs)."""
    from cmlgraph.train.trainer import Trainer

    calls: list[str] = []
    original = Trainer.finish

    def spy(self, *args, **kwargs):
        calls.append(self.run_dir.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "finish", spy)
    cfgs = [_cfg(GRAPH, tmp_path, f"proto-s{s}", algo__algo="sgc-proto", train__seed=s) for s in (0, 1)]
    results = train_parallel(cfgs, progress=False)
    assert sorted(calls) == ["proto-s0", "proto-s1"]
    assert all(r.error is None and r.summary is not None for r in results)
    alone = train(_cfg(GRAPH, tmp_path, "alone", algo__algo="sgc-proto", train__seed=1), progress=False)[1]
    assert alone["mean"] == results[1].summary["mean"]
