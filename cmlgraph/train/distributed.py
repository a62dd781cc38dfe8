"""Data-parallel meta-training over processes started by ``torchrun``: every process computes the meta-gradient of a
slice of each meta-batch and an all-reduce sums the slices.

Why it looks like this: a run on N processes must end with the parameters of a one-process run of the same seed
(within float rounding), so nothing random may depend on N. Every rank draws the *same* full meta-batch from the same
episode generator (so the generators stay in step without any communication), computes the meta-gradient of its
contiguous slice of episodes weighted by ``slice size / meta-batch size``, and ``all_reduce(SUM)`` turns the slices
into the full-batch mean. Every rank then takes the same Adam step on the same parameters; after the initial
broadcast no parameter is ever sent. Losses are reduced the same way, so the logged losses are full-batch means.

Algorithms. MAML, ANIL, BOIL, MAML++ and ProtoNet average per-episode terms, so slicing is exact. Sharp-MAML
perturbs the parameters along the *full-batch* first gradient: that gradient is all-reduced before the perturbation
and the gradient at the perturbed point is reduced again, so it is exact too. An algorithm that forms its
meta-gradient in another way is refused with a :class:`ConfigError` naming the supported ones. The noise control
adds its noise once, after the all-reduce, from the algorithm's generator, which is identical on every rank.
Gradient diagnostics reduce the meta-learner's and the co-learner's gradients separately before the cosines and
norms are taken, so they are those of the full batch as well.

Not equal to one process: GNN dropout masks. They come from torch's global generator, which a one-process run
advances through the whole meta-batch. Here rank 0 keeps the global generator of a one-process run (it is the one
checkpointed, so resume stays exact) and every other rank reseeds it at each step from (seed, step, rank), so its
masks are independent and reproducible but not those of one process.

Files. Only rank 0 touches the run folder (creation, checkpoints, metrics, evaluation, plots, summary); it
broadcasts the folder's name, a resumed run's config and checkpoint, and the outcome (or error) of each rank-0-only
part, so the other ranks never read nor write a file of the run and may sit on nodes without access to it.

Backends: ``gloo`` for CPU tensors and, where CUDA and NCCL are available, ``nccl`` for CUDA tensors (one default
group ``cpu:gloo,cuda:nccl``, which dispatches by the tensor's device). ``--device cuda`` gives each process the GPU
of its ``LOCAL_RANK``. Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) no process group is made and training
runs the one-process code path unchanged.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from cmlgraph.algorithms.base import MetaAlgorithm, MetaStep, add_gradient_noise
from cmlgraph.algorithms.registry import ALGORITHMS
from cmlgraph.config import Config
from cmlgraph.core.episode import Episode
from cmlgraph.core.functional import LossFn
from cmlgraph.core.memory import training_spans
from cmlgraph.core.model import MetaModel
from cmlgraph.core.objective import OuterLoss
from cmlgraph.errors import CmlgraphError, ConfigError
from cmlgraph.train.diagnostics import gradient_diagnostics

#: The variables ``torchrun`` sets for each process; all of them are needed when ``WORLD_SIZE`` > 1.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Seconds a collective waits for the other ranks (rank 0 evaluates alone while the others wait at one).
TIMEOUT_ENV = "CMLGRAPH_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3 * 3600

T = TypeVar("T")


def _env_int(name: str) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer; launch distributed training "
                          f"with `torchrun --nproc-per-node N -m cmlgraph train ...`") from None


def world_from_env() -> tuple[int, int, int, int] | None:
    """``(rank, world_size, local_rank, local_world_size)`` from torchrun's variables; ``None`` for one process.

    Raises:
        ConfigError: ``WORLD_SIZE`` > 1 but another variable is missing or out of range.
    """
    if os.environ.get("WORLD_SIZE", "").strip() in ("", "1"):
        return None
    world = _env_int("WORLD_SIZE")
    if world < 1:
        raise ConfigError(f"WORLD_SIZE={world} must be at least 1")
    missing = [v for v in ENV_VARS if not os.environ.get(v, "").strip()]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} asks for distributed training but {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set; launch with `torchrun` (it sets "
                          f"{', '.join(ENV_VARS)}) or unset WORLD_SIZE")
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    local_world = _env_int("LOCAL_WORLD_SIZE") if os.environ.get("LOCAL_WORLD_SIZE") else world
    if not 0 <= rank < world or not 0 <= local < max(local_world, 1):
        raise ConfigError(f"RANK={rank} / LOCAL_RANK={local} out of range for WORLD_SIZE={world} / "
                          f"LOCAL_WORLD_SIZE={local_world}")
    return rank, world, local, local_world


_OWNED = False  # whether setup() initialised the process group (and so tears it down)
_LEFT = False  # whether teardown() left a group that setup() joined (the process is a finished torchrun rank)


def _timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(raw) if raw else float(DEFAULT_TIMEOUT_S)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: give the collective timeout in seconds (> 0)")
    return timedelta(seconds=seconds)


def _shutdown() -> None:
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - the interpreter is exiting; nothing left to report to
        pass


def teardown() -> None:
    """Leave the process group that :func:`setup` joined, together: every rank waits for the others, then closes.

    Called at the end of a finished run. Why: a rank that tears gloo down while its peer is still closing its own
    connections can abort the peer ("terminate called without an active exception", exit -6) after the run has
    written everything; meeting at a barrier first makes the close happen with no collective in flight. A group
    the caller initialised (not :func:`setup`) is left alone, and in one process this does nothing.
    """
    if not (_OWNED and dist.is_available() and dist.is_initialized()):
        return
    global _LEFT
    try:
        dist.barrier()
    finally:
        _shutdown()
        _LEFT = True


def left_group() -> bool:
    """Whether this process left, at the end of a finished run, a process group that :func:`setup` had joined.

    The ``cmlgraph`` command then ends such a rank with ``os._exit`` once its output is flushed (:func:`cmlgraph.cli.
    main`): rank 0 hosts the rendezvous TCPStore, whose server thread torch destroys among the C++ static
    destructors at interpreter exit; under load that has aborted the finished rank ("terminate called without an
    active exception", exit -6) after teardown's barrier, about once in three CI runs, so torchrun reported a failed
    run whose folder was complete. The Python API never exits the caller's process.
    """
    return _LEFT


def setup(device: str | None = None) -> DistContext:
    """Join the process group described by torchrun's variables (idempotent); a one-process context without them.

    A process group that the caller already initialised is used as it is (and not destroyed at exit).

    Args:
        device: The run's device where known: each process makes its GPU current only for a CUDA run (or when not
            known yet: ``cmlgraph train --resume`` reads it after joining), as making a GPU current creates a CUDA
            context there (hundreds of MiB a process) that a ``--device cpu`` run on a GPU node never uses.

    Raises:
        ConfigError: Incomplete or invalid torchrun variables, or a torch build without ``torch.distributed``.
        CmlgraphError: The rendezvous at ``MASTER_ADDR:MASTER_PORT`` failed.
    """
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        if world == 1:
            return DistContext()
        env_local = os.environ.get("LOCAL_RANK", "0").strip() or "0"
        local_world = os.environ.get("LOCAL_WORLD_SIZE", str(world)).strip() or str(world)
        return DistContext(dist.get_rank(), world, int(env_local), int(local_world))
    env = world_from_env()
    if env is None:
        return DistContext()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed; install a torch build "
                          "with distributed support or train in one process")
    rank, world, local, local_world = env
    cuda = torch.cuda.is_available()
    gpu = own_gpu(local, torch.cuda.device_count()) if cuda else None
    if gpu is not None and (device is None or str(device).startswith("cuda")):
        torch.cuda.set_device(gpu)  # NCCL and `--device cuda` then use this process's GPU
    backend = "cpu:gloo,cuda:nccl" if cuda and dist.is_nccl_available() else "gloo"
    try:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=_timeout())
    except (RuntimeError, ValueError) as exc:
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CmlgraphError(f"rank {rank} of {world} could not join the process group at {where} ({first}); check "
                            f"--master-addr/--master-port and that every node was started") from None
    global _OWNED
    if not _OWNED:
        atexit.register(_shutdown)  # a run that fails still leaves the group when the interpreter exits
    _OWNED = True
    return DistContext(rank, world, local, local_world)


def _kind(cls: type[MetaAlgorithm]) -> str | None:
    """How an algorithm's meta-gradient splits over processes: ``mean`` (one pass), ``point`` (a second pass at
    :meth:`~MetaAlgorithm.gradient_point`, Sharp-MAML's) or ``None`` (unsupported)."""
    if cls.meta_gradients is not MetaAlgorithm.meta_gradients:
        return None
    return "mean" if cls.gradient_point is MetaAlgorithm.gradient_point else "point"


def supported_algorithms() -> list[str]:
    """Names of the algorithms that train distributed (their meta-gradient splits exactly over processes)."""
    return [name for name, cls in ALGORITHMS.items() if _kind(cls) is not None]


def _rank_seed(seed: int, step: int, rank: int) -> int:
    return ((int(seed) * 1_000_003 + int(step)) * 8_191 + int(rank)) % (2**63 - 1)


def _cpu(obj: Any) -> Any:
    """``obj`` with every tensor moved to the CPU (objects are broadcast through the CPU backend)."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _portable(exc: BaseException) -> CmlgraphError:
    """The error the other ranks raise when a rank-0-only part failed."""
    if isinstance(exc, CmlgraphError):
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:  # noqa: BLE001 - an error type that does not pickle: send its message
            return CmlgraphError(str(exc))
    return CmlgraphError(f"rank 0 failed ({exc.__class__.__name__}: {str(exc)[:300]}); see its traceback")


def own_gpu(local_rank: int, visible: int) -> int | None:
    """The index of this process's GPU among the ``visible`` ones: its ``LOCAL_RANK`` where the node's GPUs are all
    visible; 0 where the launcher gave each process its own (one visible GPU and ``CUDA_VISIBLE_DEVICES`` set, as
    SLURM's per-task binding does); ``None`` where it has none (more processes than GPUs)."""
    if local_rank < visible:
        return local_rank
    if visible == 1 and os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return 0
    return None


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the process group; the default is a single process (no group).

    Attributes:
        rank: Global rank (0 writes the run folder).
        world_size: Number of processes.
        local_rank: Rank on this node (its GPU with ``--device cuda``).
        local_world_size: Processes on this node.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def active(self) -> bool:
        """Whether more than one process trains (and a process group exists)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the only one that reads or writes files."""
        return self.rank == 0

    # --- checks --------------------------------------------------------------------------------------------
    def check_config(self, cfg: Config) -> None:
        """Refuse settings that cannot train distributed (all ranks raise the same error, before any collective).

        Raises:
            ConfigError: An unsupported algorithm, fewer tasks per meta-batch than processes, or a device that does
                not fit the launch.
        """
        if not self.active:
            return
        cls = ALGORITHMS.get(cfg.algo.algo)
        if cls is not None and _kind(cls) is None:
            raise ConfigError(f"--algo {cfg.algo.algo} does not support distributed training (its meta-gradient is "
                              f"not split exactly over processes); algorithms that do: "
                              f"{', '.join(supported_algorithms())}. Or train it in one process")
        batch = int(cfg.train.meta_batch)
        if batch < self.world_size:
            raise ConfigError(f"--meta-batch {batch} is smaller than the {self.world_size} processes; each process "
                              f"needs at least one task of every meta-batch: pass --meta-batch {self.world_size} or "
                              f"more, or start fewer processes")
        device = str(cfg.train.device)
        if device == "mps":
            raise ConfigError("--device mps cannot train distributed; use --device cpu (gloo) or --device cuda (nccl)")
        if device.startswith("cuda"):
            if not dist.is_nccl_available():
                raise ConfigError(f"--device {device} trains distributed with NCCL, which this torch build lacks; "
                                  f"use --device cpu")
            if ":" in device and self.local_world_size > 1:
                raise ConfigError(f"--device {device} would put all {self.local_world_size} processes of a node on "
                                  f"one GPU; pass --device cuda so each process uses the GPU of its LOCAL_RANK")
            count = torch.cuda.device_count()
            if ":" not in device and own_gpu(self.local_rank, count) is None:
                raise ConfigError(f"LOCAL_RANK {self.local_rank} has no GPU of its own ({count} visible); start at "
                                  f"most {count} processes per node (--nproc-per-node {count}), or give each "
                                  f"process its own GPU with CUDA_VISIBLE_DEVICES")
            if ":" not in device and count == 1 and self.local_world_size > 1:
                self._refuse_shared_gpu()

    def _refuse_shared_gpu(self) -> None:
        """Processes that each see one GPU: refuse (on every rank) where two of a node see the same one (one
        ``CUDA_VISIBLE_DEVICES=0`` exported to several processes), which NCCL would only report later as a
        duplicate GPU. Compared by the GPUs' UUIDs, gathered from every rank (a collective every rank reaches)."""
        import socket

        mine = (socket.gethostname(), str(torch.cuda.get_device_properties(0).uuid))
        everyone: list[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        if len(set(everyone)) < len(everyone):
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            raise ConfigError(f"{self.local_world_size} processes of a node each see one GPU, but some see the same "
                              f"one (CUDA_VISIBLE_DEVICES={visible!r} in each): give each process its own GPU, or "
                              f"start them all seeing every GPU (each then uses the GPU of its LOCAL_RANK)")

    # --- collectives -----------------------------------------------------------------------------------------
    def slice_bounds(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share ``[lo, hi)`` of ``n`` episodes (all of them in one process)."""
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def barrier(self) -> None:
        """Wait for every rank (nothing in one process)."""
        if self.active:
            dist.barrier()

    def _share(self, obj: Any) -> Any:
        box = [_cpu(obj) if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_module(self, module: nn.Module) -> None:
        """Overwrite every parameter and buffer with rank 0's (the seed already makes them equal; this makes sure)."""
        if not self.active:
            return
        with torch.no_grad():
            for t in itertools.chain(module.parameters(), module.buffers()):
                dist.broadcast(t.data, src=0)

    def all_reduce_sum(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Sum each tensor over the ranks (one flat all-reduce per dtype and device); unchanged in one process."""
        if not self.active:
            return list(tensors)
        out: list[Tensor] = list(tensors)
        groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault((t.dtype, t.device), []).append(i)
        for idx in groups.values():
            flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for i in idx:
                n = tensors[i].numel()
                out[i] = flat[offset:offset + n].view(tensors[i].shape)
                offset += n
        return out

    def on_rank0(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on rank 0 only and give its result (or raise its error) on every rank.

        In one process this is just ``fn(*args)``. The broadcast doubles as a barrier: the other ranks wait for
        rank 0 to finish the part (evaluation, file writing).
        """
        if not self.active:
            return fn(*args)
        if self.is_main:
            result = self._run_sharing_errors(fn, *args)
            self._share(("ok", result))
            return result
        status, payload = self._share(None)
        if status == "error":
            raise payload
        return payload

    def _run_sharing_errors(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on rank 0; if it raises, send the error to the other ranks (who re-raise it) first."""
        try:
            return fn(*args)
        except Exception as exc:
            self._share(("error", _portable(exc)))
            raise

    def staged(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on every rank, rank 0 first, then each other node's first process, then the rest.

        Why: building the data may process and cache files; doing it first on one process per node keeps ranks
        from writing the same cache file at once, and a failure on rank 0 reaches the others as the same error.
        """
        if not self.active:
            return fn(*args)
        result: Any = None
        if self.is_main:
            result = self._run_sharing_errors(fn, *args)
            self._share(("ok", None))
        else:
            status, payload = self._share(None)
            if status == "error":
                raise payload
            if self.local_rank == 0:
                result = fn(*args)
        dist.barrier()
        if not self.is_main and self.local_rank != 0:
            result = fn(*args)
        return result

    # --- the meta-gradient -----------------------------------------------------------------------------------
    def meta_gradients(self, algo: MetaAlgorithm, model: MetaModel, params: Mapping[str, Tensor],
                       episodes: Sequence[Episode], loss_fn: LossFn, step: int, *, meta_batch: int, seed: int,
                       diagnostics: bool = False, batched: bool | None = None) -> MetaStep:
        """The full meta-batch's meta-gradients (as ``algo.meta_gradients`` on all of it), from this rank's slice.

        Args:
            algo: The algorithm (one of :func:`supported_algorithms`).
            model: The meta-model.
            params: The trained parameters (identical on every rank).
            episodes: This rank's slice of the meta-batch (:meth:`slice_bounds`).
            loss_fn: The task loss.
            step: The meta-iteration (0-based).
            meta_batch: Episodes in the whole meta-batch (the slices' weights are ``len(slice) / meta_batch``).
            seed: The run's seed (reseeds the global generator of ranks > 0 per step, for dropout).
            diagnostics: Also compute the gradient diagnostics of the full batch.
            batched: As for ``algo.meta_gradients``.

        Returns:
            The same :class:`MetaStep` on every rank: reduced gradients, full-batch mean losses, diagnostics.

        Raises:
            ConfigError: ``algo`` forms its meta-gradient in a way that does not split over processes.
        """
        kind = _kind(type(algo))
        if kind is None:
            raise ConfigError(f"algorithm {algo.name!r} does not support distributed training; algorithms that "
                              f"do: {', '.join(supported_algorithms())}")
        if not self.is_main:
            torch.manual_seed(_rank_seed(seed, step, self.rank))
        weight = len(episodes) / int(meta_batch)
        split = diagnostics and algo.cml and algo.cfg.gamma > 0
        grads, loss, diag = self._reduced_pass(algo, model, params, params, episodes, loss_fn, step, weight, split,
                                               batched)
        point = algo.gradient_point(params, grads) if kind == "point" else None
        if point is not None:  # from the full gradient, the same point on every rank
            grads, _, _ = self._reduced_pass(algo, model, point, params, episodes, loss_fn, step, weight, False,
                                             batched)
        if algo.cfg.control == "noise":  # once, on the full gradient; every rank's generator draws the same noise
            grads = add_gradient_noise(grads, algo.cfg.noise_std, algo.generator)
        return MetaStep(grads=grads, loss=loss, diagnostics=diag)

    def _reduced_pass(self, algo: MetaAlgorithm, model: MetaModel, at: Mapping[str, Tensor],
                      wrt: Mapping[str, Tensor], episodes: Sequence[Episode], loss_fn: LossFn, step: int,
                      weight: float, split: bool, batched: bool | None
                      ) -> tuple[dict[str, Tensor], OuterLoss, dict[str, Any]]:
        """Weighted slice gradients of the objective at ``at`` w.r.t. ``wrt``, summed over ranks, with the losses (a
        slice over the memory budget in task groups: :meth:`MetaAlgorithm.objective_parts`)."""
        device = next(iter(wrt.values())).device  # the slice in task groups where it exceeds the memory budget
        spans = training_spans(model.extractor, episodes, algo.kept_passes(step), device)
        grads, loss = algo.objective_parts(model, at, wrt, episodes, loss_fn, step, batched, split, spans)
        names = list(wrt)
        parts = [g[k] for g in grads for k in names]
        losses = torch.stack([loss.meta.detach(), loss.co.detach(), loss.total.detach()])
        reduced = self.all_reduce_sum([g * weight for g in parts] + [losses * weight])
        n = len(names)
        meta, co, total = reduced[-1].unbind()
        out = OuterLoss(meta=meta, co=co, total=total)
        if not split:
            return dict(zip(names, reduced[:n], strict=True)), out, {}
        g_meta = dict(zip(names, reduced[:n], strict=True))
        g_co = dict(zip(names, reduced[n:2 * n], strict=True))
        gamma = algo.cfg.gamma
        return {k: g_meta[k] + gamma * g_co[k] for k in names}, out, gradient_diagnostics(g_meta, g_co)


__all__ = ["DistContext", "ENV_VARS", "TIMEOUT_ENV", "setup", "supported_algorithms", "world_from_env"]
