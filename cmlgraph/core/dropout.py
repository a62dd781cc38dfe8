"""Inverted dropout whose masks can come from a given random stream (``--parallel-runs``, issue 18 item 5).

A run trained alone draws its masks from torch's global RNG; inside a fused meta-step of several runs
(:mod:`cmlgraph.core.streams`) each run's rows must get the mask that run draws alone, from a generator holding that
run's RNG state. Every encoder with dropout (the GNN backbone, G-Meta's and AMM-GNN's GCNs) draws through
:func:`dropout`, so a generator in the global RNG's state draws exactly the mask the global RNG would.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

_GENERATOR: ContextVar[torch.Generator | None] = ContextVar("cmlgraph_dropout_generator", default=None)


def dropout(h: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout, as ``F.dropout(h, p, training=True)``: each entry kept with probability 1 − p and scaled
    by 1 / (1 − p); the same distribution as ``F.dropout``, from another random stream: ``generator``, else torch's
    global RNG (a generator in the global RNG's state draws the same mask). The mask depends on ``h.numel()``
    only, not on its shape.

    Why not ``F.dropout``: it draws from the global RNG only, and its ``bernoulli_`` costs about 4x a uniform draw
    on a CPU. When 256·p is an integer (0.5 in every paper setting) the CPU mask compares random **bytes** with
    256·p (seven uniform bytes from each draw of 63 random bits, exact); other rates and devices compare
    ``torch.rand`` with p.
    """
    if p >= 1:
        return h * 0.0
    return h * dropout_scale(h.shape, p, generator, dtype=h.dtype, device=h.device)


def dropout_scale(shape: Sequence[int] | torch.Size, p: float, generator: torch.Generator | None = None, *,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """The factor :func:`dropout` multiplies by, ``keep / (1 − p)`` in ``shape`` (0 < p < 1), drawn as
    :func:`dropout` draws it: ``dropout(h, p, g)`` equals ``h * dropout_scale(h.shape, p, g, dtype=h.dtype,
    device=h.device)`` bit for bit from the same generator state. Lets a batched pass draw several tasks' masks
    in the order their one-by-one passes would (``GNNBackbone._task_scales``).

    Args:
        shape: The masked tensor's shape (the draws depend on its element count only).
        p: Dropout rate, in (0, 1).
        generator: The random stream; ``None``: torch's global RNG of ``device``.
        dtype: The scale's dtype (the masked tensor's).
        device: Where to draw.

    Returns:
        ``Tensor[shape]`` of 0 and 1 / (1 − p).
    """
    level = p * 256
    device = torch.device(device)
    if level == int(level) and device.type == "cpu" and sys.byteorder == "little":
        n = math.prod(shape)
        k = (n + 6) // 7
        bits = torch.empty(k, dtype=torch.int64, device=device).random_(generator=generator)  # on [0, 2**63)
        byte = bits.view(torch.uint8).view(k, 8)[:, :7]  # bytes 0-6 (little-endian): uniform; byte 7 is not
        keep = (byte >= int(level)).reshape(-1)[:n].view(tuple(shape))
    else:
        keep = torch.rand(tuple(shape), generator=generator, dtype=dtype, device=device) >= p
    return keep.to(dtype) / (1.0 - p)


@contextmanager
def draw_from(generator: torch.Generator | None) -> Iterator[None]:
    """Within the block, :func:`current_generator` is ``generator``: a per-task pass of a fused meta-step draws its
    masks from its run's stream (``None``: torch's global RNG)."""
    token = _GENERATOR.set(generator)
    try:
        yield
    finally:
        _GENERATOR.reset(token)


def current_generator() -> torch.Generator | None:
    """The generator of the enclosing :func:`draw_from` block, or ``None`` (torch's global RNG)."""
    return _GENERATOR.get()


def dropout_task_rows(h: Tensor, p: float, tasks: int, draws: Sequence[tuple[int, int, int, torch.Generator]]
                      ) -> Tensor:
    """:func:`dropout` of ``tasks`` tasks' padded rows, each run's tasks from its own generator.

    Args:
        h: ``[T·rows, d]`` or ``[T, rows, d]``: each task's rows padded to ``rows`` (real rows first).
        p: Dropout rate.
        tasks: ``T``.
        draws: Per run, in task order, ``(a, b, own_rows, generator)``: its tasks ``[a, b)`` are masked over their
            first ``own_rows`` rows (the padding that run has alone) from ``generator``, which is the mask the run
            draws alone; rows past its own padding feed nothing and are left unmasked.

    Returns:
        ``h`` masked, in its shape.
    """
    h3 = h.reshape(tasks, -1, h.shape[-1])
    parts = []
    for a, b, rows, gen in draws:
        own = dropout(h3[a:b, :rows], p, gen)
        parts.append(torch.cat([own, h3[a:b, rows:]], dim=1) if rows < h3.shape[1] else own)
    return torch.cat(parts).view(h.shape)


__all__ = ["current_generator", "draw_from", "dropout", "dropout_scale", "dropout_task_rows"]
