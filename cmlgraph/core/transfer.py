"""Host-to-device copies that do not block the host (issue 18 item 2).

Why: a plain ``tensor.to("cuda")`` from ordinary (pageable) host memory makes the host wait for the copy; from
pinned (page-locked) memory with ``non_blocking=True`` it is queued on the current CUDA stream and the host goes on
(PyTorch docs, "Use pinned memory buffers"; the caching host allocator keeps the pinned buffer alive until the
copy has run). The copy is ordered on that stream before every kernel queued after it, so no event or
``record_stream`` is needed as long as producer and consumer use the default stream, as cmlgraph does.
Episodes and their layouts (k-hop plans) are built on the host from CPU tensors and sent with :func:`to_device`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cmlgraph.core.episode import Episode


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` on ``device``: pinned and ``non_blocking`` from the CPU to CUDA; ``t`` itself when it is there already.

    A coalesced sparse COO tensor goes as its indices and values, and is said coalesced there (so nothing on the
    device coalesces it again, which would read its entry count back).

    Args:
        t: A dense tensor (host-built index or value tensor), or a coalesced sparse COO one.
        device: The run's device.
    """
    device = torch.device(device)
    if t.device.type == device.type and (device.index is None or t.device.index == device.index):
        return t
    if t.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(to_device(t.indices(), device), to_device(t.values(), device), t.shape,
                                       is_coalesced=True)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def episode_to_device(ep: Episode, device: torch.device | str) -> Episode:
    """An episode of plain tensors (support and query inputs and targets) on ``device``, each sent by
    :func:`to_device`."""
    return Episode(*(to_device(t, device) for t in (ep.support_x, ep.support_y, ep.query_x, ep.query_y)))


__all__ = ["episode_to_device", "to_device"]
