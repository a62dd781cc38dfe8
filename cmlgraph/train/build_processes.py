"""Prefetch builds in worker processes, for layouts whose many small ops hold Python's lock (issue 18).

Why: a k-hop meta-batch's computation-tree plans take 6 to 9 ms of host work on this project's CPU (docs/gpu.md,
"Host work per meta-batch"), about 90 % of it in plans built from many small tensor ops; build *threads* gain
nothing there (the ops hold the GIL between them), so a GPU step faster than that waits on its host. Worker
processes, as PyTorch's ``DataLoader`` uses, each build whole meta-batches' plans on their own core.

How: a :class:`HostBuild` names a picklable ``builder`` (sent once to each process when the pool starts, with the
graph's CPU tensors it needs), what is sent per item (``send``: numpy node ids), and ``finish``, run in the
prefetcher's thread on what came back (numpy payloads: :mod:`cmlgraph.backbones.plan_payload`): the episodes on
the run's device. The draws stay in the prefetcher's thread, so the results equal building in one thread.

Processes are *spawned* (a forked child of a process that has used CUDA cannot use it, and must not inherit its
threads), take one torch thread each, and ignore Ctrl-C: the run stops its pool itself
(:meth:`ProcessBuilds.shutdown`); a process whose run is killed exits by itself within :data:`WATCH_S`. A process
that dies, or a pool that cannot start, is raised in the run as a :class:`~cmlgraph.errors.CmlgraphError` that
names the fix; a user's unguarded script re-run in a starting process stops before it makes a run folder
(:func:`in_build_process_start`, checked by :class:`~cmlgraph.train.trainer.Trainer`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import torch

from cmlgraph.errors import CmlgraphError


@dataclass
class HostBuild:
    """How a domain's items are built in worker processes.

    Attributes:
        builder: Picklable; called in a worker process with what ``send`` returned, returns a picklable result.
        send: What goes to the process for one drawn item (cheap to pickle: numpy arrays, plain values).
        finish: ``finish(drawn, result)``: the item, built in the prefetcher's thread (device copies).
        close: Releases what the build holds (its shared-memory blocks) once the processes are gone; idempotent.
    """

    builder: Callable[[Any], Any]
    send: Callable[[Any], Any]
    finish: Callable[[Any, Any], Any]
    close: Callable[[], None] | None = None


_BUILDER: Callable[[Any], Any] | None = None


def _install(builder: Callable[[Any], Any], parent: int) -> None:
    global _BUILDER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the run, which stops its pool
    torch.set_num_threads(1)  # one core a process: the pool is the parallelism
    _BUILDER = builder
    threading.Thread(target=_exit_with, args=(parent,), name="cmlgraph-orphan-watch", daemon=True).start()


#: How often (s) a build process checks that the run that started it is alive.
WATCH_S = 0.5


def _exit_with(parent: int) -> None:
    """Exit when the run is gone (killed: SIGTERM from ``timeout`` or a scheduler, SIGKILL from the OOM killer),
    instead of living on as an orphan that holds shared memory (found by a new-user trial, session 39)."""
    while os.getppid() == parent:
        time.sleep(WATCH_S)
    os._exit(0)


def in_build_process_start() -> bool:
    """Whether this process is a spawned process still importing the user's main script: the script re-runs its
    top-level code there unless guarded by ``if __name__ == "__main__":`` (multiprocessing's own test)."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _build(sent: Any) -> Any:
    assert _BUILDER is not None, "the build process was not initialised"
    return _BUILDER(sent)


#: What the run says when its build processes failed, and the fix.
FIX = ("rerun with --prefetch-workers 1 (Python: prefetch_workers=1), which builds in the prefetch thread with the "
       "same results")


class ProcessBuilds:
    """A pool of ``workers`` spawned processes, each holding ``builder``.

    Args:
        builder: Sent to each process once, when the pool starts (pickled: CPU tensors go through shared memory).
        workers: Processes.
    """

    def __init__(self, builder: Callable[[Any], Any], workers: int) -> None:
        if workers < 1:
            raise ValueError(f"build processes must be at least 1, got {workers}")
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=torch.multiprocessing.get_context("spawn"),
                                         initializer=_install, initargs=(builder, os.getpid()))

    def submit(self, sent: Any) -> Future:
        """Build ``sent`` in a process; the future's result is the builder's."""
        try:
            return self._pool.submit(_build, sent)
        except BrokenProcessPool as exc:
            raise CmlgraphError(f"a prefetch build process died ({exc}); {FIX}") from None

    @staticmethod
    def result(future: Future) -> Any:
        """``future``'s result; a dead or unstartable process is raised as a :class:`CmlgraphError` naming the fix.

        Raises:
            CmlgraphError: The process died or the pool could not start (e.g. a script without an
                ``if __name__ == "__main__":`` guard, which spawned processes re-run).
            BaseException: Whatever the builder raised (the same exception, pickled back).
        """
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise CmlgraphError(
                f"a prefetch build process died or could not start ({exc}). A script that trains must guard its "
                f"code with `if __name__ == \"__main__\":` (build processes are spawned and import it); or {FIX}"
            ) from None

    def shutdown(self) -> None:
        """Stop the processes: builds not started are dropped, running ones finish. Idempotent."""
        self._pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["FIX", "WATCH_S", "HostBuild", "ProcessBuilds", "in_build_process_start"]
