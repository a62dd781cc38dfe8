"""The prefetch worker (issue 18 item 2): the same items and generator draws as without it, bit-identical runs and
evaluations, worker errors raised in the caller, and no thread outliving its run."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from cmlgraph.api import make_config
from cmlgraph.cli import main
from cmlgraph.config import Config, apply_overrides
from cmlgraph.domains.graph import register_graph
from cmlgraph.errors import ConfigError, DataError
from cmlgraph.graphs import make_synthetic
from cmlgraph.train import build_processes
from cmlgraph.train.evaluate import evaluate
from cmlgraph.train.io import load_torch
from cmlgraph.train.prefetch import AUTO_ON_CPU, AUTO_WORKERS_MAX, Prefetcher, prefetch_workers, use_prefetch
from cmlgraph.train.trainer import Trainer, build_experiment, parameters_of, prepare, train


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cmlgraph-")]


def _draw(g: torch.Generator | None) -> torch.Tensor:
    time.sleep(0.001)  # let the worker run ahead
    return torch.rand(3, generator=g)


def test_items_and_generator_states_equal_drawing_inline():
    inline_gen, ahead_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    with Prefetcher(_draw, ahead_gen, depth=3) as ahead:
        for _ in range(6):
            want = _draw(inline_gen)
            assert torch.equal(ahead.next(), want)
            # the caller's generator is where drawing inline leaves it: the next batch not yet consumed
            assert torch.equal(ahead_gen.get_state(), inline_gen.get_state())
    assert not ahead.alive


def _slow_build(raw: torch.Tensor) -> torch.Tensor:
    """A build that takes longer the smaller its item's first value, so later items often finish first."""
    time.sleep(0.002 + 0.01 * (1 - float(raw[0])))
    return raw * 2


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_pooled_builds_hand_over_items_and_generator_states_in_the_order_drawn(workers):
    inline_gen, ahead_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    names: set[str] = set()

    def build(raw):
        names.add(threading.current_thread().name)
        return _slow_build(raw)

    with Prefetcher(_draw, ahead_gen, depth=2, build=build, workers=workers, name="cmlgraph-pool") as ahead:
        for _ in range(12):
            want = _slow_build(_draw(inline_gen))
            assert torch.equal(ahead.next(), want)
            assert torch.equal(ahead_gen.get_state(), inline_gen.get_state())
    assert not ahead.alive and not _workers()  # the pool's threads ended with the worker
    if workers == 1:
        assert names == {"cmlgraph-pool"}  # built in the worker thread itself
    else:
        assert all(n.startswith("cmlgraph-pool-build") for n in names) and 1 < len(names) <= workers


def test_pooled_builds_run_at_once():
    """Two builds that each wait for the other to start can only finish when they run at the same time."""
    started, both = [], threading.Event()
    lock = threading.Lock()

    def build(raw):
        with lock:
            started.append(raw)
            if len(started) >= 2:
                both.set()
        assert both.wait(5), "the builds ran one after another"
        return raw

    items = iter(range(4))
    with Prefetcher(lambda _: next(items), build=build, workers=2) as p:
        assert list(p) == [0, 1, 2, 3]


def test_a_pooled_build_error_comes_after_the_items_before_it_and_stops_the_pool():
    def build(raw):
        if raw == 3:
            raise DataError("node 3 has no features; give features for every node")
        time.sleep(0.01 * (3 - raw) if raw < 3 else 0)
        return raw

    items = iter(range(10))
    p = Prefetcher(lambda _: next(items), depth=1, build=build, workers=3)
    assert [p.next(), p.next(), p.next()] == [0, 1, 2]
    with pytest.raises(DataError, match="node 3 has no features"):
        p.next()
    assert not p.alive and not _workers()


def test_a_pooled_draw_error_comes_after_the_items_drawn_before_it():
    def produce(_):
        produce.n += 1
        if produce.n == 3:
            raise DataError("split 'train' has no classes left; use --split 4/4/4")
        return produce.n
    produce.n = 0
    with Prefetcher(produce, build=lambda r: -r, workers=2) as p:
        assert [p.next(), p.next()] == [-1, -2]
        with pytest.raises(DataError, match="no classes left"):
            p.next()


def test_a_process_build_submission_error_comes_after_the_items_before_it():
    """Items built in spawned processes come back in order; an error while submitting item 2 (its ``send``) is
    raised after items 0 and 1, and no process outlives the prefetcher."""
    import multiprocessing

    from cmlgraph.train.build_processes import HostBuild

    def send(raw):  # noqa: ANN001, ANN202
        if raw == 2:
            raise DataError("task 2 has an empty support set; draw it again")
        return raw

    closed: list[int] = []
    hb = HostBuild(abs, send=send, finish=lambda raw, result: (raw, result), close=lambda: closed.append(1))
    items = iter(range(-1, -10, -1))
    with Prefetcher(lambda _: -next(items) - 1, build=lambda r: r, workers=2, host_build=hb) as p:
        assert [p.next(), p.next()] == [(0, 0), (1, 1)]
        with pytest.raises(DataError, match="empty support set"):
            p.next()
    assert closed == [1] and not multiprocessing.active_children() and not _workers()
    with pytest.raises(ValueError, match="also needs its build"):
        Prefetcher(lambda _: 0, workers=2, host_build=hb)


def test_closing_a_pooled_prefetcher_stops_every_thread():
    with Prefetcher(lambda _: 0, depth=1, build=lambda r: time.sleep(0.01) or r, workers=3) as p:
        time.sleep(0.05)
        assert p.alive
    assert not p.alive and not _workers()


def test_bad_worker_counts_are_refused_and_auto_resolves_by_device():
    with pytest.raises(ValueError, match="at least 1"):
        Prefetcher(lambda _: 0, workers=0, build=lambda r: r)
    with pytest.raises(ValueError, match="needs a build"):
        Prefetcher(lambda _: 0, workers=2)
    assert prefetch_workers(3, "cpu") == 3 and prefetch_workers(0, "cpu") == 1
    assert prefetch_workers(0, "cuda", cpu_count=16) == AUTO_WORKERS_MAX == 8
    assert prefetch_workers(0, "cuda:1", cpu_count=6) == 3 and prefetch_workers(0, "cuda", cpu_count=1) == 1
    with pytest.raises(ConfigError, match="prefetch_workers = -1"):
        prefetch_workers(-1, "cpu")
    with pytest.raises(ConfigError, match="--prefetch-workers -2: must be >= 0"):
        prepare(apply_overrides(Config(), {"train": {"prefetch_workers": -2}}, "test"))
    assert make_config(prefetch_workers=2).train.prefetch_workers == 2


def test_the_worker_prepares_on_the_callers_cuda_device(monkeypatch):
    """The current CUDA device is per thread: under torchrun a rank makes ``cuda:local_rank`` current on its main
    thread, and a worker that never set it would put that rank's "cuda" episode tensors on ``cuda:0`` (a device
    mismatch at the first step of every rank but 0). The worker takes the caller's device first thing (the CUDA
    calls are stood in: no GPU here)."""
    set_in: list[tuple[int, str]] = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: set_in.append((d, threading.current_thread().name)))
    with Prefetcher(_draw, torch.Generator().manual_seed(0), name="cmlgraph-test-device") as ahead:
        ahead.next()
    assert set_in == [(1, "cmlgraph-test-device")]
    set_in.clear()  # build threads take it too
    with Prefetcher(_draw, torch.Generator().manual_seed(0), name="cmlgraph-test-device", build=lambda r: r,
                    workers=2) as ahead:
        ahead.next()
        ahead.next()
    assert set_in[0] == (1, "cmlgraph-test-device") and {d for d, _ in set_in} == {1}
    assert any(name.startswith("cmlgraph-test-device-build") for _, name in set_in)


def test_disabled_prefetcher_calls_produce_in_the_caller():
    g = torch.Generator().manual_seed(1)
    seen = []
    p = Prefetcher(lambda gen: seen.append(threading.current_thread()) or torch.rand(1, generator=gen), g,
                   enabled=False)
    p.next()
    assert seen == [threading.current_thread()] and not p.alive
    assert torch.equal(g.get_state(), (lambda r: (torch.rand(1, generator=r), r.get_state())[1])(
        torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("enabled", [True, False])
def test_a_finite_stream_ends(enabled):
    items = iter(range(5))
    with Prefetcher(lambda _: next(items) * 2, depth=2, enabled=enabled) as p:
        assert list(p) == [0, 2, 4, 6, 8]


def test_a_worker_error_is_raised_in_the_caller_with_its_message():
    calls = []

    def produce(g):
        calls.append(1)
        if len(calls) == 3:
            raise DataError("node 7 has no features; give features for every node")
        return len(calls)

    p = Prefetcher(produce, depth=1)
    assert [p.next(), p.next()] == [1, 2]
    with pytest.raises(DataError, match="node 7 has no features"):
        p.next()
    assert not p.alive


def test_close_stops_a_worker_waiting_on_a_full_queue_and_an_error_in_the_caller_stops_it():
    with Prefetcher(lambda _: 0, depth=1) as p:
        time.sleep(0.05)  # the queue is full: the worker waits to put
        assert p.alive
        p.close()
        assert not p.alive
    with pytest.raises(KeyboardInterrupt), Prefetcher(lambda _: 0, depth=1) as q:
        q.next()
        raise KeyboardInterrupt  # Ctrl-C in the main thread
    assert not q.alive


def test_prefetch_setting_resolves_and_is_validated():
    assert use_prefetch("auto", "cuda") and use_prefetch("auto", "cuda:1")
    assert use_prefetch("auto", "cpu") is AUTO_ON_CPU
    assert use_prefetch("on", "cpu") and not use_prefetch("off", "cuda")
    with pytest.raises(ConfigError, match="'sometimes'"):
        use_prefetch("sometimes", "cpu")
    assert make_config(prefetch="on").train.prefetch == "on"
    with pytest.raises(ConfigError, match=r"train\.prefetch = 'sometimes'.*auto, on, off"):
        prepare(apply_overrides(Config(), {"train": {"prefetch": "sometimes"}}, "test"))


def test_cli_flag_sets_and_validates_prefetch(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--prefetch", "sometimes", "--runs-dir", str(tmp_path), "--quiet"])
    assert exc.value.code == 2
    assert "--prefetch (train.prefetch) = 'sometimes'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_graph():
    g = make_synthetic(num_nodes=300, num_classes=12, seed=0, split="4/4/4")
    g.name = "prefetch-tiny"
    return register_graph(g)


def _settings(graph: str, **extra):
    return dict(graph=graph, subgraph="khop", ways=3, shots=2, queries=3, meta_batch=2, inner_steps=1, steps=6,
                val_every=3, val_tasks=6, test_tasks=8, seed=3, dropout=0.2, **extra)


def _run(tmp_path: Path, name: str, **settings) -> Path:
    run, _ = train(make_config(runs_dir=str(tmp_path), name=name, **settings), progress=False)
    return run


def _lines(run: Path) -> list[dict]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time_s"} for r in recs]


@pytest.mark.parametrize("domain", ["graph-khop", "sinusoid", "gmeta"])
def test_training_with_prefetch_equals_without(tmp_path, tiny_graph, monkeypatch, domain):
    import cmlgraph.train.plots as plots

    monkeypatch.setattr(plots, "plot_run", lambda run_dir: [])
    settings = {"graph-khop": _settings(tiny_graph),
                "sinusoid": dict(task="sinusoid", shots=5, queries=5, hidden=16, meta_batch=2, steps=6, val_every=3,
                                 val_tasks=4, test_tasks=4, seed=2),
                # G-Meta: the worker also builds the ball layouts (TLPGraphDomain.prepare_batch); dropout stays in
                # the step, drawn from the run's own random stream
                "gmeta": dict(graph=tiny_graph, algo="gmeta", ways=3, shots=2, queries=3, meta_batch=2,
                              inner_steps=2, steps=6, val_every=3, val_tasks=6, test_tasks=8, seed=3, dropout=0.5)
                }[domain]
    off = _run(tmp_path, "off", **settings, prefetch="off")
    # one worker; and two builders (train.prefetch_workers): G-Meta's layouts and sinusoid's tasks in two threads,
    # the k-hop plans in two spawned build processes
    started: list[int] = []
    real = build_processes.ProcessBuilds.__init__
    monkeypatch.setattr(build_processes.ProcessBuilds, "__init__",
                        lambda self, builder, workers: started.append(workers) or real(self, builder, workers))
    for on in (_run(tmp_path, "on", **settings, prefetch="on"),
               _run(tmp_path, "pool", **settings, prefetch="on", prefetch_workers=2)):
        assert not _workers()  # the worker ended with its run
        ca, cb = load_torch(on / "checkpoint.pt"), load_torch(off / "checkpoint.pt")
        assert ca["step"] == cb["step"] == 6
        for k in ca["model"]:
            assert torch.equal(ca["model"][k], cb["model"][k]), k
        assert torch.equal(ca["generator"], cb["generator"])  # the next batch not yet consumed, as without it
        assert _lines(on) == _lines(off)
        assert torch.equal(load_torch(on / "scores.pt")["scores"], load_torch(off / "scores.pt")["scores"])
    assert started == ([2] if domain == "graph-khop" else [])
    import multiprocessing

    assert not multiprocessing.active_children()  # the build processes ended with their run


def test_an_error_while_preparing_a_batch_stops_the_run_and_its_worker(tmp_path, tiny_graph, monkeypatch):
    trainer = Trainer(make_config(runs_dir=str(tmp_path), name="err", **_settings(tiny_graph, prefetch="on")),
                      progress=False)
    domain = trainer.exp.domain
    real, calls = domain.materialize, []

    def failing(raw, device="cpu"):
        if threading.current_thread().name == "cmlgraph-train":
            calls.append(1)
            if len(calls) == 5:  # the third meta-batch
                raise DataError("episode node 12 vanished; rebuild the graph")
        return real(raw, device)

    monkeypatch.setattr(domain, "materialize", failing)
    with pytest.raises(DataError, match="node 12 vanished"):
        trainer.run()
    assert trainer.step == 2 and not _workers()


def test_evaluation_with_prefetch_equals_without(tiny_graph):
    e = build_experiment(prepare(make_config(**_settings(tiny_graph))))
    raws = e.domain.fixed("val", 7, 0)
    params = parameters_of(e.model)
    a = evaluate(e.algo, e.model, params, e.domain, raws, batch_size=3, prefetch=True)
    b = evaluate(e.algo, e.model, params, e.domain, raws, batch_size=3, prefetch=False)
    assert a["scores"] == b["scores"] and a["num_tasks"] == 7
    assert not _workers()


def test_evaluation_chunks_default_to_the_devices_launch_size(tiny_graph, monkeypatch):
    """Without ``batch_size`` the tasks go in chunks of ``eval_chunk(device)`` (500 on a GPU, 100 on the CPU:
    issue 18's "hundreds of tasks per launch"); the scores do not depend on the chunking."""
    import cmlgraph.train.evaluate as ev

    assert ev.eval_chunk("cuda") == 500 and ev.eval_chunk(torch.device("cuda", 0)) == 500
    assert ev.eval_chunk("cpu") == 100 and ev.eval_chunk("mps") == 100
    e = build_experiment(prepare(make_config(**_settings(tiny_graph))))
    raws = e.domain.fixed("val", 7, 0)
    params = parameters_of(e.model)
    sizes: list[int] = []
    stacked = ev.stack
    monkeypatch.setattr(ev, "stack", lambda eps: sizes.append(len(eps)) or stacked(eps))
    monkeypatch.setitem(ev.EVAL_CHUNK, "cpu", 3)
    chunked = evaluate(e.algo, e.model, params, e.domain, raws)
    assert sizes == [3, 3]  # 3, 3, then a last single task (run alone: nothing to stack)
    whole = evaluate(e.algo, e.model, params, e.domain, raws, batch_size=7)
    assert sizes[2:] == [7]
    assert chunked["scores"] == pytest.approx(whole["scores"])


def test_auto_workers_never_start_build_processes(tmp_path, tiny_graph, monkeypatch):
    """Auto (``prefetch_workers: 0``) builds in threads even where it resolves to several (a CUDA host): spawned
    processes import the user's script, which only a user who asked for them by number is told to guard."""
    import cmlgraph.train.trainer as trainer_module

    started: list[int] = []
    monkeypatch.setattr(build_processes.ProcessBuilds, "__init__", lambda self, builder, workers: started.append(1))
    monkeypatch.setattr(trainer_module, "prefetch_workers", lambda setting, device: 2)  # as on a CUDA host
    _run(tmp_path, "auto", **{**_settings(tiny_graph), "steps": 2, "val_every": 2}, prefetch="on")
    assert started == [] and not _workers()


def test_builders_that_cannot_help_are_warned_about(monkeypatch):
    import os

    from cmlgraph.train.trainer import _check_prefetch_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with pytest.warns(UserWarning, match=r"prefetch_workers = 2 has no effect: prefetching is off on cpu"):
        _check_prefetch_workers(prepare(make_config(task="sinusoid", prefetch_workers=2)))
    with pytest.warns(UserWarning, match=r"prefetch_workers = 5 is more than this machine's 2 cores.*at most 1"):
        _check_prefetch_workers(prepare(make_config(task="sinusoid", prefetch="on", prefetch_workers=5)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_prefetch_workers(prepare(make_config(task="sinusoid", prefetch="on", prefetch_workers=2)))
        _check_prefetch_workers(prepare(make_config(task="sinusoid")))  # auto: nothing to say
