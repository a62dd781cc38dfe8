"""Where each hot path's tensors live, rehearsed on PyTorch's ``meta`` device (issue 18: the GPU paths, checked
without a GPU).

:mod:`tests.train.test_sync_hot_paths` counts the ops that would sync on CUDA, but on CPU tensors: which of them
read a *device* tensor (a real sync) and which a host tensor (free) it takes from the allow-list's word. Here the
model and every device-side tensor live on ``meta`` (shapes, dtypes and autograd, no values), the host work runs
on real CPU tensors as in a CUDA run, and :class:`DevicePlacement` fails at the first op that

- reads a device tensor's value on the host (a sync op of :func:`cmlgraph.train.sync_counter.sync_kind` with a
  device argument): a real host-device sync;
- mixes a device tensor with a non-scalar CPU tensor where CUDA refuses it (a ``cat``, an ``index_select`` with a
  CPU index, an elementwise op): a run that would stop on a GPU with "Expected all tensors to be on the same
  device" although every CPU test passes;
- draws a device tensor from a CPU generator, or a CPU tensor from the device's (CUDA refuses both).

Rehearsed: each hot path's meta-iterations and an evaluation batch (the sync test's paths, and Table 3's G-Meta and
AMM-GNN alone), its CUDA-graph step (padded buffers built, filled, recorded through the stand-in graph, replayed,
captured again when outgrown), a fused ``--parallel-runs`` step of two runs (each run's dropout from its own
generator), :func:`~cmlgraph.train.evaluate.evaluate` in chunks, and the trainer's tail of a step under both NaN
policies. The ``meta`` device takes the branches that compare ``device.type`` with ``"cpu"`` (whole-graph dropout in
one pass, G-Meta without per-task feature blocks, ``torch.rand`` dropout masks) but not those that test for
``"cuda"`` (pinned copies, streams, the real capture, Adam's capturable kernels): gpu_check's CUDA-only tests cover
those. Values are not checked here at all: the CPU tests check them.
"""

from __future__ import annotations

import copy
import re
import traceback
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cmlgraph.api import make_config
from cmlgraph.backbones.base import auto_batched
from cmlgraph.core.episode import can_stack, stack
from cmlgraph.core.model import parameters_of
from cmlgraph.train.sync_counter import sync_kind
from cmlgraph.train.trainer import build_experiment, prepare
from tests.train.test_sync_hot_paths import FUSED, GRAPH, PATHS, SPARSE

DEVICE = torch.device("meta")
_TENSOR = torch.tensor
#: The sync test's paths, Table 3's G-Meta and AMM-GNN runs alone (first order, dropout 0.5, sparse features),
#: GAT's k-hop subgraphs of sparse features, and GraphSAGE's and GIN's computation trees.
ALL_PATHS = {**PATHS, "gmeta-table3": (FUSED["gmeta"], None), "ammgnn-table3": (FUSED["ammgnn"], None),
             "khop-gat-sparse": (dict(SPARSE, subgraph="khop", gnn="gat"), None),  # its subgraphs' sparse rows sent
             "khop-sage": (dict(GRAPH, subgraph="khop", gnn="sage"), None),
             "khop-gin": (dict(GRAPH, subgraph="khop", gnn="gin"), None)}

#: Ops that CUDA runs with CPU tensors among their arguments: copies between devices, and advanced indexing (its
#: CPU indices are copied to the device). ``lift_fresh`` and ``detach`` make no new data.
MIXING_ALLOWED = frozenset({"_to_copy", "copy_", "index", "index_put_", "index_put", "_index_put_impl_",
                            "lift_fresh", "lift_fresh_copy", "detach", "set_", "_has_compatible_shallow_copy_type"})
#: Sparse CSR products with a dense matrix, which the meta device lacks: answered with an output of their shape
#: (as is a coalesced COO matrix's conversion to CSR).
SPARSE_PRODUCTS = frozenset({"_sparse_addmm", "addmm", "mm", "_sparse_mm"})


#: Attributes of a cached sparse matrix that live on its device (:func:`cmlgraph.backbones.gnn_ops.transposable`).
DEVICE_ATTRS = frozenset({"_cmlgraph_transpose", "_cmlgraph_transpose_perm"})


#: Seeds from here on mark a CPU generator that stands for the device's (:func:`device_generator`): the dispatcher
#: hands an op a new Python object for its generator, so the seed, not the object, tells them apart.
DEVICE_SEEDS = 2**62


def device_generator(seed: int) -> torch.Generator:
    """A generator that :class:`DevicePlacement` takes for the device's (a GPU run's CUDA generator)."""
    return torch.Generator().manual_seed(DEVICE_SEEDS + seed)


class PlacementError(AssertionError):
    """An op that a CUDA run would refuse or sync on, with the cmlgraph function that ran it."""


def _site() -> str:
    """The innermost cmlgraph frame, past ``core/transfer.py`` (a copy is named where it was asked for)."""
    frame = next((f for f in reversed(traceback.extract_stack()) if "/cmlgraph/" in f.filename
                  and not f.filename.endswith("/cmlgraph/core/transfer.py")), None)
    return "?" if frame is None else f"{frame.filename.rsplit('/cmlgraph/', 1)[-1]}:{frame.lineno} ({frame.name})"


def _on_device(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type != "cpu"


def _host_array(t: Any) -> bool:
    """A CPU tensor that CUDA would refuse beside a device tensor (CPU scalars, 0-d, are accepted)."""
    return isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dim() > 0


def _host_to_device(op: str, args: tuple, kwargs: dict[str, Any]) -> bool:
    """Whether the op copies a CPU tensor to the device."""
    if op == "_to_copy":
        target = kwargs.get("device")
        return args[0].device.type == "cpu" and target is not None and torch.device(target).type != "cpu"
    if op == "copy_":
        return _on_device(args[0]) and isinstance(args[1], torch.Tensor) and args[1].device.type == "cpu"
    if op in ("index", "index_put_", "index_put", "_index_put_impl_"):  # CUDA copies CPU indices over with .to()
        return _on_device(args[0]) and any(_host_array(i) for i in args[1] if i is not None)
    return False


def _via_to_device() -> bool:
    return any(f.filename.endswith("/cmlgraph/core/transfer.py") for f in traceback.extract_stack())


#: Tensor constructors from host data (lists, numbers, arrays). They run below the dispatch modes' reach (the
#: Python dispatch key is excluded while they fill the tensor), so :class:`DevicePlacement` wraps them while active.
CONSTRUCTORS = (("torch", "tensor"), ("torch", "as_tensor"), ("Tensor", "new_tensor"))


class DevicePlacement(TorchDispatchMode):
    """Fails at the first op that syncs on a device tensor or mixes one with a host array (see the module's doc);
    answers the sparse CSR products the meta device lacks with an output of their shape.

    A draw onto a device tensor must come from a generator of :func:`device_generator` (``torch.Generator`` has no
    ``meta`` device), a draw onto a CPU tensor from any other, as CUDA requires the generator's device to be the
    tensor's. With ``copies``, every host-to-device copy must go through :func:`cmlgraph.core.transfer.to_device`
    (pinned, ``non_blocking`` on CUDA): PyTorch makes a plain copy from pageable memory wait for the stream
    (``cudaStreamSynchronize`` after the copy), so a prefetch worker doing one would wait for the running step;
    ``torch.tensor(data, device=...)`` and its kin are such copies. Off for what a run builds on the device once
    (the graph, its caches, G-Meta's ball index). While ``capturing`` (a CUDA graph's recorded step and its
    replays), no host-to-device copy at all: a graph replays a copy from the host address it recorded.
    """

    def __init__(self, copies: bool = True) -> None:
        super().__init__()
        self.copies = copies
        self.capturing = False
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> DevicePlacement:
        for owner, name in CONSTRUCTORS:
            where = torch if owner == "torch" else torch.Tensor
            real = getattr(where, name)
            self._saved.append((where, name, real))
            setattr(where, name, self._checked_constructor(name, real))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        while self._saved:
            where, name, real = self._saved.pop()
            setattr(where, name, real)

    def _checked_constructor(self, name: str, real: Any) -> Any:
        def build(*args: Any, **kwargs: Any) -> Any:
            data = args[1] if name == "new_tensor" else (args[0] if args else kwargs.get("data"))
            target = kwargs.get("device")
            if target is None and name == "new_tensor":
                target = args[0].device
            on_device = target is not None and torch.device(target).type != "cpu"
            already = isinstance(data, torch.Tensor) and data.device.type != "cpu"
            if on_device and not already:
                self._copy(f"torch.{name}(host data, device=...)")
            return real(*args, **kwargs)

        return build

    def _copy(self, what: str) -> None:
        """A host-to-device copy: refused while capturing, and unless sent by ``to_device`` with ``copies``."""
        if self.capturing:
            raise PlacementError(f"a host-to-device copy ({what}) inside the captured step at {_site()}: a CUDA "
                                 f"graph replays it from the host address it recorded; copy into the capture's "
                                 f"buffers before the replay")
        if self.copies and not _via_to_device():
            raise PlacementError(f"a blocking host-to-device copy ({what}) at {_site()}: a plain copy from pageable "
                                 f"memory synchronises the CUDA stream; send it with core.transfer.to_device")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, D105
        kwargs = kwargs or {}
        op = func._schema.name.split("::", 1)[1]
        flat, _ = tree_flatten((args, kwargs))
        gen = kwargs.get("generator")
        if gen is not None:
            target = kwargs.get("device") or next((t.device for t in flat if isinstance(t, torch.Tensor)), None)
            to_device = target is not None and torch.device(target).type != "cpu"
            if to_device != (gen.initial_seed() >= DEVICE_SEEDS):
                raise PlacementError(f"{op} draws {'a device' if to_device else 'a CPU'} tensor from "
                                     f"{'a CPU' if to_device else 'the device'}'s generator at {_site()}: CUDA "
                                     f"refuses a generator of another device")
        if op in INDEX_OPS:
            _check_indexing(op, args)
        if _host_to_device(op, args, kwargs):
            self._copy(op)
        if any(_on_device(t) for t in flat):
            if any(_host_array(t) for t in flat) and op not in MIXING_ALLOWED:
                raise PlacementError(f"{op} mixes device and CPU tensors at {_site()}: CUDA refuses it")
            kind = sync_kind(func, args, kwargs)
            if kind is not None:
                raise PlacementError(f"{kind} reads a device tensor back at {_site()}: a host-device sync")
            if op in SPARSE_PRODUCTS and any(_on_device(t) and t.layout == torch.sparse_csr for t in flat):
                a, b = (args[1], args[2]) if op in ("_sparse_addmm", "addmm") else (args[0], args[1])
                return torch.empty(a.shape[0], b.shape[1], dtype=b.dtype, device=b.device)
            if op == "_to_sparse_csr" and args[0].layout == torch.sparse_coo:  # (coalesced: CUDA needs no sync)
                coo = args[0]
                crow = torch.empty(coo.shape[0] + 1, dtype=torch.long, device=coo.device)
                return torch.sparse_csr_tensor(crow, coo._indices()[1], coo._values(), coo.shape)
        return func(*args, **kwargs)


INDEX_OPS = frozenset({"index", "index_put_", "index_put", "_index_put_impl_"})


def _check_indexing(op: str, args: tuple) -> None:
    """What CUDA refuses in advanced indexing: a CPU tensor indexed by device ids ("indices should be either on
    cpu or on the same device as the indexed tensor"), a device tensor given CPU values (not a scalar)."""
    indices = [i for i in args[1] if i is not None] if len(args) > 1 else []
    if args[0].device.type == "cpu" and any(_on_device(i) for i in indices):
        raise PlacementError(f"{op} indexes a CPU tensor by device ids at {_site()}: CUDA refuses it")
    if _on_device(args[0]) and len(args) > 2 and _host_array(args[2]):
        raise PlacementError(f"{op} puts CPU values into a device tensor at {_site()}: CUDA refuses it")


def _to_device(value: Any) -> Any:
    """A per-graph cache entry built on the CPU (a whole graph's adjacency with its transpose, SGC's propagated
    features, GAT's self-looped edges) moved to :data:`DEVICE`: what a GPU run builds there once."""
    if isinstance(value, tuple):
        return tuple(_to_device(v) for v in value)
    if isinstance(value, torch.Tensor) and value.layout in (torch.sparse_csr, torch.sparse_coo):
        if value.layout == torch.sparse_csr:
            out = torch.sparse_csr_tensor(value.crow_indices().to(DEVICE), value.col_indices().to(DEVICE),
                                          value.values().to(DEVICE), value.shape)
        else:
            out = torch.sparse_coo_tensor(value._indices().to(DEVICE), value._values().to(DEVICE), value.shape,
                                          is_coalesced=value.is_coalesced())
        for attr, v in vars(value).items():  # a transposable matrix's transpose (device), other notes (host)
            setattr(out, attr, _to_device(v) if attr in DEVICE_ATTRS else v)
        return out
    if isinstance(value, torch.Tensor) and value.layout == torch.strided:
        return value.to(DEVICE)
    what = f"{type(value).__name__} ({getattr(value, 'layout', '')})"
    raise TypeError(f"no rule to move a cache entry {what} to the device")


def _built(settings: dict[str, Any], batched: bool | None, device: str = "cpu") -> tuple[Any, Any, Any]:
    """``settings``' experiment on ``device``, ``choice(device)`` (the meta-step's ``batched`` there) and
    ``episodes(split, stacked, device=e.device)``, which samples a meta-batch onto the device as the prefetch worker
    does."""
    cfg = prepare(make_config(**settings, device=device))
    e = build_experiment(cfg)
    mb = int(cfg.train.meta_batch)

    def choice(dev: torch.device) -> bool | None:
        if batched is not None:
            return batched
        return {"auto": auto_batched(e.model.extractor, dev), "on": True, "off": False}[cfg.train.batched]

    def episodes(split: str, stacked: bool | None, dev: torch.device | None = None) -> list:
        dev = e.device if dev is None else dev
        eps = [e.domain.materialize(r, dev) for r in e.domain.sample(split, mb, e.generator)]
        e.domain.prepare_batch(eps, stacked)
        return eps

    return e, choice, episodes


def _move_graph_caches(domain: Any) -> None:
    """The whole graph and its caches, built on the CPU, put on :data:`DEVICE` as a GPU run holds them after its
    first step."""
    full = getattr(domain, "_full", {})
    if "cpu" in full:
        x, ei, cache = full["cpu"]
        full[str(DEVICE)] = (_to_device(x), ei.to(DEVICE), {k: _to_device(v) for k, v in cache.items()})


def _experiment_on_device(settings: dict[str, Any], batched: bool | None) -> tuple[Any, Any]:
    """``settings``' experiment warmed up by one CPU meta-iteration (which builds the per-graph caches, each built
    once a run, syncs allowed), then moved to :data:`DEVICE` with those caches; and its ``episodes(split,
    stacked)``, now onto the device."""
    e, choice, episodes = _built(settings, batched)
    e.algo.meta_gradients(e.model, parameters_of(e.model), episodes("train", choice(e.device)), e.domain.loss_fn, 0,
                          batched=choice(e.device))
    _move_graph_caches(e.domain)
    e.model.to(DEVICE)
    e.device = DEVICE
    e.batched = choice(DEVICE)
    with DevicePlacement(copies=False):  # what the run builds on the device once (G-Meta's ball index, ...)
        episodes("train", e.batched)
    return e, episodes


def rehearse(settings: dict[str, Any], batched: bool | None) -> dict[str, Any]:
    """Two meta-iterations and an evaluation batch of ``settings`` on :data:`DEVICE` under
    :class:`DevicePlacement`; returns the loss, the meta-gradients and the predictions (meta tensors)."""
    e, episodes = _experiment_on_device(settings, batched)
    params = parameters_of(e.model)
    with DevicePlacement():
        eps = episodes("train", e.batched)
        for _ in range(2):  # the first builds the batch's layouts on the device, the second reuses them
            ms = e.algo.meta_gradients(e.model, params, eps, e.domain.loss_fn, 1, batched=e.batched)
        e.model.eval()
        out = _predict(e, params, episodes)
    return {"loss": ms.loss.total, "losses": ms.loss, "grads": ms.grads, "params": params, "predictions": out,
            "meta_batch": e.cfg.train.meta_batch}


@pytest.mark.parametrize("path", list(ALL_PATHS))
def test_each_hot_path_keeps_its_tensors_on_the_device(path: str, monkeypatch) -> None:
    """No op of a meta-iteration or an evaluation batch mixes devices or reads a device tensor back: each path of
    the sync test (k-hop and whole-graph GNNs, sparse features, dropout, ProtoNet, G-Meta, AMM-GNN, sinusoid,
    images) would run on a GPU as far as placement goes, its results on the device."""
    import cmlgraph.backbones.gnn as gnn

    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)  # whole-graph dropout as on a GPU
    got = rehearse(*ALL_PATHS[path])
    assert got["loss"].device == DEVICE and got["loss"].dim() == 0
    # all three losses: the trainer stacks them on the device (a CPU one would stop a GPU run at its first step)
    assert all(v.device == DEVICE and v.dim() == 0 for v in (got["losses"].meta, got["losses"].co))
    assert set(got["grads"]) <= set(got["params"]) and got["grads"]
    assert all(g.device == DEVICE and g.shape == got["params"][k].shape for k, g in got["grads"].items())
    assert got["predictions"].device == DEVICE and got["predictions"].shape[0] == got["meta_batch"]


def test_the_checker_refuses_what_cuda_refuses_and_lets_the_rest_run() -> None:
    """The rules of :class:`DevicePlacement` on single ops: what CUDA refuses or syncs on fails, naming the op."""
    from cmlgraph.core.transfer import to_device

    dev = torch.ones(4, 3, device=DEVICE)
    host = torch.arange(2)
    refused = {
        "index_select": lambda: dev.index_select(0, host),  # (the meta device itself accepts this one)
        "cat": lambda: torch.cat([dev, torch.ones(1, 3)]),
        "add": lambda: dev + torch.ones(3),
        "embedding": lambda: torch.nn.functional.embedding(host, dev),
    }
    syncs = {
        "aten._local_scalar_dense": lambda: dev.sum().item(),
        "aten.nonzero": lambda: dev.nonzero(),
        "aten.repeat_interleave": lambda: torch.arange(4, device=DEVICE).repeat_interleave(
            torch.ones(4, dtype=torch.long, device=DEVICE)),
        "aten.index(bool mask)": lambda: dev[dev[:, 0] > 0],
        "device-to-host copy": lambda: dev.cpu(),
    }
    with DevicePlacement():
        for op, fn in refused.items():
            with pytest.raises(PlacementError, match=f"{op} mixes device and CPU tensors"):
                fn()
        for kind, fn in syncs.items():
            with pytest.raises(PlacementError, match=re.escape(f"{kind} reads a device tensor back")):
                fn()
        # blocking copies to the device: a plain .to(), a copy_ into a device tensor, advanced indexing by CPU ids
        # (CUDA copies them over with .to())
        for fn in (lambda: host.to(DEVICE), lambda: dev[:2].copy_(torch.ones(2, 3)), lambda: dev[host]):
            with pytest.raises(PlacementError, match="a blocking host-to-device copy"):
                fn()
        # accepted on CUDA: a CPU scalar beside a device tensor, copies sent by to_device (pinned, non_blocking),
        # and any host work on CPU tensors (its syncs are free)
        assert (dev * torch.tensor(2.0)).device == DEVICE
        assert dev[to_device(host, DEVICE)].shape == (2, 3)
        assert torch.arange(5).nonzero().shape == (4, 1) and int(host.sum()) == 1
        # built from host data on the device: a blocking copy too (below the dispatch: checked by wrapping)
        for fn in (lambda: torch.tensor([1, 2], device=DEVICE), lambda: torch.as_tensor([1.0], device=DEVICE),
                   lambda: dev.new_tensor([3.0])):
            with pytest.raises(PlacementError, match=r"a blocking host-to-device copy \(torch\."):
                fn()
        assert torch.full((1,), 7, device=DEVICE).shape == (1,) and torch.tensor([1]).device.type == "cpu"
        # advanced indexing that CUDA refuses: a CPU tensor by device ids, CPU values put into a device tensor
        with pytest.raises(PlacementError, match="indexes a CPU tensor by device ids"):
            torch.ones(4)[torch.zeros(2, dtype=torch.long, device=DEVICE)]
        with pytest.raises(PlacementError, match="puts CPU values into a device tensor"):
            dev.index_put_((torch.zeros(2, dtype=torch.long, device=DEVICE),), torch.ones(2, 3))
    assert torch.tensor is _TENSOR  # the constructors are given back
    with DevicePlacement(copies=False):  # what a run builds on the device once
        assert host.to(DEVICE).device == DEVICE and dev[host].shape == (2, 3)


def test_sparse_products_on_the_device_are_answered_with_their_shape() -> None:
    from cmlgraph.backbones.gnn_ops import sparse_matmul, transposable

    a = _to_device(transposable(torch.eye(3)[[1, 2, 0]].to_sparse()))
    b = torch.ones(3, 2, device=DEVICE, requires_grad=True)
    with DevicePlacement():
        y = sparse_matmul(a, b)
        (g,) = torch.autograd.grad(y.sum(), b, create_graph=True)
    assert y.shape == (3, 2) and g.shape == (3, 2) and y.device == g.device == DEVICE


@pytest.mark.parametrize("plant", ["host index", "host read"])
def test_a_planted_placement_bug_in_a_hot_path_is_caught(plant: str, monkeypatch) -> None:
    """The rehearsal fails on a hot path that a GPU run would stop on or sync in, naming the function: the proto
    head's class means given a CPU index (CUDA refuses ``index_select`` across devices) or read back once, in the
    eager step and in the captured one."""
    import cmlgraph.core.proto_head as proto_head
    from cmlgraph.errors import ConfigError

    original = proto_head.class_means

    def planted(feats, y, ways):
        means = original(feats, y, ways)
        if plant == "host index":
            return means.index_select(-2, torch.arange(ways))
        return means * float(means.sum() != 0)

    monkeypatch.setattr(proto_head, "class_means", planted)
    expect = "index_select mixes device and CPU" if plant == "host index" else "reads a device tensor back"
    with pytest.raises(PlacementError, match=f"{expect}.*proto_head.py"):
        rehearse(*PATHS["khop"])
    with pytest.raises(ConfigError, match=f"capturing the meta-step failed .*{expect}.*proto_head.py"):
        rehearse_capture(*PATHS["khop"], monkeypatch)  # (strict: the capture's error, not the eager fallback)
    monkeypatch.setattr(proto_head, "class_means", original)
    rehearse(*PATHS["khop"])  # and both pass without the plant
    assert rehearse_capture(*PATHS["khop"], monkeypatch).replays >= 4


def rehearse_capture(settings: dict[str, Any], batched: bool | None, monkeypatch: Any, batches: int = 4) -> Any:
    """``batches`` meta-steps of ``settings`` through a :class:`~cmlgraph.train.cuda_graphs.GraphedMetaStep` on
    :data:`DEVICE` under :class:`DevicePlacement`: the padded buffers built and filled, the step on them recorded
    (the stand-in graph of ``tests/conftest.py``: a real capture refuses any sync) and replayed, as on a GPU. The
    capture's one check against the eager step compares values, which the device lacks: it passes here (on a GPU
    it is one read, once a capture). ``strict``: a placement error raises instead of the eager fallback."""
    from types import SimpleNamespace

    import cmlgraph.train.cuda_graphs as cg
    from tests.conftest import StandInGraph

    placement = DevicePlacement()

    class Captured(StandInGraph):
        """The stand-in graph, its recorded step and replays run with ``capturing`` set (no host copies)."""

        def replay(self) -> None:
            placement.capturing = True
            try:
                super().replay()
            finally:
                placement.capturing = False

    def record(self: Any, fn: Any) -> tuple[Any, Any]:
        placement.capturing = True
        try:
            out = fn()
        finally:
            placement.capturing = False
        return Captured(fn, out), out

    monkeypatch.setattr(cg.GraphedMetaStep, "_record", record)
    monkeypatch.setattr(cg, "_close", lambda a, b: a.shape == b.shape and a.device == b.device)
    e, episodes = _experiment_on_device(settings, batched)
    cfg = copy.deepcopy(e.cfg)
    cfg.train.device = "cuda"
    with placement:
        first = episodes("train", e.batched)
        why = cg.ineligible(cfg, SimpleNamespace(algo=e.algo, model=e.model, device=torch.device("cuda")),
                            episodes=first)
        if why is not None:
            return why
        step = cg.GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, e.batched, strict=True)
        for i in range(batches):
            if i == 2 and step.buffers is not None:  # this batch outgrows the padded buffers: captured again
                step.buffers.fits = lambda eps: False
            out = step(first if i == 0 else episodes("train", e.batched), i)
            assert step.failed is None and step.grow_failed is None, (step.failed, step.grow_failed)
            assert out.loss.total.device == DEVICE
    return step


#: The hot paths whose meta-step a GPU run captures (:func:`cmlgraph.train.cuda_graphs.ineligible` on CUDA).
CAPTURED = [p for p in ALL_PATHS if p != "protonet"]  # (ProtoNet has its own meta-step: never captured)


@pytest.mark.parametrize("path", CAPTURED)
def test_each_captured_path_records_and_replays_on_the_device(path: str, monkeypatch) -> None:
    """The CUDA-graph path (padded plan, union, ball and matched buffers, filled each step) keeps to the device
    too: captured, checked, replayed and, where a batch outgrows the buffers, captured again, with no op that
    mixes devices or syncs (a real capture fails at a sync)."""
    import cmlgraph.backbones.gnn as gnn

    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)
    step = rehearse_capture(*ALL_PATHS[path], monkeypatch)
    assert not isinstance(step, str), f"not captured on a GPU: {step}"
    assert step.captures == (1 if step.buffers is None else 2) and step.replays >= 4


@pytest.mark.parametrize("path", ["khop-gcn", "ammgnn-table3", "khop-gcn-dropout"])
def test_a_captured_step_of_a_large_meta_batch_copies_nothing_from_the_host(path: str, monkeypatch) -> None:
    """At meta-batch 8 (``gnn_plan.BATCH_LAYOUT_TASKS``), where an eager step off the CPU builds its layout at once
    with its segment sizes copied from the host, the captured step still reads only its padded buffers
    (``StaticTaskLayout``): no host copy is recorded or replayed (a replay would read the host address it
    recorded). The eager batched layout itself is rehearsed by the next test."""
    import cmlgraph.backbones.gnn as gnn
    from cmlgraph.backbones.gnn_plan import BATCH_LAYOUT_TASKS

    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)
    settings, batched = ALL_PATHS[path]
    step = rehearse_capture(dict(settings, meta_batch=BATCH_LAYOUT_TASKS), batched, monkeypatch)
    assert not isinstance(step, str) and step.replays >= 4


@pytest.mark.parametrize("path", ["khop-gcn", "khop-gcn-dropout", "khop-sage", "khop-gcn-sparse", "khop-sgc-sparse",
                                  "ammgnn", "khop"])
def test_a_large_meta_batch_builds_its_layout_at_once_on_the_device(path: str, monkeypatch) -> None:
    """At meta-batch 8 an eager step and an evaluation batch off the CPU build the k-hop layout at once
    (``gnn_plan.layout_batches``: block diagonals by concatenation, constants by one CSR product): that too keeps
    to the device, its host sizes sent by ``to_device``, with no read-back."""
    import cmlgraph.backbones.gnn as gnn
    import cmlgraph.backbones.gnn_plan as gnn_plan

    calls: list[int] = []
    original = gnn_plan._segments
    monkeypatch.setattr(gnn_plan, "_segments", lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)
    settings, batched = ALL_PATHS[path]
    got = rehearse(dict(settings, meta_batch=gnn_plan.BATCH_LAYOUT_TASKS), batched)
    assert calls, "the batched layout was not built"
    assert got["loss"].device == DEVICE and got["predictions"].shape[0] == gnn_plan.BATCH_LAYOUT_TASKS


#: The fused ``--parallel-runs`` step of the sync test (Table 3's G-Meta and AMM-GNN with dropout, each run's masks
#: from its own generator; k-hop GCN with dropout), and the same without dropout (no generators).
FUSED_PATHS = {**{p: (FUSED[p], True) for p in FUSED},
               **{f"{p}-no-dropout": ({**FUSED[p], "dropout": 0.0}, False) for p in FUSED}}


@pytest.mark.parametrize("path", list(FUSED_PATHS))
def test_a_fused_parallel_runs_step_keeps_to_the_device(path: str) -> None:
    """Two runs' meta-step as one computation (:func:`cmlgraph.train.parallel.fused_gradients`) on the device:
    no mixing, no sync, and each run's dropout drawn from its own device generator, as a GPU run's are."""
    from types import SimpleNamespace

    from cmlgraph.train.parallel import fused_gradients

    settings, with_generators = FUSED_PATHS[path]
    runs = [_experiment_on_device({**settings, "seed": seed}, True) for seed in (0, 1)]
    gens = [device_generator(seed) for seed in (0, 1)] if with_generators else None
    with DevicePlacement():
        episodes = [eps("train", True) for _, eps in runs]
        steps = fused_gradients([SimpleNamespace(exp=e, step=1) for e, _ in runs], episodes, generators=gens)
    for (e, _), ms in zip(runs, steps, strict=True):
        params = parameters_of(e.model)
        assert ms.loss.total.device == DEVICE and set(ms.grads) == set(params)
        assert all(ms.grads[k].device == DEVICE and ms.grads[k].shape == params[k].shape for k in params)


def _trainer_on_device(settings: dict[str, Any], tmp_path: Any, steps_on: torch.device = DEVICE) -> Any:
    """A :class:`~cmlgraph.train.trainer.Trainer` of ``settings`` after one CPU step (the per-graph caches built),
    moved to :data:`DEVICE` with those caches and one unchecked step there (what the run builds on the device
    once); Adam's moments on the device and its step counts on ``steps_on``, its own update left out (its
    capturable kernels accept CUDA devices only: their placement is PyTorch's)."""
    from cmlgraph.train.trainer import Trainer, trained_parameters

    cfg = make_config(**{**settings, "steps": 3, "runs_dir": str(tmp_path), "name": f"{steps_on.type}-run"})
    trainer = Trainer(cfg, progress=False)
    trainer._pending = []
    trainer._train_step()
    trainer.step += 1
    e = trainer.exp
    _move_graph_caches(e.domain)
    e.model.to(DEVICE)
    e.device = DEVICE
    opt = e.optimizer
    opt.param_groups[0]["params"] = trained_parameters(trainer.cfg, e.model)
    opt.state.clear()
    for p in opt.param_groups[0]["params"]:
        opt.state[p] = {"step": torch.zeros((), device=steps_on), "exp_avg": torch.zeros_like(p),
                        "exp_avg_sq": torch.zeros_like(p)}
    opt.step = lambda *args, **kwargs: None
    with DevicePlacement(copies=False):
        trainer._train_step()
        trainer.step += 1
    trainer._pending = []
    return trainer


def _step_tail(tmp_path, policy: str, steps_on: torch.device) -> Any:
    """A sinusoid trainer's :meth:`~cmlgraph.train.trainer.Trainer._step_record` of one meta-step on the device
    under :class:`DevicePlacement`, Adam's step counts on ``steps_on``."""
    trainer = _trainer_on_device({"task": "sinusoid", "shots": 5, "queries": 5, "hidden": 16, "meta_batch": 2,
                                  "nan_policy": policy}, tmp_path, steps_on)
    e = trainer.exp
    eps = [e.domain.materialize(r, DEVICE) for r in e.domain.sample("train", 2, e.generator)]
    ms = e.algo.meta_gradients(e.model, parameters_of(e.model), eps, e.domain.loss_fn, 0, batched=True)
    with DevicePlacement():
        record = trainer._step_record(ms)
    return trainer, record


TRAINER_PATHS = {p: ALL_PATHS[p][0] for p in ("sinusoid", "khop", "full-gcn-dropout", "gmeta-table3", "ammgnn-table3")}
TRAINER_PATHS["khop-maml"] = {**ALL_PATHS["khop"][0], "cml": False}  # no co-learner: its loss term still stacked


@pytest.mark.parametrize("path", list(TRAINER_PATHS))
def test_a_whole_trainer_step_keeps_to_the_device(tmp_path, path: str) -> None:
    """:meth:`~cmlgraph.train.trainer.Trainer._train_step` as a run takes it (its meta-batch drawn and materialized,
    the CUDA-graph choice, the meta-gradients, the step's tail), with the run's own settings."""
    trainer = _trainer_on_device(TRAINER_PATHS[path], tmp_path)
    with DevicePlacement():
        record = trainer._train_step()
    ((step, kept, _),) = trainer._pending
    assert record["step"] == step == 3 and kept.device == DEVICE


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_the_tail_of_a_trainer_step_keeps_to_the_device(tmp_path, policy: str) -> None:
    """The trainer's tail of a meta-step (the losses and finiteness flag kept on the device for the next flush, the
    optimizer step and, under ``nan_policy: skip``, its undo by ``torch.where``) neither mixes devices nor reads
    back, Adam's state held as capturable Adam holds it on a GPU (moments and step counts on the device)."""
    trainer, record = _step_tail(tmp_path, policy, DEVICE)
    assert record["step"] == 3 and "loss" not in record  # filled by the next flush (two steps were taken before)
    ((step, kept, _),) = trainer._pending
    assert step == 3 and kept.device == DEVICE and kept.shape == (4,)  # total, meta, co, finite
    assert all(p.device == DEVICE for p in trainer.exp.model.parameters())


def test_skip_needs_adams_step_counts_on_the_device(tmp_path) -> None:
    """Why Adam is capturable on CUDA under ``nan_policy: skip`` (:func:`~cmlgraph.train.trainer.build_experiment`):
    with its step counts on the host, where non-capturable Adam keeps them, the undo reads the device's flag back;
    ``stop`` has no undo."""
    with pytest.raises(PlacementError, match=r"device-to-host copy .*_apply_if_finite"):
        _step_tail(tmp_path, "skip", torch.device("cpu"))
    _step_tail(tmp_path, "stop", torch.device("cpu"))


def _scored_chunks(monkeypatch: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each evaluation chunk's predictions and targets, recorded in place of its one read-back
    (:meth:`~cmlgraph.train.evaluate.Tally.add_tasks`: the device has no values to read)."""
    from cmlgraph.train.evaluate import Tally

    scored: list[tuple[torch.Tensor, torch.Tensor]] = []
    monkeypatch.setattr(Tally, "add_tasks", lambda self, out, co, y: scored.append((out, y)))
    monkeypatch.setattr(Tally, "result", lambda self: {})
    return scored


@pytest.mark.parametrize("path", list(ALL_PATHS))
def test_evaluation_keeps_to_the_device_but_for_one_read_a_chunk(path: str, monkeypatch) -> None:
    """:func:`cmlgraph.train.evaluate.evaluate` of fixed tasks on the device (chunks sized by the input and
    activation budgets, episodes materialized and their layouts built, the tasks adapted together): the only
    read-back is each chunk's scores (:meth:`~cmlgraph.train.evaluate.Tally.add_tasks`, left out here: the
    device has no values)."""
    import cmlgraph.backbones.gnn as gnn
    from cmlgraph.train.evaluate import evaluate

    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)
    scored = _scored_chunks(monkeypatch)
    e, _ = _experiment_on_device(*ALL_PATHS[path])
    raws = e.domain.sample("test", 7, e.generator)
    params = parameters_of(e.model)
    with DevicePlacement():
        evaluate(e.algo, e.model, params, e.domain, raws, DEVICE, batch_size=4)
    assert all(out.device == y.device == DEVICE and out.shape[:2] == y.shape[:2] for out, y in scored)
    chunks = [out.shape[0] for out, _ in scored]
    assert sum(chunks) == 7 and len(chunks) >= 2


@pytest.mark.parametrize("control", ["none", "cl", "noise", "frozen-co"])
@pytest.mark.parametrize("algo", ["maml", "anil", "boil", "mamlpp", "sharp-maml"])
def test_every_maml_family_algorithm_and_control_keeps_to_the_device(algo: str, control: str, monkeypatch) -> None:
    """The MAML family (BOIL's, ANIL's and MAML++'s own inner loops and learned rates, Sharp-MAML's second gradient
    point) under each of the paper's controls (the co-learner adapted in the inner loop, gradient noise drawn on
    the host, a frozen co-learner) on computation trees: eager, and captured where a GPU run captures it."""
    settings = {**PATHS["khop"][0], "algo": algo, "control": control, "cml": control != "noise",
                "first_order": algo == "maml" and control == "none"}  # (first-order MAML: FOMAML, captured too)
    got = rehearse(settings, None)
    assert got["loss"].device == DEVICE and all(g.device == DEVICE for g in got["grads"].values())
    assert got["losses"].meta.device == got["losses"].co.device == DEVICE  # (noise: no co-learner, co still there)
    step = rehearse_capture(settings, None, monkeypatch)
    eligible = algo in ("maml", "anil", "boil") and control != "noise"  # noise: drawn on the host each step
    assert isinstance(step, str) != eligible, step


@pytest.mark.parametrize("path", ["sinusoid", "digits", "khop", "full-gcn", "khop-gat", "gmeta-table3",
                                  "ammgnn-table3"])
def test_fused_evaluation_of_runs_keeps_to_the_device(path: str, monkeypatch) -> None:
    """:func:`cmlgraph.train.evaluate.evaluate_runs` (``compare``/``reproduce --parallel-runs``: several runs' fixed
    tasks as one batch, each task adapted from its own run's parameters) on the device: the only read-back is
    each chunk's scores, as alone."""
    import cmlgraph.backbones.gnn as gnn
    from cmlgraph.train.evaluate import evaluate_runs, runs_fusable

    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)
    scored = _scored_chunks(monkeypatch)
    e, _ = _experiment_on_device(*ALL_PATHS[path])
    params = [parameters_of(e.model), {k: v * 2 for k, v in parameters_of(e.model).items()}]
    assert runs_fusable(e.algo, e.model, params, DEVICE)
    runs = [(p, e.domain, e.domain.sample("test", 3, e.generator)) for p in params]
    with DevicePlacement():
        out = evaluate_runs(e.algo, e.model, runs, DEVICE, batch_size=4)
    assert all(o.device == y.device == DEVICE for o, y in scored)
    assert out == [{}, {}] and sum(o.shape[0] for o, _ in scored) == 6


#: Paths checked on a real GPU where one is lent (gpu_check's tests step): PyTorch's own detector, the ground truth
#: that the rehearsal above stands in for.
ON_CUDA = ["khop", "full-gcn-dropout", "khop-gat", "khop-gcn-sparse-dropout", "gmeta-table3", "ammgnn-table3",
           "sinusoid", "digits"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cuda_experiment(path: str, meta_batch: int | None = None) -> tuple[Any, Any]:
    """``path``'s experiment on ``cuda`` (at ``meta_batch`` tasks, else its own) after one meta-iteration and one
    evaluation batch (the per-run caches built), and its ``episodes(split, stacked)``."""
    settings, batched = ALL_PATHS[path]
    settings = settings if meta_batch is None else dict(settings, meta_batch=meta_batch)
    e, choice, episodes = _built(settings, batched, device="cuda")
    e.batched = choice(e.device)
    params = parameters_of(e.model)
    e.algo.meta_gradients(e.model, params, episodes("train", e.batched), e.domain.loss_fn, 0, batched=e.batched)
    e.model.eval()
    _predict(e, params, episodes)
    e.model.train()
    return e, episodes


def _predict(e: Any, params: dict[str, torch.Tensor], episodes: Any) -> torch.Tensor:
    """An evaluation batch's predictions, as :func:`~cmlgraph.train.evaluate.evaluate` makes them."""
    together = auto_batched(e.model.extractor, e.device) is None
    veps = episodes("val", None if together else False)
    if together and can_stack(veps):
        return e.algo.predict(e.model, params, stack(veps), e.domain.loss_fn, batched=True)[0]
    return torch.stack([e.algo.predict(e.model, params, ep, e.domain.loss_fn)[0] for ep in veps])


@needs_cuda
@pytest.mark.parametrize("path", ON_CUDA)
def test_no_host_device_sync_in_a_meta_iteration_on_cuda(path: str) -> None:
    """A meta-batch materialized (its copies to the device), two meta-iterations and an evaluation batch under
    ``torch.cuda.set_sync_debug_mode("error")``, which raises at any host-device synchronisation: scalar reads,
    data-dependent shapes, blocking copies (issue 18, Build item 2)."""
    _no_sync_on_cuda(path)


@needs_cuda
@pytest.mark.parametrize("path", ["khop-gcn", "khop-sage", "ammgnn"])
def test_no_host_device_sync_with_a_layout_built_at_once_on_cuda(path: str) -> None:
    """The same at meta-batch 8 (``gnn_plan.BATCH_LAYOUT_TASKS``), where the k-hop layout is built at once on a
    GPU: its host sizes copied pinned and ``non_blocking``, its constants one cuSPARSE product."""
    from cmlgraph.backbones.gnn_plan import BATCH_LAYOUT_TASKS

    _no_sync_on_cuda(path, BATCH_LAYOUT_TASKS)


def _no_sync_on_cuda(path: str, meta_batch: int | None = None) -> None:
    e, episodes = _cuda_experiment(path, meta_batch)
    params = parameters_of(e.model)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        eps = episodes("train", e.batched)
        for _ in range(2):
            ms = e.algo.meta_gradients(e.model, params, eps, e.domain.loss_fn, 1, batched=e.batched)
        e.model.eval()
        out = _predict(e, params, episodes)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(ms.loss.total) and torch.isfinite(out).all()


@needs_cuda
@pytest.mark.parametrize("path", ["khop-gcn", "gmeta-table3", "ammgnn-table3", "sinusoid"])
def test_replays_of_a_captured_step_do_not_sync_on_cuda(path: str) -> None:
    """The CUDA-graph step: after the capture (which checks itself against the eager step: one read), a replay
    (the batch copied into the buffers, the graph launched) never synchronises."""
    from cmlgraph.train.cuda_graphs import GraphedMetaStep

    e, episodes = _cuda_experiment(path)
    step = GraphedMetaStep(e.algo, e.model, e.domain.loss_fn, e.batched, strict=True)
    step(episodes("train", e.batched), 0)
    replayed = 0
    for i in range(1, 6):
        eps = episodes("train", e.batched)
        if step.buffers is not None and not step.buffers.fits(eps):
            step(eps, i)  # outgrown: captured again (a capture may sync)
            continue
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = step(eps, i)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        replayed += 1
        assert torch.isfinite(out.loss.total)
    assert replayed >= 2 and step.failed is None


def test_a_layout_mixing_tasks_with_and_without_repeated_nodes_selects_on_the_device() -> None:
    """:meth:`~cmlgraph.backbones.gnn_plan.TaskLayout.select_output` where one task requests a node twice (its plan
    maps the requested nodes through ``out``) and another does not: the identity positions of the latter are made
    on the device (no path above has repeated requested nodes, so none reaches this branch)."""
    from cmlgraph.backbones.gnn_plan import Plan, TaskLayout

    x = torch.zeros(5, 2, device=DEVICE)
    repeated = Plan(sizes=[0, 3], mats=[], x=x, out=torch.tensor([0, 1, 1, 2]).to(DEVICE))  # 4 requests, 3 rows
    plain = Plan(sizes=[0, 4], mats=[], x=x, out=None)
    layout = TaskLayout([repeated, plain])
    h = torch.ones(2 * 4, 7, device=DEVICE)
    with DevicePlacement():
        out = layout.select_output(h)
    assert out.shape == (2, 4, 7) and out.device == DEVICE


def test_the_benchs_image_episodes_go_to_the_device_as_the_packages_do() -> None:
    """``cmlgraph bench``'s random-image workload sends its episodes with ``to_device`` like the package's domains,
    so a GPU bench does not time stream synchronisations that training no longer pays."""
    from cmlgraph.bench.workloads import RandomImageDomain

    domain = RandomImageDomain(ways=3, shots=1, queries=2, channels=1, size=28, pool=2)
    raw = domain.sample("train", 1, torch.Generator().manual_seed(0))[0]
    with DevicePlacement():
        ep = domain.materialize(raw, DEVICE)
    assert ep.support_x.device == ep.query_y.device == DEVICE and ep.support_x.shape == raw.support_x.shape
