"""core.transfer.to_device: pinned and non_blocking from the CPU to CUDA (a plain copy from pageable memory makes
PyTorch synchronise the stream), the tensor itself where it is already (issue 18, Build item 2)."""

from __future__ import annotations

from typing import Any

import torch

from cmlgraph.core.transfer import to_device


class _HostTensor:
    """A CPU tensor's stand-in recording what to_device asks of it (pinning and copying need CUDA here)."""

    device = torch.device("cpu")
    layout = torch.strided

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def pin_memory(self) -> _HostTensor:
        self.calls.append(("pin_memory", None))
        return self

    def to(self, device: Any, non_blocking: bool = False) -> str:
        self.calls.append(("to", (torch.device(device), non_blocking)))
        return "sent"


def test_a_copy_to_cuda_is_pinned_and_non_blocking() -> None:
    t = _HostTensor()
    assert to_device(t, "cuda:1") == "sent"  # type: ignore[arg-type]
    assert t.calls == [("pin_memory", None), ("to", (torch.device("cuda:1"), True))]


def test_a_tensor_already_there_is_returned_itself_and_other_devices_copy_plainly() -> None:
    x = torch.arange(3)
    assert to_device(x, "cpu") is x
    m = to_device(x, "meta")
    assert m.device.type == "meta" and m.shape == x.shape


def test_a_coalesced_sparse_matrix_goes_as_its_parts_and_stays_coalesced() -> None:
    x = torch.eye(3).to_sparse().coalesce()
    out = to_device(x, "meta")
    assert out.layout == torch.sparse_coo and out.is_coalesced() and out.shape == x.shape
