"""``train.cuda_graphs`` (issue 18 item 4): which runs capture their meta-step, the eager path everywhere else, and
(where CUDA exists) captured and eager meta-steps giving equal losses and gradients."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cmlgraph.algorithms.registry import get_algorithm
from cmlgraph.config import Config, apply_overrides
from cmlgraph.errors import ConfigError
from cmlgraph.train.cuda_graphs import GraphedMetaStep, config_ineligible, ineligible, make_graphed_step
from cmlgraph.train.trainer import Trainer, prepare, train

SINUSOID = {"data": {"task": "sinusoid", "shots": 5, "queries": 5}, "model": {"hidden": 16},
            "algo": {"first_order": True, "inner_steps": 2},
            "train": {"steps": 4, "meta_batch": 3, "val_every": 2, "val_tasks": 3, "test_tasks": 4}}


def _cfg(tmp_path, name: str = "run", settings: dict | None = None, **changes) -> Config:
    cfg = Config()
    apply_overrides(cfg, SINUSOID if settings is None else settings, "test")
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        apply_overrides(cfg, {section: {key: value}}, "test")
    apply_overrides(cfg, {"run": {"runs_dir": str(tmp_path), "name": name}}, "test")
    return cfg


def _on_cuda(cfg: Config, algo: str = "maml", **algo_changes) -> tuple[Config, SimpleNamespace]:
    """The resolved config as on a GPU, and a stand-in experiment on ``cuda`` (nothing is allocated there)."""
    cfg.algo.algo = algo
    for key, value in algo_changes.items():
        setattr(cfg.algo, key, value)
    cfg = prepare(cfg)  # resolved on the CPU (no CUDA needed), then moved
    cfg.train.device = "cuda"
    return cfg, SimpleNamespace(algo=get_algorithm(cfg.algo), device=torch.device("cuda"))


def test_eligible_maml_family_on_cuda_first_and_second_order(tmp_path):
    for algo in ("maml", "anil", "boil"):
        for first_order in (True, False):  # second order: the eager double backward's kernels are captured too
            cfg, exp = _on_cuda(_cfg(tmp_path), algo, first_order=first_order)
            assert ineligible(cfg, exp) is None, (algo, first_order)


@pytest.mark.parametrize("change,reason", [
    (dict(algo="maml++"), "has its own meta-step"),
    (dict(algo="sharp-maml"), "has its own meta-step"),
    (dict(control="noise", cml=False), "draws its noise on the host"),
])
def test_what_cannot_be_captured_says_why(tmp_path, change, reason):
    algo = change.pop("algo", "maml")
    cfg, exp = _on_cuda(_cfg(tmp_path), algo, **change)
    assert reason in ineligible(cfg, exp)


def test_runs_and_inputs_that_cannot_be_captured(tmp_path):
    cfg, exp = _on_cuda(_cfg(tmp_path))
    assert "reduced across processes" in ineligible(cfg, exp, distributed=True)
    cfg.train.batched = "off"
    assert "one by one" in ineligible(cfg, exp)
    cpu_cfg = prepare(_cfg(tmp_path))
    cpu = SimpleNamespace(algo=get_algorithm(cpu_cfg.algo), device=torch.device("cpu"))
    assert "not a CUDA device" in ineligible(cpu_cfg, cpu)


def test_on_is_refused_before_the_run_where_it_cannot_apply(tmp_path):
    with pytest.raises(ConfigError, match=r"--cuda-graphs on: the run is on cpu, not a CUDA device"):
        train(_cfg(tmp_path, train__cuda_graphs="on"), progress=False)
    assert not (tmp_path / "run").exists()  # nothing written
    with pytest.raises(ConfigError, match="train.cuda_graphs"):
        train(_cfg(tmp_path, train__cuda_graphs="sometimes"), progress=False)


def test_auto_on_the_cpu_steps_eagerly_with_the_same_results(tmp_path):
    from cmlgraph.train.io import load_torch

    auto = train(_cfg(tmp_path, "auto"), progress=False)[0]
    off = train(_cfg(tmp_path, "off", train__cuda_graphs="off"), progress=False)[0]
    a, b = load_torch(auto / "model.pt"), load_torch(off / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    t = Trainer(_cfg(tmp_path, "probe"), progress=False)
    assert t._graphed_step([], None) is None  # decided: eager (the CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("first_order", [True, False])
def test_captured_and_eager_meta_steps_are_equal_on_cuda(tmp_path, first_order):
    """Sinusoid MAML + CML, first and second order (the double backward's kernels captured too)."""
    cfg = _cfg(tmp_path, train__device="cuda", train__batched="on", algo__first_order=first_order)
    t = Trainer(cfg, progress=False)
    e = t.exp
    graphed = make_graphed_step(cfg, e, t._next_batch()[1], True)
    assert isinstance(graphed, GraphedMetaStep)
    for step in range(4):  # the first call captures and checks itself; the others replay
        episodes = t._next_batch()[1]
        params = {k: v for k, v in e.model.named_parameters()}
        eager = e.algo.meta_gradients(e.model, params, episodes, e.domain.loss_fn, step, batched=True)
        ours = graphed(episodes, step)
        assert graphed.failed is None, graphed.failed
        torch.testing.assert_close(ours.loss.total, eager.loss.total, rtol=1e-4, atol=1e-6)
        for k in eager.grads:
            torch.testing.assert_close(ours.grads[k], eager.grads[k], rtol=1e-4, atol=1e-6)
    assert graphed.replays >= 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("gnn", ["gcn", "gat"])
def test_captured_whole_graph_steps_with_dropout_pass_their_check_on_cuda(tmp_path, gnn):
    """Whole-graph GCN and GAT with dropout (one pass on a GPU, each task's masks drawn inside it): the real capture's
    first check (replay and eager step from the same RNG state) passes under ``strict``, and each later step
    equals the eager meta-step of its batch from the RNG state the replay started from; replays draw new masks."""
    from cmlgraph.train.cuda_graphs import _rng_state, _set_rng_state

    cfg = _graph_cfg(tmp_path, gnn, model__gnn=gnn, model__dropout=0.5, train__device="cuda", train__batched="on")
    t = Trainer(cfg, progress=False)
    e = t.exp
    e.model.train()
    graphed = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True, strict=True)
    device = torch.device("cuda")
    for step in range(4):
        episodes = t._next_batch()[1]
        state = _rng_state(device)
        ours = graphed(episodes, step)
        assert graphed.failed is None, graphed.failed
        if step == 0:
            continue  # the first call is the capture's own check (it returns the eager step)
        _set_rng_state(device, state)
        params = {k: v for k, v in e.model.named_parameters()}
        eager = e.algo.meta_gradients(e.model, params, episodes, e.domain.loss_fn, step, batched=True)
        torch.testing.assert_close(ours.loss.total, eager.loss.total, rtol=1e-4, atol=1e-5)
        for k in eager.grads:
            torch.testing.assert_close(ours.grads[k], eager.grads[k], rtol=1e-4, atol=1e-5)
    assert graphed.replays >= 3
    # the replays really draw: two replays of one batch, back to back (no eager step between), differ
    first = graphed(episodes, 4).loss.total.clone()
    assert not torch.equal(first, graphed(episodes, 5).loss.total)


def test_a_missing_gpu_is_named_before_what_cuda_graphs_cannot_capture(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = _cfg(tmp_path, train__cuda_graphs="on", train__device="cuda", algo__first_order=False)
    with pytest.raises(ConfigError, match="--device cuda: no CUDA device is available"):
        train(cfg, progress=False)


def test_unquoted_yaml_on_and_off_are_the_switch_values(tmp_path):
    from cmlgraph.config import from_yaml

    (tmp_path / "c.yaml").write_text("train:\n  cuda_graphs: off\n  prefetch: on\n  batched: off\n")
    cfg = from_yaml(tmp_path / "c.yaml")  # YAML 1.1 reads them as booleans
    assert (cfg.train.cuda_graphs, cfg.train.prefetch, cfg.train.batched) == ("off", "on", "off")


GRAPH_FULL = {"data": {"task": "graph", "graph": "synthetic", "synthetic_nodes": 300, "synthetic_classes": 15,
                       "ways": 3, "shots": 2, "queries": 3, "subgraph": "full"},
              "algo": {"first_order": True, "inner_steps": 2},
              "train": {"steps": 3, "meta_batch": 3, "val_every": 3, "val_tasks": 3, "test_tasks": 3}}


def _graph_cfg(tmp_path, name: str, **changes) -> Config:
    return _cfg(tmp_path, name, GRAPH_FULL, **changes)


@pytest.mark.parametrize("change,reason", [
    ({}, None), ({"model__gnn": "gcn"}, None), ({"model__gnn": "gin"}, None),
    ({"data__subgraph": "khop"}, None), ({"data__subgraph": "khop", "model__gnn": "sage", "model__dropout": 0.5}, None),
    ({"data__subgraph": "auto", "model__dropout": 0.5}, None),  # decided on the episodes (their mode)
    ({"model__gnn": "gat"}, None),  # whole-graph GAT: every task's attention in one pass
    ({"data__subgraph": "khop", "model__gnn": "gat"}, None),  # its subgraphs' union, padded
    ({"data__subgraph": "khop", "model__gnn": "gat", "model__dropout": 0.5}, None),  # masks drawn in the union pass
    ({"model__gnn": "gcn", "model__dropout": 0.5}, None),  # each task's masks drawn inside the whole-graph pass
    ({"model__gnn": "gat", "model__dropout": 0.5}, None),
    ({"algo__algo": "maml++"}, "has its own meta-step"),
])
def test_graph_runs_that_can_be_captured_and_the_others_say_why(tmp_path, change, reason):
    cfg = prepare(_graph_cfg(tmp_path, "g", **change))
    cfg.train.device = "cuda"
    assert config_ineligible(cfg) == reason or reason in config_ineligible(cfg)


@pytest.mark.parametrize("gnn,dropout", [("sgc", 0.0), ("gcn", 0.0), ("gcn", 0.5), ("gat", 0.5), ("sage", 0.5)])
def test_whole_graph_capture_buffers_take_the_next_meta_batch(tmp_path, gnn, dropout, monkeypatch):
    """The capture's input buffers for whole-graph inputs (checked on the CPU: the replay itself needs CUDA): the
    meta-step on the buffers refilled with the next meta-batch equals that meta-batch's own meta-step (nothing of
    the first batch left in them), and the buffers' signature matches the next batch's. With dropout (each task's
    masks drawn inside the one pass, the GPU's choice forced) from the same RNG state, as the capture's check and
    replays draw."""
    import cmlgraph.backbones.gnn as gnn_module
    from cmlgraph.core.episode import Episode

    passes: list[int] = []
    monkeypatch.setattr(gnn_module, "dropout_passes_batch", lambda device: passes.append(1) or True)  # as on a GPU
    from cmlgraph.core.model import parameters_of
    from cmlgraph.train.cuda_graphs import SIDES, copy_into, static_copy

    t = Trainer(_graph_cfg(tmp_path, gnn, model__gnn=gnn, model__dropout=dropout), progress=False)
    e = t.exp
    e.model.train()
    first, second = t._next_batch()[1], t._next_batch()[1]
    cpu = SimpleNamespace(algo=e.algo, device=torch.device("cuda"))
    cfg = prepare(_graph_cfg(tmp_path, "probe", model__gnn=gnn, model__dropout=dropout))
    cfg.train.device = "cuda"
    assert ineligible(cfg, cpu, episodes=first) is None
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, True)
    static = [Episode(*(static_copy(getattr(ep, s)) for s in SIDES)) for ep in first]
    assert step._shapes(static) == step._shapes(second)  # a replayable batch: same graph, same node counts

    def meta(eps):
        torch.manual_seed(5)  # the same masks for every call (with dropout)
        return e.algo.meta_gradients(e.model, parameters_of(e.model), eps, e.domain.loss_fn, 0, batched=True)

    a = meta(static)
    torch.testing.assert_close(a.loss.total, meta(first).loss.total)
    for dst, src in zip(static, second, strict=True):
        for side in SIDES:
            copy_into(getattr(dst, side), getattr(src, side))
    b, ref = meta(static), meta(second)
    torch.testing.assert_close(b.loss.total, ref.loss.total)
    for k in ref.grads:
        torch.testing.assert_close(b.grads[k], ref.grads[k])
    assert not torch.allclose(a.loss.total, b.loss.total)  # the buffers really hold the second batch
    assert bool(passes) == (dropout > 0 and gnn != "sgc")  # the one-pass path with dropout was the one taken
    local = [Episode(*(getattr(ep, s) for s in SIDES)) for ep in first]
    for ep in local:
        ep.support_x.local = True
    assert "data-dependent sizes" in ineligible(cfg, cpu, episodes=local)


def test_the_capture_runs_on_the_parameters_device_and_replays_there(monkeypatch):
    """A run on ``cuda:1`` captures with ``cuda:1`` current and on its own streams: the capture and its streams are
    otherwise the current device's (``cuda:0`` in a process that never set one), where a capture of kernels that
    run on ``cuda:1`` records nothing, and every replay would return the capture's own gradients. The ``torch.cuda``
    calls are stood in by recorders (no CUDA here)."""
    import contextlib

    import torch.nn.functional as F

    from cmlgraph.algorithms.base import MetaAlgorithm
    from cmlgraph.config import AlgoConfig

    calls: list[tuple[str, object]] = []

    @contextlib.contextmanager
    def device(d):
        calls.append(("device", torch.device(d)))
        yield

    class Stream:
        def __init__(self, d=None):
            calls.append(("stream", None if d is None else torch.device(d)))

        def wait_stream(self, other):
            pass

    @contextlib.contextmanager
    def graph(g, stream=None, **kwargs):
        calls.append(("capture", stream is not None))
        yield

    class Graph:
        def replay(self):
            calls.append(("replay", None))

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda d=None: Stream(d))
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    step = GraphedMetaStep(MetaAlgorithm(AlgoConfig()), SimpleNamespace(), F.mse_loss, True)
    cuda1 = torch.device("cuda", 1)
    monkeypatch.setattr(step, "_device", lambda: cuda1)
    step._record(lambda: "out")
    assert calls[0] == ("device", cuda1)  # made current before any stream or capture
    assert all(d == cuda1 for kind, d in calls if kind == "stream")  # every stream on the run's device
    assert ("capture", True) in calls  # on a stream of its own, not the shared default of another device
    calls.clear()
    step.graph, step.out = Graph(), SimpleNamespace(loss=SimpleNamespace(meta=0, co=0, total=0), grads={})
    monkeypatch.setattr(step, "_copy_in", lambda episodes: None)
    step._replay([])
    assert calls == [("device", cuda1), ("replay", None)]


def test_a_capture_leaves_the_runs_random_stream_where_an_eager_step_leaves_it(stand_in):
    """The warm-up and capture passes draw dropout masks too: a capture restores the RNG afterwards, so the first
    captured step (its check included) moves the run's stream exactly as one eager step on the buffers does (a
    capture moved it by its passes' draws: at every recapture, and again on resume)."""
    import torch.nn.functional as F

    from cmlgraph.algorithms.tlp import GMeta
    from cmlgraph.backbones.gmeta import BallGCN
    from cmlgraph.config import AlgoConfig
    from cmlgraph.core.model import MetaModel
    from tests.train.test_cuda_graph_balls import _batch, _index

    torch.manual_seed(0)
    model = MetaModel(BallGCN(7, hidden=5, dropout=0.5), 2, co_depth=1, co_hidden=6)
    algo = GMeta(AlgoConfig(algo="gmeta", cml=True, gamma=0.2, inner_steps=2, inner_lr=0.05, first_order=True))
    step = GraphedMetaStep(algo, model, F.cross_entropy, True)
    eps = _batch(_index(), torch.randperm(80, generator=torch.Generator().manual_seed(1)), 0)
    torch.manual_seed(5)
    step(eps, 0)
    assert step.failed is None and step.captures == 1
    after_step = torch.get_rng_state()
    torch.manual_seed(5)
    step._eager(step.static, 0)
    assert torch.equal(after_step, torch.get_rng_state())
