"""The ``cmlgraph`` command's memory allocator setting: keep large freed blocks for reuse (glibc only).

Why: glibc serves a large allocation (above its mmap threshold, which adapts only up to 32 MiB) with fresh pages
from the kernel and returns them on free, so a tensor of a few MiB allocated every inner step pays a page fault per
4 KiB page each time. Measured on this 2-core CPU (one thread, side by side, 2026-12-06): ``w - 0.5 * g`` on a
``[4, 64, 6805]`` float tensor (a meta-batch of Coauthor-CS SGC weights) 4.0-4.5 ms with glibc's defaults, 0.8-1.0
ms with the setting below (the same work as four ``[64, 6805]`` updates, 0.9 ms); GRACE on Amazon-Photo, 20 epochs,
135 / 150 s vs 100 / 97 s.

Only the ``cmlgraph`` command applies it (:func:`cmlgraph.cli.main`), never ``import cmlgraph``: the allocator is
the process's, and a library should not change it under an application. ``CMLGRAPH_MALLOC=system`` keeps glibc's
defaults. The cost: up to :data:`TRIM_THRESHOLD` of freed memory stays with the process for reuse instead of going
back to the operating system.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: Allocations up to this size come from the heap (reused after free) instead of fresh kernel pages.
MMAP_THRESHOLD = 64 << 20
#: Freed memory at the top of the heap kept for reuse, at most.
TRIM_THRESHOLD = 256 << 20
#: ``mallopt`` parameter numbers (glibc ``malloc.h``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_malloc(environ: dict[str, str] | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring).

    Args:
        environ: The environment to read ``CMLGRAPH_MALLOC`` from (default: ``os.environ``).

    Returns:
        Whether the setting was applied: ``False`` with ``CMLGRAPH_MALLOC=system``, off Linux, or without glibc.

    Raises:
        ValueError: ``CMLGRAPH_MALLOC`` is neither ``tuned`` nor ``system``.
    """
    mode = (os.environ if environ is None else environ).get("CMLGRAPH_MALLOC", "tuned").strip().lower()
    if mode not in ("tuned", "system"):
        raise ValueError(f"CMLGRAPH_MALLOC={mode!r}: use tuned (the default) or system (glibc's own settings)")
    if mode == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no mallopt thresholds)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]
