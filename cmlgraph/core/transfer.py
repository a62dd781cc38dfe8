"""Host-to-device copies that do not block the host (issue 18 item 2).

Why: a plain ``tensor.to("cuda")`` from ordinary (pageable) host memory makes the host wait for the copy; from
pinned (page-locked) memory with ``non_blocking=True`` it is queued on the current CUDA stream and the host goes on
(PyTorch docs, "Use pinned memory buffers"; the caching host allocator keeps the pinned buffer alive until the
copy has run). The copy is ordered on that stream before every kernel queued after it, so no event or
``record_stream`` is needed as long as producer and consumer use the default stream, as cmlgraph does.
Episodes and their layouts (k-hop plans) are built on the host from CPU tensors and sent with :func:`to_device`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cmlgraph.core.episode import Episode


def _already_on(t: Tensor, device: torch.device) -> bool:
    """Whether ``t`` lives on ``device`` (any index of its type when ``device`` names none)."""
    return t.device.type == device.type and (device.index is None or t.device.index == device.index)


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` on ``device``: pinned and ``non_blocking`` from the CPU to CUDA; ``t`` itself when it is there already.

    A coalesced sparse COO tensor goes as its indices and values, and is said coalesced there (so nothing on the
    device coalesces it again, which would read its entry count back).

    Args:
        t: A dense tensor (host-built index or value tensor), or a coalesced sparse COO one.
        device: The run's device.
    """
    device = torch.device(device)
    if _already_on(t, device):
        return t
    if t.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(to_device(t.indices(), device), to_device(t.values(), device), t.shape,
                                       is_coalesced=True)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def to_device_all(tensors: Sequence[Tensor], device: torch.device | str) -> list[Tensor]:
    """Dense ``tensors`` on ``device`` with one copy per dtype (:func:`to_device` of their concatenation), each
    then a view of it in its own shape; those on ``device`` already are returned themselves.

    Why (issue 18): a k-hop plan is a dozen small index and value tensors (levels, blocks, CSR parts), and each copy
    is a launch that the prefetch worker pays for every plan, 18 to 26 a task, while the step launches its
    kernels. Sent together they are one copy per dtype.

    Args:
        tensors: Dense tensors (any shapes; empty ones too).
        device: The run's device.
    """
    device = torch.device(device)
    out: list[Tensor | None] = [None] * len(tensors)
    groups: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        if _already_on(t, device):
            out[i] = t
        else:
            groups.setdefault(t.dtype, []).append(i)
    for idx in groups.values():
        if len(idx) == 1:
            out[idx[0]] = to_device(tensors[idx[0]], device)
            continue
        moved = to_device(torch.cat([tensors[i].reshape(-1) for i in idx]), device)
        for i, part in zip(idx, moved.split([tensors[i].numel() for i in idx]), strict=True):
            out[i] = part.view(tensors[i].shape)
    return out  # type: ignore[return-value]


def episode_to_device(ep: Episode, device: torch.device | str) -> Episode:
    """An episode of plain tensors (support and query inputs and targets) on ``device``, each sent by
    :func:`to_device`."""
    return Episode(*(to_device(t, device) for t in (ep.support_x, ep.support_y, ep.query_x, ep.query_y)))


__all__ = ["episode_to_device", "to_device", "to_device_all"]
