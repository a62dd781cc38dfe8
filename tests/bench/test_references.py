"""The benchmark's reference implementations compute cmlgraph's objective, and its bookkeeping is sound."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import torch
import torch.nn.functional as F

from cmlgraph.backbones.gnn import GNNBackbone
from cmlgraph.bench import Case, build_cases, build_ratios, check_device
from cmlgraph.bench.reference import PlainGCN, ReferenceModel, plain_extract, reference_task_loss, sparse_extract
from cmlgraph.bench.report import compute_ratios, param_counts
from cmlgraph.bench.runner import RunSettings, estimate_bytes, run_cases, run_one
from cmlgraph.bench.worker import run_case
from cmlgraph.core.inner_loop import InnerLoopConfig
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.core.objective import outer_objective
from cmlgraph.domains.graph import GraphDomain
from cmlgraph.errors import ConfigError
from cmlgraph.graphs import make_synthetic


@pytest.mark.parametrize("kind", ["a", "b"])
@pytest.mark.parametrize("sparse", [False, True])
def test_reference_matches_cmlgraph_objective(kind: str, sparse: bool) -> None:
    """Same weights, same tasks: the reference's outer loss and meta-gradients equal cmlgraph's (float64)."""
    graph = make_synthetic(90, 9, 8, seed=3, split="3/3/3")
    graph.x = graph.x.double().to_sparse() if sparse else graph.x.double()
    domain = GraphDomain(graph, 3, 2, 2, hidden=16, layers=2, subgraph="full")
    raws = domain.sample("train", 2, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = MetaModel(GNNBackbone("gcn", 8, hidden=16, layers=2), 3, co_depth=0).double()
    params = parameters_of(model)
    loss = outer_objective(model, params, [domain.materialize(r) for r in raws], F.cross_entropy,
                           InnerLoopConfig(steps=2, lr=0.5), gamma=1.0, cml=True).total
    extractor = PlainGCN(8, 16, 2) if kind == "a" else GNNBackbone("gcn", 8, hidden=16, layers=2)
    ref = ReferenceModel(extractor, 16, 3).double()
    ref.load_state_dict(model.state_dict())
    x = graph.x.to_dense() if kind == "a" else graph.x
    extract = (plain_extract if kind == "a" else sparse_extract)(ref, x, graph.edge_index)
    ref_loss = torch.stack([reference_task_loss(ref, extract, r, 2, 0.5, 1.0) for r in raws]).mean()
    torch.testing.assert_close(ref_loss, loss)
    grads = torch.autograd.grad(loss, list(params.values()))
    ref_grads = torch.autograd.grad(ref_loss, [dict(ref.named_parameters())[k] for k in params])
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(rg, g)


def test_ratios_of_skipped_cases_are_none_and_targets_are_checked() -> None:
    cases = build_cases(quick=False, graphs=["amazon-clothing"])
    names = {c.name for c in cases}
    ratios = build_ratios(cases)
    assert all(r.numerator in names and r.denominator in names for r in ratios)
    records = [{"name": c.name, "tasks_per_s": 1.0, "ms_per_iter": 100.0, "skipped": False} for c in cases]
    by = {r["name"]: r for r in records}
    by["graph/amazon-clothing/khop"]["tasks_per_s"] = 40.0
    by["graph/amazon-clothing/ref-b"].update(tasks_per_s=None, ms_per_iter=None, skipped=True)
    out = {r["name"]: r for r in compute_ratios(ratios, records)}
    assert out["graph/amazon-clothing:khop/ref-a"]["ratio"] == 40.0
    assert out["graph/amazon-clothing:khop/ref-a"]["meets_target"] is True
    assert out["graph/amazon-clothing:khop/ref-b"]["ratio"] is None
    assert out["graph/amazon-clothing:khop/ref-b"]["meets_target"] is None
    assert out["graph/amazon-clothing:cml/maml ms"]["metric"] == "ms_per_iter"


def test_param_counts_pair_cml_with_maml() -> None:
    records = [{"name": "graph/g/khop", "graph": "g", "saved_params": 10},
               {"name": "graph/g/khop-maml", "graph": "g", "saved_params": 10}]
    assert param_counts(records) == [{"graph": "g", "cml": 10, "maml": 10, "equal": True}]


def test_reference_a_is_skipped_by_its_memory_estimate_without_running() -> None:
    case = next(c for c in build_cases(quick=True) if c.impl == "reference-a")
    facts = {"nodes": 1_000_000, "edges": 20_000_000, "features": 64}
    assert estimate_bytes(case, facts) > 50 * 2**30
    settings = RunSettings("cpu", 1.0, 10.0, 1, 1, mem_cap_bytes=2**30)
    record = run_one(None, case, settings, {case.graph: "unused"}, {case.graph: facts}, lambda m: None)
    assert record["skipped"] is True and "exceeds the cap" in record["reason"]
    assert record["tasks_per_s"] is None and record["peak_rss_mb"] is None


def test_a_failing_case_reports_its_error() -> None:
    recv, send = mp.Pipe(duplex=False)
    run_case(Case("x/y/z", "cmlgraph", "graph", "nonsense"), None, "cpu", 1, 1.0, 1, send)
    out = recv.recv()
    assert "error" in out and "needs a graph" in out["error"]


def test_overrunning_case_is_stopped_and_recorded() -> None:
    case = next(c for c in build_cases(quick=True) if c.name == "sinusoid/mlp/loop")
    settings = RunSettings("cpu", budget_s=600.0, timeout_s=2.0, max_iters=10**6, threads=1,
                           mem_cap_bytes=2**34, start_method="forkserver")
    records, _ = run_cases([case], settings, log=lambda m: None)
    assert records[0]["skipped"] is True and "time limit" in records[0]["reason"]


def test_bad_settings_raise() -> None:
    with pytest.raises(ConfigError, match="valid: synthetic-10k"):
        build_cases(quick=True, graphs=["nope"])
    with pytest.raises(ConfigError, match="valid: sinusoid, images, graph"):
        build_cases(quick=True, domains=["audio"])
    with pytest.raises(ConfigError, match="use cpu or cuda"):
        check_device("tpu")
    assert {c.domain for c in build_cases(quick=True, domains=["graph"])} == {"graph"}


def test_a_gpu_index_the_machine_lacks_is_refused_up_front(monkeypatch) -> None:
    """``--device cuda:7`` on a one-GPU machine failed in every spawned case, one by one; now before any."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="has 1 GPU.*cuda:0 to cuda:0"):
        check_device("cuda:7")
    with pytest.raises(ConfigError, match="has 1 GPU"):
        check_device("cuda:x")
    assert check_device("cuda:0") == "cuda:0" and check_device("cuda") == "cuda"


def test_the_memory_cap_on_a_gpu_is_also_a_fraction_of_the_gpus_memory(monkeypatch) -> None:
    """A case estimated to need more than the GPU holds is skipped before it starts (it ran until it failed out of
    memory: the host's memory, not the GPU's, was the cap)."""
    import cmlgraph.bench.api as api

    monkeypatch.setattr(api, "available_memory_bytes", lambda: 120 * 2**30)
    monkeypatch.setattr(api, "device_memory", lambda device: 80 * 2**30)
    assert api.memory_cap("cpu", 0.5) == 60 * 2**30
    assert api.memory_cap("cuda", 0.5) == 40 * 2**30


def test_memory_targets_on_a_gpu_judge_the_gpu_memory() -> None:
    """On a GPU a case's host RSS is mostly the CUDA context and libraries: the peak-memory targets judge the GPU
    memory the case allocated there."""
    from cmlgraph.bench.cases import MEMORY_TARGETS_MB
    from cmlgraph.bench.report import target_checks

    name = next(iter(MEMORY_TARGETS_MB))
    records = [{"name": name, "peak_rss_mb": 3000.0, "peak_gpu_mb": 200.0}]
    (cpu,), (gpu,) = target_checks([], records), target_checks([], records, "cuda")
    assert (cpu["name"].endswith("peak RSS MiB"), cpu["value"], cpu["met"]) == (True, 3000.0, False)
    assert (gpu["name"].endswith("peak GPU MiB"), gpu["value"], gpu["met"]) == (True, 200.0, True)


def test_a_selection_with_no_case_is_an_error_naming_why() -> None:
    """``--quick --domains gmeta`` used to run nothing and exit 0 with empty tables."""
    from cmlgraph.bench.cases import build_cases
    from cmlgraph.errors import ConfigError

    with pytest.raises(ConfigError, match="--quick has no gmeta case.*drop --quick"):
        build_cases(quick=True, domains=["gmeta"])
    assert {c.domain for c in build_cases(quick=False, domains=["gmeta"])} == {"gmeta"}


def test_the_graph_cases_run_the_references_model() -> None:
    """The bench's graph cases time a plain MAML GCN, as the references do: not the issue-17 start of ``cmlgraph
    train`` (L2-normalised features, Proto-MAML head), which computes more per step and skewed the ratios."""
    from cmlgraph.bench.workloads import graph_config
    from cmlgraph.train.trainer import build_experiment, prepare

    cfg = prepare(graph_config("cpu", cml=True, subgraph="full"))
    assert (cfg.model.init, cfg.model.normalize, cfg.algo.head_init) == ("random", False, "learned")
    graph = make_synthetic(300, 15, 8, seed=3, split="5/5/5")
    s = cfg.data
    exp = build_experiment(cfg, GraphDomain(graph, s.ways, int(s.shots), int(s.queries), gnn="gcn",
                                            hidden=cfg.model.hidden, layers=cfg.model.layers, subgraph="full"))
    assert exp.model.normalize_features is False
    assert exp.algo.cfg.head_init == "learned"
