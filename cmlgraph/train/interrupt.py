"""Ctrl-C (or SIGTERM) during meta-training: finish the meta-step, write a checkpoint, then stop.

Why: a run stopped by Ctrl-C used to lose every step since its last checkpoint (up to ``checkpoint_every`` steps, 100
by default), and under typer it exited without saying how to continue; a cluster job preempted with SIGTERM lost
them too. Now the first Ctrl-C or SIGTERM asks the loop to stop at the next step boundary, where it writes
``checkpoint.pt`` (so ``cmlgraph train --resume RUN_DIR`` continues from exactly that step), names the folder, and
raises :class:`RunInterrupted`. A second signal stops at once, as without the handler, losing the steps since the
last checkpoint.

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


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped meta-training at a step boundary after writing a checkpoint (a
    :class:`KeyboardInterrupt`, so every caller that stops on Ctrl-C stops on it too; the CLI exits with status 130,
    or 143 after a SIGTERM).

    Attributes:
        signum: The signal that asked for the stop (``signal.SIGINT`` or ``signal.SIGTERM``).
    """

    def __init__(self, message: str = "", signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


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


def exit_status(exc: BaseException | None) -> int | None:
    """The exit status a stop by :class:`RunInterrupted` somewhere in ``exc``'s chain stands for: 143 (128 + 15)
    after a SIGTERM, as a process killed by it would report; ``None`` when there is none or it was Ctrl-C (typer's
    130 stands)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, RunInterrupted):
            return 128 + int(exc.signum) if exc.signum != signal.SIGINT else None
        exc = exc.__cause__ or exc.__context__
    return None


__all__ = ["RunInterrupted", "StopRequest", "announce", "announced", "exit_status"]
