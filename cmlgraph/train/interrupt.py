"""Ctrl-C (or SIGTERM) during meta-training: finish the meta-step, write a checkpoint, then stop.

Why: a run stopped by Ctrl-C used to lose every step since its last checkpoint (up to ``checkpoint_every`` steps, 100
by default), and under typer it exited without saying how to continue; a cluster job preempted with SIGTERM lost
them too. Now the first Ctrl-C or SIGTERM asks the loop to stop at the next step boundary, where it writes
``checkpoint.pt`` (so ``cmlgraph train --resume RUN_DIR`` continues from exactly that step), names the folder, and
raises :func:`run_stopped`'s exception (a plain KeyboardInterrupt for Ctrl-C, :class:`RunTerminated` for
SIGTERM). A second signal stops at once, as without the handler, losing the steps since the last checkpoint.

Only the main thread can install a signal handler, and only a handler still at Python's default is replaced: a
program that ignores SIGINT (a background job) or handles a signal itself keeps its own. Under torchrun the ranks
could stop at different steps and wait for each other forever, so :class:`StopRequest` is not used there (the
trainer passes ``enabled=False``).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

#: The attribute that marks the exception of a graceful stop (:func:`run_stopped`).
_GRACEFUL = "cmlgraph_stopped_run"


class RunTerminated(SystemExit):
    """SIGTERM stopped meta-training at a step boundary after writing a checkpoint: the process then ends with status
    143 (128 + 15), as one the signal killed would report, after ``finally`` blocks and exit handlers ran (a
    :class:`SystemExit`: no traceback, and ``except Exception`` does not swallow it).

    Attributes:
        message: Where the run stopped and how to resume it.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(128 + int(signal.SIGTERM))
        self.message = message

    def __str__(self) -> str:
        return self.message


def run_stopped(message: str, signum: int = signal.SIGINT) -> BaseException:
    """The exception a run stopped gracefully by ``signum`` raises, after its checkpoint.

    Ctrl-C gives a plain :class:`KeyboardInterrupt` (its exact type: Python then ends an uncaught one by SIGINT, so a
    shell loop over runs stops as it does for any Ctrl-C; a subclass would end with status 1, and bash would go on
    to the next run); SIGTERM gives :class:`RunTerminated` (exit status 143). Both are marked for
    :func:`stopped_gracefully`.

    Args:
        message: Where the run stopped and how to resume it (the exception's message).
        signum: ``signal.SIGINT`` or ``signal.SIGTERM``.
    """
    exc: BaseException = RunTerminated(message) if signum == signal.SIGTERM else KeyboardInterrupt(message)
    setattr(exc, _GRACEFUL, True)
    return exc


def stopped_gracefully(exc: BaseException) -> bool:
    """Whether ``exc`` is a run's graceful stop (:func:`run_stopped`: the run said where it stopped), not a bare
    Ctrl-C."""
    return bool(getattr(exc, _GRACEFUL, False))


#: The signals a run stops on gracefully, with the handler each must still have for :class:`StopRequest` to take it
#: over (Python's Ctrl-C handler; SIGTERM's default, which kills at once) and the name it is announced by.
_SIGNALS: tuple[tuple[int, Any, str], ...] = (
    (signal.SIGINT, signal.default_int_handler, "Ctrl-C"),
    (signal.SIGTERM, signal.SIG_DFL, "SIGTERM"),
)


class StopRequest:
    """A context manager that turns the first SIGINT (Ctrl-C) or SIGTERM into a request the training loop polls.

    SIGTERM is what a cluster's scheduler (SLURM, Kubernetes) sends before it kills a preempted or timed-out job
    (SLURM waits ``KillWait``, 30 s by default): the run then stops with a checkpoint as on Ctrl-C. A second signal
    stops at once: KeyboardInterrupt for Ctrl-C, the default action (the process ends) for SIGTERM.

    Attributes:
        requested: True once a stop was asked for inside the ``with`` block.
        signum: The signal that asked (``None`` before).
        installed: Whether at least one handler was installed (main thread, the signal's default handler in place,
            enabled).

    Args:
        say: Called once, from the signal handler, with a line telling the user what happens next.
        enabled: False leaves the signals alone (torchrun ranks).
    """

    def __init__(self, say: Callable[[str], Any], enabled: bool = True) -> None:
        self.requested = False
        self.signum: int | None = None
        self._say = say
        self._enabled = enabled
        self._previous: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def __enter__(self) -> StopRequest:
        if self._enabled and threading.current_thread() is threading.main_thread():
            for signum, default, _ in _SIGNALS:
                if signal.getsignal(signum) is default:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = next(n for s, _, n in _SIGNALS if s == signum)
        if self.requested:  # the second: stop now, as without this handler
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)  # the default action, now restored
            return
        self.requested, self.signum = True, signum
        self._say(f"{name}: stopping after this meta-step, with a checkpoint ({name} again stops at once, losing the "
                  "steps since the last checkpoint)")

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()


_ANNOUNCED = [False]


def announce() -> None:
    """Record that the user was told where an interrupted run stands (the CLI then adds no bare "interrupted")."""
    _ANNOUNCED[0] = True


def announced() -> bool:
    """Whether :func:`announce` was called in this process."""
    return _ANNOUNCED[0]


__all__ = ["RunTerminated", "StopRequest", "announce", "announced", "run_stopped", "stopped_gracefully"]
