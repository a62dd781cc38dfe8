"""An SGC extractor whose start keeps the geometry of the propagated features (issue 17).

Why: SGC's features are ``(Â^K X) W``. With ``W``'s rows set to the top ``hidden`` right singular vectors of
``M = Â^K X`` (uncentred PCA over every node of the graph; no labels are read), ``M W^T`` is the best rank-``hidden``
approximation of ``M``'s rows in the sense of inner products, so class means and cosines of the start's features are
those of the propagated features with the noise of the smallest directions removed. Measured on the five local
graphs (docs/baselines.md), nearest class means on these features, L2-normalised, beat cosine class means on the full
``Â^K X`` (``sgc-proto``): meta-training then starts at, not below, the training-free baseline.

The basis is computed with :func:`torch.svd_lowrank` under a fixed seed (:func:`cmlgraph.core.seeded.seeded`), so it
is deterministic and leaves the global random streams (the rest of the model's init, the episodes, a GPU's dropout)
untouched.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cmlgraph.core.seeded import seeded
from cmlgraph.errors import ConfigError

#: The dense ``Â^K X`` is formed for the decomposition only up to this many bytes (float32).
MAX_DENSE_BYTES = 4 << 30
#: Extra columns and power iterations of the randomised SVD (Halko et al., 2011): exact to float precision on the
#: spectra of the local graphs.
OVERSAMPLE, POWER_ITERATIONS = 16, 6


def principal_axes(m: Tensor, dim: int) -> Tensor:
    """The top ``dim`` right singular vectors of ``m`` (``[N, F]``, uncentred) as rows: ``[min(dim, rank), F]``.

    Args:
        m: Dense ``[N, F]`` matrix.
        dim: Number of axes wanted; at most ``min(N, F)`` are returned.
    """
    q = min(dim, *m.shape)
    with seeded(0, m.device):  # the CPU's and m's device's generators only (not torch.manual_seed: every CUDA one)
        _, _, v = torch.svd_lowrank(m.double(), q=min(q + OVERSAMPLE, *m.shape), niter=POWER_ITERATIONS)
    return v[:, :q].T.to(m.dtype).contiguous()


def propagated_features(x: Tensor, edge_index: Tensor, num_nodes: int, hops: int) -> Tensor:
    """SGC's ``Â^K X`` with ``Â = D^-1/2 (A + I) D^-1/2`` as a dense ``[N, F]`` float32 tensor.

    Raises:
        ConfigError: When the dense matrix would exceed :data:`MAX_DENSE_BYTES` (the fix: ``--init random``).
    """
    from cmlgraph.baselines.propagation import sym_norm_propagate

    size = num_nodes * x.shape[1] * 4
    if size > MAX_DENSE_BYTES:
        raise ConfigError(f"--init pca needs the dense propagated features ({num_nodes} x {x.shape[1]}, "
                          f"{size / 2**30:.1f} GiB, above {MAX_DENSE_BYTES / 2**30:.0f} GiB); use --init random")
    dense = x.to_dense() if x.layout != torch.strided else x
    return sym_norm_propagate(dense.float(), edge_index, num_nodes, hops)


def sgc_axes(extractor: torch.nn.Module, x: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
    """The principal axes an SGC extractor starts from: ``[min(hidden, N, F), F]`` rows of ``Â^K X``'s basis.

    Args:
        extractor: A :class:`~cmlgraph.backbones.gnn.GNNBackbone` of kind ``sgc`` (``K`` = its hops).
        x: ``[N, F]`` node features (dense or sparse), as the extractor reads them.
        edge_index: ``[2, E]`` edges of the graph.
        num_nodes: ``N``.

    Raises:
        ConfigError: If the extractor is not SGC, or the propagated features are too large to decompose.
    """
    if getattr(extractor, "kind", None) != "sgc":
        raise ConfigError(f"--init pca sets the weight of an SGC extractor; this one is "
                          f"{getattr(extractor, 'kind', type(extractor).__name__)!r}: use --gnn sgc or --init random")
    hidden = extractor.convs[0].lin.weight.shape[0]
    return principal_axes(propagated_features(x, edge_index, num_nodes, extractor.hops), hidden)


@torch.no_grad()
def load_axes_(extractor: torch.nn.Module, axes: Tensor) -> None:
    """Write ``axes`` into the SGC weight's first rows, zero the other rows and the bias (in place).

    Rows beyond the rank of ``Â^K X`` (``hidden > min(N, F)``) are zero: they add nothing at the start and are
    learned like any weight.
    """
    lin = extractor.convs[0].lin
    lin.weight.zero_()
    lin.weight[: axes.shape[0]] = axes.to(lin.weight)
    if lin.bias is not None:
        lin.bias.zero_()


def pca_init_(extractor: torch.nn.Module, x: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
    """Set an SGC extractor's weight to the principal axes of ``Â^K X`` and its bias to 0 (in place); returns the
    axes (:func:`sgc_axes`, :func:`load_axes_`)."""
    axes = sgc_axes(extractor, x, edge_index, num_nodes)
    load_axes_(extractor, axes)
    return axes


__all__ = ["MAX_DENSE_BYTES", "load_axes_", "pca_init_", "principal_axes", "propagated_features", "sgc_axes"]
