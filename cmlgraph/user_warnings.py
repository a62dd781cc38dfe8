"""Warnings that point at the user's line, not at cmlgraph's internals.

Why: a warning raised deep inside a run (``fit`` → trainer → domain → ``fit_graph``) with a fixed ``stacklevel``
shows a cmlgraph source line (``cmlgraph/domains/graph.py:76``), which tells a user nothing about which of their
calls caused it. :func:`warn_user` attributes the warning to the first frame outside the cmlgraph package, as
Python 3.12's ``skip_file_prefixes`` does (this project supports 3.10+).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parent)
_WORDS: ContextVar[Callable[[str], str] | None] = ContextVar("cmlgraph_warning_words", default=None)


@contextmanager
def warning_words(rewrite: Callable[[str], str]) -> Iterator[None]:
    """Within the block, :func:`warn_user` passes each message through ``rewrite`` first (e.g. the Python API's
    keyword names instead of the command line's flags)."""
    token = _WORDS.set(rewrite)
    try:
        yield
    finally:
        _WORDS.reset(token)


def _outside_level() -> int:
    """The ``stacklevel`` of the first caller frame whose file is not inside the cmlgraph package."""
    frame = sys._getframe(2)  # the caller of warn_user
    level = 2
    while frame is not None:
        try:
            inside = str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE)
        except (OSError, ValueError):
            inside = False
        if not inside:
            return level
        frame, level = frame.f_back, level + 1
    return level


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the user's own code (the first non-cmlgraph frame)."""
    rewrite = _WORDS.get()
    warnings.warn(rewrite(message) if rewrite else message, category, stacklevel=_outside_level())


__all__ = ["warn_user", "warning_words"]
