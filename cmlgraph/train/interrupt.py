"""Ctrl-C during meta-training: finish the meta-step, write a checkpoint, then stop.

Why: a run stopped by Ctrl-C used to lose every step since its last checkpoint (up to ``checkpoint_every`` steps, 100
by default), and under typer it exited without saying how to continue. Now the first Ctrl-C asks the loop to stop
at the next step boundary, where it writes ``checkpoint.pt`` (so ``cmlgraph train --resume RUN_DIR`` continues from
exactly that step), names the folder, and raises :class:`RunInterrupted`. A second Ctrl-C stops at once, as Python
does by default, losing the steps since the last checkpoint.

Only the main thread can install a signal handler, and only a handler still at Python's default is replaced: a
program that ignores SIGINT (a background job) or handles it itself keeps its own. Under torchrun the ranks could
stop at different steps and wait for each other forever, so :class:`StopRequest` is not used there (the trainer
passes ``enabled=False``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped meta-training at a step boundary after writing a checkpoint (a :class:`KeyboardInterrupt`,
    so every caller that stops on Ctrl-C stops on it too; the CLI exits with status 130)."""


class StopRequest:
    """A context manager that turns the first SIGINT (Ctrl-C) into a request the training loop polls.

    Attributes:
        requested: True once Ctrl-C was pressed inside the ``with`` block.
        installed: Whether the handler was installed (main thread, Python's default handler in place, enabled).

    Args:
        say: Called once, from the signal handler, with a line telling the user what happens next.
        enabled: False leaves SIGINT alone (torchrun ranks).
    """

    def __init__(self, say: Callable[[str], Any], enabled: bool = True) -> None:
        self.requested = False
        self.installed = False
        self._say = say
        self._enabled = enabled
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        if (self._enabled and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self.installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # the second Ctrl-C: stop now, as without this handler
            self._restore()
            raise KeyboardInterrupt
        self.requested = True
        self._say("Ctrl-C: stopping after this meta-step, with a checkpoint (press Ctrl-C again to stop at once, "
                  "losing the steps since the last checkpoint)")

    def _restore(self) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self._previous)
            self.installed = False

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()


__all__ = ["RunInterrupted", "StopRequest"]
