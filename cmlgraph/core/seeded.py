"""A fixed seed for one computation, on the generators it draws from only.

Why: ``torch.manual_seed(s)`` seeds the CPU generator *and every CUDA device's* (lazily, if CUDA is not initialised
yet), while ``torch.random.fork_rng(devices=[])`` restores only the CPU's. A fixed-seed computation inside such a
block (the PCA start of SGC, GRACE's pretraining) therefore left every CUDA generator at that fixed seed: on a GPU,
every seed of a run then drew the same dropout masks. :func:`seeded` seeds and restores exactly the generators of
the devices the computation runs on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Within the block, torch's global generators of the CPU and of ``device`` (where CUDA) start from ``seed``;
    afterwards both are back where they were, and no other device's generator was touched.

    Args:
        seed: The seed.
        device: The device the block's random draws happen on (besides the CPU).
    """
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" \
        else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(int(seed))
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(int(seed))
        yield


__all__ = ["seeded"]
