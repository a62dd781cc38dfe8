"""cmlgraph.core.dropout: inverted dropout from a given stream, and each run's masks in a fused pass."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.core.dropout import current_generator, draw_from, dropout, dropout_task_rows


@pytest.mark.parametrize("p", [0.3, 0.5, 0.25])  # 0.3: uniform draws; 0.5 and 0.25: the random-byte mask
def test_dropout_is_inverteddropout(p: float) -> None:
    """The encoders' dropout keeps each entry with probability 1 − p, scales kept ones by 1/(1 − p),
    and passes gradients only through kept entries (as ``F.dropout``); the mask is not constant along a row or
    column (the byte path must use every byte of its draws, none of the biased top one)."""
    torch.manual_seed(0)
    h = torch.full((400, 50), 2.0, requires_grad=True)
    out = dropout(h, p)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.01
    # Each of the 7 byte lanes (and each column) keeps about 1 − p: a biased byte would show up here.
    lanes = kept.reshape(-1)[: (kept.numel() // 7) * 7].view(-1, 7).float().mean(0)
    assert (lanes - (1 - p)).abs().max() < 0.03, lanes
    assert (kept.float().mean(0) - (1 - p)).abs().max() < 0.12
    assert torch.allclose(out[kept], torch.tensor(2.0 / (1 - p)))
    out.sum().backward()
    assert torch.equal(h.grad != 0, kept) and torch.allclose(h.grad[kept], torch.tensor(1 / (1 - p)))
    a, b = dropout(torch.ones(64, 16), p), dropout(torch.ones(64, 16), p)
    assert not torch.equal(a, b)  # a fresh mask on every call
    assert torch.equal(dropout(torch.ones(3, 2), 1.0), torch.zeros(3, 2))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_a_generator_in_the_global_state_draws_the_global_mask(p: float) -> None:
    torch.manual_seed(7)
    gen = torch.Generator()
    gen.set_state(torch.get_rng_state())
    h = torch.ones(33, 5)
    assert torch.equal(dropout(h, p, gen), dropout(h, p))
    # the mask depends on the number of entries only, not on the shape
    assert torch.equal(dropout(h.view(3, 11, 5), p, _gen(1)).view(33, 5), dropout(h, p, _gen(1)))


def test_each_runs_tasks_get_the_mask_that_run_draws_alone() -> None:
    """Run 0 (2 tasks padded to 3 rows alone) and run 1 (1 task padded to 4 rows) in one pass padded to 4 rows."""
    h = torch.arange(1, 3 * 4 * 2 + 1, dtype=torch.float64).view(3 * 4, 2)
    out = dropout_task_rows(h, 0.5, 3, [(0, 2, 3, _gen(0)), (2, 3, 4, _gen(1))]).view(3, 4, 2)
    h3 = h.view(3, 4, 2)
    assert torch.equal(out[:2, :3], dropout(h3[:2, :3].contiguous(), 0.5, _gen(0)))
    assert torch.equal(out[:2, 3], h3[:2, 3])  # past run 0's own padding: unmasked (feeds nothing)
    assert torch.equal(out[2:], dropout(h3[2:].contiguous(), 0.5, _gen(1)))
    assert dropout_task_rows(h.view(3, 4, 2), 0.5, 3, [(0, 3, 4, _gen(0))]).shape == (3, 4, 2)


def test_draw_from_sets_the_generator_for_the_block_only() -> None:
    gen = _gen(3)
    assert current_generator() is None
    with draw_from(gen):
        assert current_generator() is gen
        with draw_from(None):
            assert current_generator() is None
        assert current_generator() is gen
    assert current_generator() is None
