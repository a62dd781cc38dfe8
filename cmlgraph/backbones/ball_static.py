"""G-Meta ball layouts padded to fixed capacities, so that a CUDA graph can replay a meta-step (issue 18 item 4).

Why: a meta-batch's ball layout (:func:`cmlgraph.backbones.gmeta.ball_layout`) has data-dependent sizes: ``R`` ball
rows, ``E`` block entries and a union of ``U`` distinct members, different for every meta-batch. A captured CUDA
graph needs every tensor at a fixed address and shape. A **static layout** holds buffers of capacities
``R_b > R``, ``E_b ≥ E``, ``U_b ≥ U`` (:class:`BallCapacity`), refilled in place for each meta-batch
(:func:`fill_static`, device-to-device copies and fills, no host synchronisation); a meta-batch larger than the
capacities needs larger buffers (the caller captures again, :mod:`cmlgraph.train.cuda_graph_balls`).

The padding is inert, exactly (the padded pass equals the unpadded one up to float summation order; test:
``tests/backbones/test_ball_static.py``):

- rows ``R..R_b−1`` scale to 0 (``row_scale``, their ``B`` rows are zero) and pool with weight 0 into ball 0 (their
  first-layer outputs never reach an embedding, and their gradients are zero);
- the pad entries ``E..E_b−1`` all sit in the last row at its own column (``B``'s pattern stays symmetric, as
  :class:`~cmlgraph.backbones.gnn_ops.RowScaledSymmetric` needs for its backward);
- the union's pad rows ``U..U_b−1`` are zero features (nothing gathers them; zero keeps ``W₁``'s gradient finite).

Sparse features (bag of words: CiteSeer, Cora) fill a dense union buffer (``U_b × F``, at most
:data:`MAX_FEATURE_BYTES`): its first layer is then one dense product, which a GPU runs faster than the sparse one.

The readout runs as an ``index_add`` of the pooling weights' rows into their balls (``ball_of_row``, ``pool``)
instead of the unpadded path's CSR ``P B`` (whose row pointer depends on the ball sizes). Only undirected graphs
qualify, and not the CPU's binary-feature tables (:func:`static_ineligible`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from cmlgraph.backbones.binary_features import BinaryRows
from cmlgraph.backbones.gnn_ops import RowScaledSymmetric, is_sparse, stored_transpose

#: Capacity over the first meta-batch's needs (rows, entries, union), and growth when a later one needs more.
SLACK = 1.25
#: Most bytes of a static layout's dense union features (sparse features densify into it).
MAX_FEATURE_BYTES = 1 << 30
#: ``memo`` marker of a static layout (:meth:`cmlgraph.backbones.gmeta.BallGCN._forward_group` reads it).
STATIC_KEY = "static"


@dataclass(frozen=True)
class BallCapacity:
    """Sizes of a static layout's buffers: ball ``rows`` (one more than any layout it holds: the pad entries'
    row), block ``entries`` and ``union`` members."""

    rows: int
    entries: int
    union: int

    def holds(self, need: BallCapacity) -> bool:
        """Whether a layout of sizes ``need`` (:func:`layout_size`) fits these buffers."""
        return need.rows < self.rows and need.entries <= self.entries and need.union <= self.union

    def grown(self, need: BallCapacity, slack: float = SLACK) -> BallCapacity:
        """Capacities holding ``need`` and these ones, each with ``slack`` to spare (the next batches vary)."""
        def up(a: int, b: int) -> int:
            return max(a, math.ceil(b * slack) + 1)

        return BallCapacity(up(self.rows, need.rows), up(self.entries, need.entries), up(self.union, need.union))


def layout_size(lay: dict[str, Any]) -> BallCapacity:
    """The rows, entries and union size of an (unpadded) layout from :func:`~cmlgraph.backbones.gmeta.ball_layout`;
    host metadata only (tensor shapes), no read-back."""
    b = lay["B"]
    return BallCapacity(int(b.row_scale.numel()), int(b.cols.numel()), int(lay["shape"][2]))


def static_ineligible(lay: dict[str, Any]) -> str | None:
    """Why a layout cannot be held in static buffers, or ``None``."""
    if not isinstance(lay["B"], RowScaledSymmetric):
        return "the graph is directed (its ball blocks have no symmetric pattern to pad)"
    if isinstance(lay["XU"], BinaryRows):
        return "the features are binary-coded (subset-sum tables are a CPU path; on a GPU the features are dense)"
    if "task_blocks" in lay:
        return "its features are per-task blocks (a CPU path: gmeta.task_blocks_win; on a GPU the union is padded)"
    return None


def static_layout(lay: dict[str, Any], cap: BallCapacity) -> dict[str, Any]:
    """Static buffers of capacities ``cap`` for layouts like ``lay`` (same tasks and centre nodes, same dtypes
    and device), filled with ``lay``.

    Raises:
        ValueError: ``lay`` does not fit ``cap``, or cannot be held statically (:func:`static_ineligible`).
    """
    why = static_ineligible(lay)
    if why is not None:
        raise ValueError(f"this ball layout cannot be padded: {why}")
    b, xu = lay["B"], lay["XU"]
    t, n, _ = lay["shape"]
    dense_bytes = cap.union * xu.shape[1] * xu.element_size()
    if dense_bytes > MAX_FEATURE_BYTES:
        raise ValueError(f"the union's features would take {dense_bytes / 2**20:.0f} MiB dense (> "
                         f"{MAX_FEATURE_BYTES / 2**20:.0f} MiB): too wide to pad")
    idx, dev = b.cols.dtype, b.cols.device
    offsets = torch.empty(cap.rows, dtype=idx, device=dev)
    cols = torch.empty(cap.entries, dtype=idx, device=dev)
    row_scale = torch.empty(cap.rows, dtype=b.row_scale.dtype, device=dev)
    out = {STATIC_KEY: True, "capacity": cap, "B": RowScaledSymmetric.from_offsets(offsets, cols, row_scale),
           "gather": torch.empty(cap.rows, dtype=lay["gather"].dtype, device=dev),
           "task_of_row": torch.empty(cap.rows, dtype=lay["task_of_row"].dtype, device=dev),
           "ball_of_row": torch.empty(cap.rows, dtype=torch.long, device=dev),
           "pool": torch.empty(cap.rows, dtype=b.row_scale.dtype, device=dev),
           "XU": torch.empty(cap.union, xu.shape[1], dtype=xu.dtype, device=xu.device),
           "shape": (t, n, cap.union), "task_rows": list(lay["task_rows"])}
    fill_static(out, lay)
    return out


def fill_static(static: dict[str, Any], lay: dict[str, Any]) -> None:
    """Refill ``static`` (:func:`static_layout`) in place with the layout ``lay``, padded (device copies and fills,
    asynchronous: no host synchronisation).

    Raises:
        ValueError: ``lay`` is larger than the buffers, or of other tasks or centre-node counts.
    """
    cap: BallCapacity = static["capacity"]
    need = layout_size(lay)
    t, n, u = lay["shape"]
    if not cap.holds(need) or (t, n) != static["shape"][:2]:
        raise ValueError(f"a ball layout of {need} for {t} tasks of {n} nodes does not fit static buffers of {cap} "
                         f"for {static['shape'][0]} tasks of {static['shape'][1]} nodes")
    r, e = need.rows, need.entries
    b, sb = lay["B"], static["B"]
    sb.offsets[:r].copy_(b.offsets, non_blocking=True)
    sb.offsets[r:].fill_(e)  # rows r.. are empty, but the last: it holds the pad entries
    sb.cols[:e].copy_(b.cols, non_blocking=True)
    sb.cols[e:].fill_(cap.rows - 1)  # the last row's own column: the pattern stays symmetric
    sb.row_scale[:r].copy_(b.row_scale, non_blocking=True)
    sb.row_scale[r:].zero_()
    # row → task·U_b + union position (the unpadded gather counts in U per task)
    torch.add(lay["gather"], lay["task_of_row"], alpha=cap.union - u, out=static["gather"][:r])
    static["task_of_row"][:r].copy_(lay["task_of_row"], non_blocking=True)
    pb = lay["PB"]  # the mean readout P·B: CSR (ball × row), one entry per row, columns in order
    static["pool"][:r].copy_(pb.values(), non_blocking=True)
    static["ball_of_row"][:r].copy_(stored_transpose(pb).col_indices(), non_blocking=True)
    for key in ("gather", "task_of_row", "pool", "ball_of_row"):
        static[key][r:].zero_()
    xu = lay["XU"]  # sparse features (bag of words) densify: the union's rows only
    static["XU"][:u].copy_(xu.to_dense() if is_sparse(xu) else xu, non_blocking=True)
    static["XU"][u:].zero_()
    static["task_rows"] = list(lay["task_rows"])


__all__ = ["MAX_FEATURE_BYTES", "SLACK", "STATIC_KEY", "BallCapacity", "fill_static", "layout_size",
           "static_ineligible", "static_layout"]
