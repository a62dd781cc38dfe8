"""Split meta-gradients: the slices of N ranks, all-reduced, give every algorithm's full-batch meta-gradient.

The ranks run as threads of this process around an in-memory all-reduce (the real gloo path is exercised by
``test_torchrun.py``), each with its own model and algorithm, built alike, as torchrun's processes would be. Float64
and meta-batches that do not split evenly.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import pytest
import torch

from cmlgraph.algorithms import get_algorithm
from cmlgraph.algorithms.base import MetaAlgorithm
from cmlgraph.algorithms.registry import ALGORITHMS
from cmlgraph.config import AlgoConfig, Config
from cmlgraph.core.model import parameters_of
from cmlgraph.errors import ConfigError
from cmlgraph.train.distributed import DistContext, setup, supported_algorithms, world_from_env
from tests.conftest import tiny_episodes, tiny_model


class _Exchange:
    """An all-reduce among threads: every rank gets the rank-ordered sum of everyone's tensors."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world, timeout=60)
        self.slots: list[list[torch.Tensor] | None] = [None] * world

    def sum(self, rank: int, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        self.slots[rank] = [t.detach().clone() for t in tensors]
        self.barrier.wait()
        out = [sum(slot[i] for slot in self.slots[1:]) + self.slots[0][i] for i in range(len(tensors))]
        self.barrier.wait()
        return out


@dataclass(frozen=True)
class _ThreadRank(DistContext):
    exchange: _Exchange | None = None

    def all_reduce_sum(self, tensors):
        assert self.exchange is not None
        return self.exchange.sum(self.rank, list(tensors))


def _cfg(**kw) -> AlgoConfig:
    base = dict(inner_steps=2, inner_lr=0.3, co_depth=0)
    base.update(kw)
    return AlgoConfig(**base)


def _build(cfg: AlgoConfig):
    algo = get_algorithm(cfg, total_steps=40, seed=5)
    model = tiny_model(co_depth=0 if algo.cml else None)
    algo.prepare(model)
    return algo, model


def _split_run(cfg: AlgoConfig, world: int, batch: int, step: int, diagnostics: bool):
    """Every rank's MetaStep, computed from its slice on its own model and algorithm (as separate processes)."""
    episodes = tiny_episodes(batch)
    exchange = _Exchange(world)
    results: list = [None] * world
    errors: list[BaseException] = []
    built = [_build(cfg) for _ in range(world)]  # here: initialisation draws from torch's global generator

    def rank_main(rank: int) -> None:
        try:
            algo, model = built[rank]
            ctx = _ThreadRank(rank, world, rank, world, exchange)
            lo, hi = ctx.slice_bounds(batch)
            results[rank] = ctx.meta_gradients(algo, model, parameters_of(model), episodes[lo:hi], torch.nn.functional
                                               .cross_entropy, step, meta_batch=batch, seed=0,
                                               diagnostics=diagnostics)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)
            exchange.barrier.abort()

    with torch.random.fork_rng():  # ranks > 0 reseed torch's global generator
        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return results


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to summation order: tight in float64, float32 for MAML++'s learned rates."""
    atol, rtol = (1e-12, 1e-9) if a.dtype == torch.float64 else (1e-7, 1e-5)
    return a.dtype == b.dtype and torch.allclose(a, b, atol=atol, rtol=rtol)


CASES = {
    "maml+cml": dict(algo="maml"),
    "maml": dict(algo="maml", cml=False),
    "anil+cml": dict(algo="anil"),
    "boil+cml": dict(algo="boil"),
    "first-order": dict(algo="maml", first_order=True),
    "maml++": dict(algo="maml++"),  # step 1: first order, multi-step loss weights, learned rates
    "sharp-maml": dict(algo="sharp-maml", sam_rho=0.3),
    "sharp-maml inner": dict(algo="sharp-maml", sam_rho=0.3, sam_inner=True),
    "noise": dict(algo="maml", cml=False, control="noise", noise_std=0.5),
    "sharp+noise": dict(algo="sharp-maml", cml=False, control="noise", noise_std=0.5),
    "cl": dict(algo="maml", cml=False, control="cl"),
    "protonet+cml": dict(algo="protonet"),
}


@pytest.mark.parametrize("diagnostics", [False, True], ids=["plain", "diag"])
@pytest.mark.parametrize(("world", "batch"), [(2, 4), (3, 5)])
@pytest.mark.parametrize("case", list(CASES))
def test_split_equals_full_batch(case, world, batch, diagnostics):
    cfg = _cfg(**CASES[case])
    algo, model = _build(cfg)
    params = parameters_of(model)
    ref = algo.meta_gradients(model, params, tiny_episodes(batch), torch.nn.functional.cross_entropy, 1,
                              diagnostics=diagnostics)
    for rank, ms in enumerate(_split_run(cfg, world, batch, 1, diagnostics)):
        assert ms.grads.keys() == ref.grads.keys()
        for k in ref.grads:
            assert _close(ms.grads[k], ref.grads[k]), f"rank {rank}: {k}"
        for part in ("meta", "co", "total"):
            assert torch.allclose(getattr(ms.loss, part), getattr(ref.loss, part), atol=1e-12), part
        assert ms.diagnostics.keys() == ref.diagnostics.keys()
        if ref.diagnostics:
            assert ms.diagnostics["cos_extractor"] == pytest.approx(ref.diagnostics["cos_extractor"], abs=1e-9)
            for layer, values in ref.diagnostics["layers"].items():
                for key, value in values.items():
                    assert ms.diagnostics["layers"][layer][key] == pytest.approx(value, abs=1e-9), (layer, key)


@pytest.mark.parametrize("diagnostics", [False, True], ids=["plain", "diag"])
@pytest.mark.parametrize("case", ["maml+cml", "first-order", "sharp-maml", "maml++"])
def test_slices_in_memory_groups_equal_the_full_batch(case, diagnostics, monkeypatch):
    """A rank's slice over the memory budget runs in task groups (one task each here) whose gradients are summed
    before the all-reduce: still the full batch's meta-gradient, losses and diagnostics."""
    import cmlgraph.train.distributed as distributed

    cfg = _cfg(**CASES[case])
    algo, model = _build(cfg)
    ref = algo.meta_gradients(model, parameters_of(model), tiny_episodes(5), torch.nn.functional.cross_entropy, 1,
                              diagnostics=diagnostics)
    groups: list[int] = []

    def one_task_each(extractor, episodes, kept, device):
        groups.append(len(episodes))
        return [(i, i + 1) for i in range(len(episodes))]

    monkeypatch.setattr(distributed, "training_spans", one_task_each)
    sizes: list[int] = []
    task_losses = MetaAlgorithm.task_losses

    def counted(self, model, p, ep, loss_fn, step, batched=False):
        sizes.append(int(ep.support_y.shape[0]) if batched else 1)
        return task_losses(self, model, p, ep, loss_fn, step, batched)

    monkeypatch.setattr(MetaAlgorithm, "task_losses", counted)
    for ms in _split_run(cfg, 2, 5, 1, diagnostics):
        for k in ref.grads:
            assert _close(ms.grads[k], ref.grads[k]), k
        for part in ("meta", "co", "total"):
            assert torch.allclose(getattr(ms.loss, part), getattr(ref.loss, part), atol=1e-12), part
        if ref.diagnostics:
            assert ms.diagnostics["cos_extractor"] == pytest.approx(ref.diagnostics["cos_extractor"], abs=1e-9)
    assert set(groups) == {3, 2}  # the two ranks' slices
    assert sizes and set(sizes) == {1}  # each task differentiated on its own


def test_noise_is_added_once_and_generators_stay_in_step():
    """Two steps in a row: the noise of the second step also matches, so every rank drew exactly once."""
    cfg = _cfg(algo="maml", cml=False, control="noise", noise_std=1.0)
    algo, model = _build(cfg)
    params = parameters_of(model)
    eps = tiny_episodes(4)
    ref = [algo.meta_gradients(model, params, eps, torch.nn.functional.cross_entropy, s).grads for s in (0, 1)]
    exchange = _Exchange(2)
    out: dict[int, list] = {}
    built = [_build(cfg) for _ in range(2)]

    def rank_main(rank: int) -> None:
        a, m = built[rank]
        ctx = _ThreadRank(rank, 2, rank, 2, exchange)
        lo, hi = ctx.slice_bounds(4)
        out[rank] = [ctx.meta_gradients(a, m, parameters_of(m), eps[lo:hi], torch.nn.functional.cross_entropy, s,
                                        meta_batch=4, seed=0).grads for s in (0, 1)]

    with torch.random.fork_rng():
        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for rank in (0, 1):
        for s in (0, 1):
            for k in ref[s]:
                assert _close(out[rank][s][k], ref[s][k]), (rank, s, k)


def test_slices_cover_the_batch_contiguously():
    for world in (1, 2, 3, 4):
        for n in range(world, 11):
            bounds = [DistContext(r, world).slice_bounds(n) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            assert all(hi > lo for lo, hi in bounds)


def test_one_process_without_torchrun_variables(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert world_from_env() is None
    ctx = setup()
    assert (ctx.active, ctx.is_main, ctx.slice_bounds(5)) == (False, True, (0, 5))
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert world_from_env() is None and not setup().active


def test_incomplete_torchrun_variables_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(ConfigError, match="MASTER_ADDR is not set"):
        world_from_env()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ConfigError, match="RANK='two' is not an integer"):
        world_from_env()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="out of range"):
        world_from_env()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert world_from_env() == (1, 2, 1, 2)


def _train_cfg(**algo) -> Config:
    cfg = Config()
    cfg.data.task = "sinusoid"
    cfg.train.meta_batch = 4
    for k, v in algo.items():
        setattr(cfg.algo, k, v)
    return cfg


def test_unsupported_settings_are_refused(monkeypatch):
    ctx = DistContext(0, 2, 0, 2)
    ctx.check_config(_train_cfg())
    for name in ("maml", "anil", "boil", "maml++", "sharp-maml", "protonet"):
        assert name in supported_algorithms()
        ctx.check_config(_train_cfg(algo=name))

    class Custom(MetaAlgorithm):
        name = "custom"

        def meta_gradients(self, *args, **kwargs):  # not a mean over episodes
            raise NotImplementedError

    monkeypatch.setitem(ALGORITHMS, "custom", Custom)
    with pytest.raises(ConfigError, match=r"--algo custom does not support distributed training.*maml, anil"):
        ctx.check_config(_train_cfg(algo="custom"))
    with pytest.raises(ConfigError, match="does not support distributed training"):
        ctx.meta_gradients(Custom(_cfg()), tiny_model(), {}, [], torch.nn.functional.cross_entropy, 0, meta_batch=1,
                           seed=0)
    small = _train_cfg()
    small.train.meta_batch = 3
    with pytest.raises(ConfigError, match="--meta-batch 3 is smaller than the 4 processes"):
        DistContext(0, 4, 0, 4).check_config(small)
    mps = _train_cfg()
    mps.train.device = "mps"
    with pytest.raises(ConfigError, match="--device mps cannot train distributed"):
        ctx.check_config(mps)
    DistContext().check_config(small)  # one process: nothing to refuse


def test_a_process_given_its_own_gpu_by_the_launcher_trains_on_it(monkeypatch):
    """SLURM-style binding: each process sees one GPU (its own, through CUDA_VISIBLE_DEVICES), so LOCAL_RANK 1 has
    no "GPU 1". It trains on its one visible GPU; without such a binding LOCAL_RANK 1 of one visible GPU is still
    refused (two processes would share it). The CUDA calls are stood in (no GPU here)."""
    import torch.distributed as dist

    from cmlgraph.train.distributed import own_gpu

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    cfg = _train_cfg()
    cfg.train.device = "cuda"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ConfigError, match="LOCAL_RANK 1 has no GPU of its own.*CUDA_VISIBLE_DEVICES"):
        DistContext(1, 2, 1, 2).check_config(cfg)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    uuids = {0: "GPU-a", 1: "GPU-b"}  # what each rank's one visible GPU is
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("P", (), {"uuid": uuids[1]})())

    def gather(out, obj):  # every rank's (host, uuid): rank 0's GPU and this rank's
        out[:] = [(obj[0], uuids[0]), obj]  # rank 0 on the same node

    monkeypatch.setattr(dist, "all_gather_object", gather)
    DistContext(1, 2, 1, 2).check_config(cfg)  # its own GPU (another UUID than rank 0's)
    uuids[1] = "GPU-a"  # CUDA_VISIBLE_DEVICES=0 exported to both processes: the same GPU
    with pytest.raises(ConfigError, match="some see the same one.*give each process its own GPU"):
        DistContext(1, 2, 1, 2).check_config(cfg)
    assert (own_gpu(1, 1), own_gpu(1, 4), own_gpu(5, 4)) == (0, 1, None)


def test_a_cpu_run_under_torchrun_leaves_the_gpus_alone(monkeypatch):
    """On a GPU node, ``--device cpu`` under torchrun made each rank's GPU current (a CUDA context of hundreds of
    MiB a process, never used); a CUDA run, or one whose device is not known yet (resume), still does. The process
    group and the CUDA calls are stood in."""
    import torch.distributed as dist

    import cmlgraph.train.distributed as distributed

    made_current: list[int] = []
    monkeypatch.setattr(distributed, "world_from_env", lambda: (1, 2, 1, 2))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *args, **kwargs: None)
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    monkeypatch.setattr(distributed, "_OWNED", True)  # no exit hook for this stand-in group
    for device in ("cpu", "cuda", None):
        ctx = distributed.setup(device)
        assert (ctx.rank, ctx.world_size, ctx.local_rank) == (1, 2, 1)
    assert made_current == [1, 1]  # cuda and not-yet-known; never for cpu


def test_rank0_only_parts_in_one_process_just_run():
    ctx = DistContext()
    assert ctx.on_rank0(lambda a, b: a + b, 2, 3) == 5
    assert ctx.staged(lambda: "built") == "built"
    tensors = [torch.ones(2)]
    assert ctx.all_reduce_sum(tensors)[0] is tensors[0]
    model = copy.deepcopy(tiny_model())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx.broadcast_module(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
