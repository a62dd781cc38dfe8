"""gnn_ops' dropout: sparse stays sparse, masks from a given stream, and a fused pass's runs masked as alone."""

from __future__ import annotations

import pytest
import torch

from cmlgraph.backbones.gnn_ops import BLOCK_NNZ, feature_dropout, task_feature_dropout, transposable
from cmlgraph.backbones.gnn_plan import _block_diag, _to_csr
from cmlgraph.core.dropout import draw_from


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sparse(rows: int, seed: int) -> torch.Tensor:
    g = _gen(seed)
    return ((torch.rand(rows, 6, generator=g) < 0.4) * (1 + torch.rand(rows, 6, generator=g))).to_sparse_csr()


def test_feature_dropout_draws_from_the_given_stream_or_the_enclosing_one() -> None:
    x = torch.ones(20, 7)
    a = feature_dropout(x, 0.5, True, _gen(0))
    with draw_from(_gen(0)):
        b = feature_dropout(x, 0.5, True)
    assert torch.equal(a, b) and not torch.equal(a, feature_dropout(x, 0.5, True, _gen(1)))
    assert feature_dropout(x, 0.5, False, _gen(0)) is x  # evaluation: no mask


def test_sparse_features_drop_stored_values_only() -> None:
    x = transposable(_sparse(10, 0))
    out = feature_dropout(x, 0.5, True, _gen(0))
    assert out.layout == torch.sparse_csr and torch.equal(out.col_indices(), x.col_indices())
    kept = out.values() != 0
    assert 0 < int(kept.sum()) < x.values().numel()
    assert torch.allclose(out.values()[kept], 2 * x.values()[kept])
    assert torch.equal(out.to_dense().t(), out._cmlgraph_transpose.to_dense())  # the stored transpose follows


def test_a_fused_block_diagonal_masks_each_runs_blocks_as_that_run_alone() -> None:
    """Runs of 2 and 1 tasks: each run's blocks (rows padded to 4 in the fused matrix, to 3 alone for run 0) get
    the stored-value mask that run's own block-diagonal matrix gets from its generator."""
    parts = [_to_csr(_sparse(3, s)) for s in (1, 2, 3)]
    fused = _block_diag(parts, 4, 6)
    assert getattr(fused, BLOCK_NNZ) == [int(p.values().numel()) for p in parts]
    out = task_feature_dropout(fused, 0.5, 3, [(0, 2, 3, _gen(5)), (2, 3, 3, _gen(6))])
    alone0 = feature_dropout(_block_diag(parts[:2], 3, 6), 0.5, True, _gen(5))
    alone1 = feature_dropout(_block_diag(parts[2:], 3, 6), 0.5, True, _gen(6))
    assert torch.equal(out.values(), torch.cat([alone0.values(), alone1.values()]))
    with pytest.raises(ValueError, match="block-diagonal"):
        task_feature_dropout(transposable(_sparse(6, 0)), 0.5, 3, [(0, 3, 2, _gen(0))])


def test_a_fused_dense_batch_masks_each_run_over_its_own_padding() -> None:
    h = torch.ones(2 * 5, 3)  # 2 tasks padded to 5 rows
    out = task_feature_dropout(h, 0.5, 2, [(0, 1, 4, _gen(0)), (1, 2, 5, _gen(1))]).view(2, 5, 3)
    assert torch.equal(out[0, :4], feature_dropout(torch.ones(4, 3), 0.5, True, _gen(0)))
    assert torch.equal(out[0, 4], torch.ones(3))  # past run 0's own padding: feeds nothing, unmasked
    assert torch.equal(out[1], feature_dropout(torch.ones(5, 3), 0.5, True, _gen(1)))
