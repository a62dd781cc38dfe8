"""Gradient diagnostics: how the co-learner's gradient on ψ relates to the meta-learner's.

Logged at an interval: the cosine similarity between ∂L_meta/∂ψ and ∂L_co/∂ψ overall and per layer, and the
per-layer gradient norms of each term. The total gradient is assembled from the two parts, so a diagnostic
step costs one extra backward pass, not a second forward pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from cmlgraph.core.model import group_of


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: its name without the trailing ``.weight``/``.bias`` part."""
    return name.rsplit(".", 1)[0]


def _cos(a: Tensor, b: Tensor) -> float:
    denom = a.norm() * b.norm()
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def gradient_diagnostics(g_meta: Mapping[str, Tensor], g_co: Mapping[str, Tensor]) -> dict[str, Any]:
    """Cosine similarity and norms of the two terms' gradients on the extractor, overall and per layer."""
    ext = [k for k in g_meta if group_of(k) == "extractor"]
    if not ext:
        return {}
    flat_m = torch.cat([g_meta[k].flatten() for k in ext])
    flat_c = torch.cat([g_co[k].flatten() for k in ext])
    layers: dict[str, list[str]] = defaultdict(list)
    for k in ext:
        layers[layer_of(k)].append(k)
    per_layer = {}
    for layer, keys in layers.items():
        m = torch.cat([g_meta[k].flatten() for k in keys])
        c = torch.cat([g_co[k].flatten() for k in keys])
        per_layer[layer] = {"cos": _cos(m, c), "norm_meta": float(m.norm()), "norm_co": float(c.norm())}
    return {"cos_extractor": _cos(flat_m, flat_c), "norm_meta_extractor": float(flat_m.norm()),
            "norm_co_extractor": float(flat_c.norm()), "layers": per_layer}
