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

``train.prefetch: auto`` is on for CUDA runs and :data:`AUTO_ON_CPU` on the CPU (measured, docs/gpu.md).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

import torch

from cmlgraph.errors import CmlgraphError, ConfigError

T = TypeVar("T")

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


class _Failure:
    """An exception raised by ``produce`` in the worker, handed to the caller."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()  # ``produce`` raised StopIteration: nothing more to prepare


class Prefetcher(Generic[T]):
    """Results of ``produce(generator)`` prepared ahead by a worker thread, handed over in order.

    Args:
        produce: Prepares one item (a meta-batch) from a generator; called repeatedly, in order, always from one
            thread. Raising ``StopIteration`` ends the stream.
        generator: The caller's generator (``None`` when ``produce`` draws nothing). The worker draws from a copy;
            :meth:`next` advances this one to the state after the item it returns.
        depth: Most items prepared ahead (the queue's size).
        enabled: ``False``: no thread, :meth:`next` calls ``produce(generator)`` itself (the same results).
        name: The worker thread's name.

    Raises:
        ValueError: ``depth`` is below 1.
    """

    def __init__(self, produce: Callable[[torch.Generator | None], T], generator: torch.Generator | None = None, *,
                 depth: int = 2, enabled: bool = True, name: str = "cmlgraph-prefetch") -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        self._produce = produce
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
    def _work(self) -> None:
        try:
            if self._cuda_device is not None:
                torch.cuda.set_device(self._cuda_device)
            while not self._stop.is_set():
                try:
                    value = self._produce(self._own)
                except StopIteration:
                    self._put(_END)
                    return
                if not self._put((value, None if self._own is None else self._own.get_state())):
                    return
        except BaseException as exc:  # handed to the caller, which re-raises it
            self._put(_Failure(exc))

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
            return self._produce(self._generator)
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


__all__ = ["AUTO_ON_CPU", "CHOICES", "Prefetcher", "use_prefetch"]
