"""Prepare the next meta-batches in a worker thread while the current meta-step computes (issue 18 item 2).

Why: on a GPU the device idles while the host samples the next episodes and builds their layouts (k-hop plans,
see :func:`cmlgraph.backbones.gnn.prepare_plan`). A :class:`Prefetcher` runs that preparation (``produce``) in one
background thread, ``depth`` batches ahead, and hands the results over in order, as PyTorch's ``DataLoader`` does
with worker processes (a thread here: episodes reference the run's cached graph tensors, which a process would copy).

Reproducibility: the worker draws from its own copy of the caller's ``torch.Generator``, in the same order and with
the same draws as the caller would; :meth:`Prefetcher.next` then sets the caller's generator to the state right
after the batch it returns. So the caller's generator always holds the state of the next batch *not yet consumed*:
a checkpoint written between steps stores exactly what a run without prefetching would, and kill + resume ends
bit-identical (tests/reliability). Batches prepared ahead but never consumed are dropped.

Errors and lifetime: an exception in ``produce`` is re-raised by :meth:`Prefetcher.next` in the caller's thread
(the same exception object, message and traceback intact). :meth:`Prefetcher.close` (also ``with``-exit, on
Ctrl-C or an error) stops the worker and joins it, so the thread never outlives its run; it is also a daemon, so it
cannot keep a dying process alive.

Builders (``build``, ``workers``): where preparing an item is a cheap draw followed by a costly build that draws
nothing (G-Meta's ball layouts: 45 to 75 ms a task on this project's CPU, docs/gpu.md), the draws stay in the one
worker thread, in order, and up to ``workers`` builds run at once; items are still handed over in the order drawn,
so the results equal one worker's. In threads by default: the layouts' large tensor ops release the GIL (two
build threads prepared G-Meta tasks 1.3 to 1.7 times as fast as one on 2 cores), and they keep referencing the
run's cached graph tensors. The k-hop plans' many small ops hold the GIL and gain nothing from threads; given a
``host_build`` they are built in worker processes instead (:mod:`cmlgraph.train.build_processes`).

``train.prefetch: auto`` is on for CUDA runs and :data:`AUTO_ON_CPU` on the CPU (measured, docs/gpu.md);
``train.prefetch_workers`` (:func:`prefetch_workers`) sets ``workers``.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch

from cmlgraph.errors import CmlgraphError, ConfigError

if TYPE_CHECKING:
    from cmlgraph.train.build_processes import HostBuild

T = TypeVar("T")

#: Most build threads ``train.prefetch_workers: 0`` (auto) starts on a CUDA run's host.
AUTO_WORKERS_MAX = 8

#: ``train.prefetch: auto`` on the CPU. Off: on this project's 2 shared cores the worker's preparation competes with
#: the step's own kernels for the same cores (docs/gpu.md, "Prefetching on the CPU", measured side by side).
AUTO_ON_CPU = False

CHOICES = ("auto", "on", "off")


def use_prefetch(setting: str, device: torch.device | str) -> bool:
    """Whether ``train.prefetch`` (``auto``/``on``/``off``) prefetches on ``device``.

    Raises:
        ConfigError: ``setting`` is not one of :data:`CHOICES`.
    """
    if setting not in CHOICES:
        raise ConfigError(f"train.prefetch = {setting!r} is not one of {', '.join(CHOICES)}; use --prefetch auto")
    if setting == "auto":
        return torch.device(device).type == "cuda" or AUTO_ON_CPU
    return setting == "on"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def prefetch_workers(setting: int, device: torch.device | str, cpu_count: int | None = None) -> int:
    """Builders (threads, or processes for k-hop plans given by number) of the trainer's prefetcher for
    ``train.prefetch_workers`` (``0``: auto).

    Auto: on CUDA half the cores this process may use (its CPU affinity; shared by the ranks of a torchrun node,
    ``LOCAL_WORLD_SIZE``), at most :data:`AUTO_WORKERS_MAX` (the step's own thread and the copies keep the rest); on
    the CPU 1, since the builds would take the step's own cores.

    Raises:
        ConfigError: ``setting`` is negative.
    """
    if setting < 0:
        raise ConfigError(f"train.prefetch_workers = {setting} must be >= 0 (0: auto); use --prefetch-workers 0")
    if setting:
        return setting
    if torch.device(device).type != "cuda":
        return 1
    if cpu_count is None:
        cpu_count = usable_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(AUTO_WORKERS_MAX, cpu_count // 2))


class _Failure:
    """An exception raised by ``produce`` in the worker, handed to the caller."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()  # ``produce`` raised StopIteration: nothing more to prepare


class Prefetcher(Generic[T]):
    """Results of ``produce(generator)`` (then ``build`` of it) prepared ahead by a worker thread, handed over in
    order.

    Args:
        produce: Prepares (or, with ``build``, draws) one item, a meta-batch, from a generator; called repeatedly,
            in order, always from one thread. Raising ``StopIteration`` ends the stream.
        generator: The caller's generator (``None`` when ``produce`` draws nothing). The worker draws from a copy;
            :meth:`next` advances this one to the state after the item it returns.
        depth: Most items prepared ahead (the queue's size).
        enabled: ``False``: no thread, :meth:`next` calls ``produce(generator)`` itself (the same results).
        name: The worker thread's name (build threads: ``<name>-build_<i>``).
        build: Turns what ``produce`` drew into the item; draws nothing, so builds of different items may run at
            once (``None``: ``produce`` returns the item).
        workers: Builds run at once, in a pool of this many threads (1: in the worker thread itself). Items are
            prepared up to ``depth + workers`` ahead.
        host_build: With ``workers`` > 1, build in that many worker *processes* instead of threads
            (:mod:`cmlgraph.train.build_processes`: for builds whose small ops hold the GIL); ``build`` is then
            not called.

    Raises:
        ValueError: ``depth`` or ``workers`` is below 1, ``workers`` > 1 without ``build`` or ``host_build``, or a
            ``host_build`` without ``build``.
    """

    def __init__(self, produce: Callable[[torch.Generator | None], Any], generator: torch.Generator | None = None, *,
                 depth: int = 2, enabled: bool = True, name: str = "cmlgraph-prefetch",
                 build: Callable[[Any], T] | None = None, workers: int = 1,
                 host_build: HostBuild | None = None) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        if workers < 1 or (workers > 1 and build is None and host_build is None):
            raise ValueError(f"prefetch workers must be at least 1 (more than 1 needs a build), got {workers}")
        if host_build is not None and build is None:
            raise ValueError("a prefetcher with a host_build also needs its build (what one worker runs)")
        self._produce = produce
        self._build = build
        self.workers = workers
        self._host_build = host_build if workers > 1 else None
        self._name = name
        self._generator = generator
        self.enabled = enabled
        self._closed = False
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if enabled:
            self._own: torch.Generator | None = None
            if generator is not None:
                self._own = torch.Generator(device=generator.device)
                self._own.set_state(generator.get_state())
            # the caller's current CUDA device (torchrun's rank sets it): current devices are per thread, and the
            # worker's would be cuda:0, where it would put every rank's "cuda" tensors
            self._cuda_device = torch.cuda.current_device() if torch.cuda.is_initialized() else None
            self._thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._thread.start()

    # --- worker ---------------------------------------------------------------------------------------------
    def _make(self, generator: torch.Generator | None) -> T:
        """One item, drawn and built here."""
        raw = self._produce(generator)
        return raw if self._build is None else self._build(raw)

    def _state(self) -> torch.Tensor | None:
        return None if self._own is None else self._own.get_state()

    def _set_device(self) -> None:
        if self._cuda_device is not None:
            torch.cuda.set_device(self._cuda_device)

    def _work(self) -> None:
        try:
            self._set_device()
            if self.workers > 1:
                return self._work_pooled()
            while not self._stop.is_set():
                try:
                    value = self._make(self._own)
                except StopIteration:
                    self._put(_END)
                    return
                if not self._put((value, self._state())):
                    return
        except BaseException as exc:  # handed to the caller, which re-raises it
            self._put(_Failure(exc))

    def _work_pooled(self) -> None:
        """Draw in this thread, in order; build in ``workers`` threads (or processes) at once; hand over in the
        order drawn."""
        if self._host_build is None:
            assert self._build is not None
            with ThreadPoolExecutor(self.workers, thread_name_prefix=f"{self._name}-build",
                                    initializer=self._set_device) as pool:
                self._pipeline(lambda raw: pool.submit(self._build, raw), lambda raw, future: future.result())
            return
        from cmlgraph.train.build_processes import ProcessBuilds

        hb = self._host_build
        try:
            procs = ProcessBuilds(hb.builder, self.workers)
            try:
                self._pipeline(lambda raw: procs.submit(hb.send(raw)),
                               lambda raw, future: hb.finish(raw, procs.result(future)))
            finally:
                procs.shutdown()
        finally:
            if hb.close is not None:
                hb.close()

    def _pipeline(self, submit: Callable[[Any], Future], finish: Callable[[Any, Future], Any]) -> None:
        """The pooled loop: up to ``workers`` items submitted ahead, each finished and handed over in order."""
        pending: deque[tuple[Future, torch.Tensor | None, Any] | Any] = deque()
        drawing = True
        try:
            while not self._stop.is_set():
                while drawing and len(pending) < self.workers:
                    try:
                        raw = self._produce(self._own)
                        pending.append((submit(raw), self._state(), raw))
                    except StopIteration:
                        pending.append(_END)
                        drawing = False
                    except BaseException as exc:  # a draw or a submission: after the items drawn before it
                        pending.append(_Failure(exc))
                        drawing = False
                if not pending:
                    return
                head = pending.popleft()
                if head is _END or isinstance(head, _Failure):
                    self._put(head)
                    return
                future, state, raw = head
                try:
                    value = finish(raw, future)
                except BaseException as exc:
                    self._put(_Failure(exc))
                    return
                if not self._put((value, state)):
                    return
        finally:  # stopped, failed or done: builds not started are dropped, running ones finish
            for item in pending:
                if isinstance(item, tuple):
                    item[0].cancel()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    # --- caller ---------------------------------------------------------------------------------------------
    def next(self) -> T:
        """The next item, in order; the caller's generator is left at the state after it.

        Raises:
            StopIteration: ``produce`` has nothing more.
            CmlgraphError: The prefetcher was closed.
            BaseException: Whatever ``produce`` raised in the worker (re-raised here, the same object).
        """
        if self._closed:
            raise CmlgraphError("this prefetcher is closed; start a new one")
        if not self.enabled:
            return self._make(self._generator)
        assert self._thread is not None
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()
                    raise CmlgraphError("the prefetch worker stopped without a result") from None
        if item is _END:
            self._closed = True
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        value, state = item
        if state is not None and self._generator is not None:
            self._generator.set_state(state)
        return value

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                yield self.next()
            except StopIteration:
                return

    def close(self) -> None:
        """Stop the worker and wait for it (it finishes the item it is preparing, then drops it). Idempotent."""
        self._closed = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            while self._thread.is_alive():
                try:  # unblock a worker waiting to put
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["AUTO_ON_CPU", "AUTO_WORKERS_MAX", "CHOICES", "Prefetcher", "prefetch_workers", "usable_cores",
           "use_prefetch"]
