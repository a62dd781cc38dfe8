"""k-hop plans built in prefetch build processes (issue 18): the episodes a graph domain finishes from them equal
its own ``materialize``'s, in this process and in spawned ones; a builder's error and a dead process reach the run
with their message and the fix."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from cmlgraph.backbones.gnn import PLAN_AGGREGATION
from cmlgraph.domains.graph import GraphDomain
from cmlgraph.errors import CmlgraphError, DataError
from cmlgraph.graphs import make_synthetic
from cmlgraph.train.build_processes import FIX, ProcessBuilds
from tests.conftest import assert_same_plan


def _domain(gnn: str, dropout: float, sparse: bool) -> GraphDomain:
    g = make_synthetic(num_nodes=400, num_classes=12, avg_degree=4, seed=2, split="4/4/4")
    if sparse:
        g.x = g.x.to_sparse_csr()
    return GraphDomain(g, ways=3, shots=2, queries=3, gnn=gnn, hidden=8, layers=2, dropout=dropout, subgraph="khop")


def _plans(episodes, key):  # noqa: ANN001, ANN202
    return [inp._plans[key] for ep in episodes for inp in (ep.support_x, ep.query_x)]


@pytest.mark.parametrize(("gnn", "dropout", "sparse"), [("gcn", 0.0, False), ("gcn", 0.4, True),
                                                        ("sage", 0.4, False), ("sgc", 0.0, True)])
def test_finished_episodes_equal_materialized_ones(gnn, dropout, sparse):
    dom = _domain(gnn, dropout, sparse)
    raws = dom.sample("train", 3, torch.Generator().manual_seed(4))
    hb = dom.host_build("cpu")
    builder = pickle.loads(pickle.dumps(hb.builder))  # as a process receives it
    finished = hb.finish(raws, pickle.loads(pickle.dumps(builder(hb.send(raws)))))
    hb.close()
    made = [dom.materialize(r, "cpu") for r in raws]
    key = (PLAN_AGGREGATION[gnn], 2)
    for a, b in zip(_plans(made, key), _plans(finished, key), strict=True):
        assert_same_plan(a, b)
    for a, b in zip(made, finished, strict=True):
        assert torch.equal(a.support_y, b.support_y) and torch.equal(a.query_x.nodes, b.query_x.nodes)
        assert a.support_x.x is b.support_x.x  # the run's own features, shared


def test_domains_without_plans_have_no_process_build():
    g = make_synthetic(num_nodes=200, num_classes=12, seed=0, split="4/4/4")
    assert GraphDomain(g, ways=3, shots=2, queries=3, gnn="gcn", subgraph="full").host_build("cpu") is None
    assert GraphDomain(g, ways=3, shots=2, queries=3, gnn="gat", subgraph="khop").host_build("cpu") is None


class _Failing:
    """A builder that builds with ``inner``, raises for an int and dies for ``"die"`` (one spawned pool for all)."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner = inner

    def __call__(self, sent):  # noqa: ANN001, ANN204
        if sent == "die":
            os._exit(3)
        if isinstance(sent, int):
            raise DataError(f"node {sent} has no features; give features for every node")
        return self.inner(sent)


@pytest.mark.slow
def test_spawned_processes_build_the_same_plans_and_report_failures():
    dom = _domain("gcn", 0.4, False)
    raws = dom.sample("train", 2, torch.Generator().manual_seed(5))
    hb = dom.host_build("cpu", 3)  # 4 blocks: the 3 items in flight below (one process builds them in turn)
    key = (PLAN_AGGREGATION["gcn"], 2)
    made = [dom.materialize(r, "cpu") for r in raws]
    pool = ProcessBuilds(_Failing(hb.builder), 1)
    try:
        futures = [pool.submit(hb.send(raws)) for _ in range(3)]
        results = [ProcessBuilds.result(f) for f in futures]
        assert all("block" in r[1] for r in results)  # written into the run's shared blocks
        for result in results:  # each read frees its block
            for a, b in zip(_plans(made, key), _plans(hb.finish(raws, result), key), strict=True):
                assert_same_plan(a, b)
        with pytest.raises(DataError, match="node 7 has no features"):  # the builder's own error, pickled back
            ProcessBuilds.result(pool.submit(7))
        with pytest.raises(CmlgraphError, match="died or could not start") as exc:
            ProcessBuilds.result(pool.submit("die"))
        assert FIX in str(exc.value)
    finally:
        pool.shutdown()
        hb.close()
    from multiprocessing import shared_memory

    for result in results:  # the run unlinked its shared-memory blocks (other tests' may exist meanwhile)
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=result[1]["block"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by scripts/gpu_check.sh)")
@pytest.mark.parametrize("sparse", [False, True])
def test_finished_episodes_equal_materialized_ones_on_cuda(sparse):
    """On a GPU: the packed plans, read back from a shared block straight into pinned memory and copied
    ``non_blocking``, equal the prefetch thread's plans moved by ``plan_to``."""
    dom = _domain("gcn", 0.4, sparse)
    raws = dom.sample("train", 3, torch.Generator().manual_seed(4))
    hb = dom.host_build("cuda", 1)
    try:
        finished = hb.finish(raws, pickle.loads(pickle.dumps(hb.builder))(hb.send(raws)))
    finally:
        hb.close()
    made = [dom.materialize(r, "cuda") for r in raws]
    torch.cuda.synchronize()
    key = (PLAN_AGGREGATION["gcn"], 2)
    for a, b in zip(_plans(made, key), _plans(finished, key), strict=True):
        assert_same_plan(a, b)
    assert finished[0].support_x.nodes.device.type == "cuda"


@pytest.mark.slow
def test_build_processes_exit_when_their_run_is_killed(tmp_path):
    """A run killed by SIGKILL (the OOM killer) or SIGTERM leaves no build process behind: each watches its parent
    and exits within ``WATCH_S`` (found by a new-user trial: orphans held shared memory)."""
    import subprocess
    import sys
    import time

    script = tmp_path / "run.py"
    script.write_text(
        "import multiprocessing, os, signal\n"
        "from cmlgraph.train.build_processes import ProcessBuilds\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessBuilds(abs, 2)\n"
        "    assert [ProcessBuilds.result(pool.submit(-i)) for i in range(4)] == [0, 1, 2, 3]\n"
        "    print(' '.join(str(p.pid) for p in multiprocessing.active_children() if 'Process' in type(p).__name__),"
        " flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert pids  # the pool starts its processes on demand: at least one
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids), "a build process outlived its killed run"


def test_a_script_re_run_by_a_starting_build_process_stops_before_making_a_run(monkeypatch, tmp_path):
    import multiprocessing

    from cmlgraph.api import make_config
    from cmlgraph.train.build_processes import in_build_process_start
    from cmlgraph.train.trainer import Trainer

    assert not in_build_process_start()
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    assert in_build_process_start()
    with pytest.raises(CmlgraphError, match=r'guard the code that trains with `if __name__ == "__main__":`'):
        Trainer(make_config(task="sinusoid", runs_dir=str(tmp_path)), progress=False)
    assert not any(tmp_path.iterdir())  # no run folder
