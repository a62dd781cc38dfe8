"""``model.layers`` unset for the PCA-started SGC: its propagation depth ``K`` chosen on the run's validation tasks.

Why: a MAML-family (or ProtoNet) graph run starts where ``sgc-proto`` is (issue 17: a PCA-initialised SGC on
``Â^K X``, L2-normalised features, prototype heads), but it propagated a fixed ``K = 2`` while ``sgc-proto`` picks
its ``K`` on the validation tasks. Where the graph wants deeper propagation the run started, and stayed, below the
baseline it is checked against: the default ``cmlgraph train`` (synthetic graph, 5-way 3-shot, seed 0) validated at
0.7096 against ``sgc-proto``'s 0.8078 at ``K = 4`` and tested 72.3 %; with ``--layers 4`` it validated 0.8212 and
tested 82.8 % (``sgc-proto``: 82.2 %), in the same time (session 41, a new user's trial: "the default train tells a
new user not to use it").

How: the extractor's ``K`` is the ``K`` in 1..4 at which ``sgc-proto`` scores best on the run's fixed validation
tasks (:func:`cmlgraph.train.baseline_check.baseline_val`, the record the run's baseline check reads anyway, so it is
computed once); ``K = 0`` (no propagation) is no SGC and is not a candidate; a tie keeps the smaller ``K``. The
choice draws no random numbers, so a resume, ``cmlgraph eval`` and ``predict`` get the same depth; a finished run's
``summary.json["layers"]`` records it. ``--layers N`` (``layers=N``) fixes it; a run whose graph is too large for
the baseline keeps ``K = 2``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

#: The depth a run gets where nothing is chosen (and every GNN other than the PCA-started SGC).
DEFAULT_LAYERS = 2


def applies(cfg: Any) -> bool:
    """Whether an unset ``model.layers`` is chosen on validation: the PCA-started SGC of a MAML-family or ProtoNet
    graph run without a protocol (the issue-17 start)."""
    from cmlgraph.domains.registry import MAML_FAMILY, PROTO_START

    return (cfg.data.task == "graph" and cfg.model.gnn == "sgc" and cfg.model.init == "pca"
            and cfg.algo.algo in (*MAML_FAMILY, *PROTO_START) and cfg.data.protocol is None)


def with_layers(cfg: Any, layers: int) -> Any:
    """A copy of ``cfg`` with ``model.layers = layers``."""
    out = copy.deepcopy(cfg)
    out.model.layers = int(layers)
    return out


def depth_scores(record: dict[str, Any]) -> dict[int, float]:
    """``sgc-proto``'s validation accuracy at each ``K`` >= 1 of a :func:`baseline_val` record's grid (``K = 0``
    is no SGC)."""
    return {int(row["k"]): float(row["val"]) for row in record.get("grid") or [] if int(row["k"]) >= 1}


def best_depth(record: dict[str, Any]) -> int | None:
    """The ``K`` in 1.. with ``sgc-proto``'s best validation accuracy in a :func:`baseline_val` record's grid (the
    smaller on a tie), or ``None`` where the grid has none."""
    scores = depth_scores(record)
    return max(scores, key=lambda k: (scores[k], -k)) if scores else None


def choose(cfg: Any, build: Callable[[Any], Any]) -> Any:
    """The domain of ``cfg`` (``model.layers`` unset, :func:`applies`) at the depth its validation tasks prefer.

    Args:
        cfg: A defaults-filled graph config.
        build: Builds a domain from a config with a depth (:func:`cmlgraph.domains.registry.build_domain`, which
            chooses the features first where they are ``auto``).

    Returns:
        The domain (its ``gnn["layers"]`` the chosen ``K``), with ``depth_choice`` (``{"chosen", "val": {K: acc},
        "method": "sgc-proto", "selected_on"}``, or ``{"chosen": 2, "kept": why}``) and a note.
    """
    from cmlgraph.domains.feature_choice import _keep, reusable_baseline
    from cmlgraph.train.baseline_check import baseline_val, skip_reason

    domain = build(with_layers(cfg, DEFAULT_LAYERS))
    n = int(cfg.train.val_tasks)  # at least 1 (validate_config)
    why = skip_reason(cfg, domain, None)
    if why:
        return _record(domain, {"chosen": DEFAULT_LAYERS, "kept": why})
    record = reusable_baseline(domain, cfg)  # the feature choice scored sgc-proto on these tasks already
    if record is None:
        record = baseline_val(domain, domain.fixed("val", n, cfg.train.seed), cfg.train.device,
                              seed=int(cfg.train.seed))
        _keep(domain, cfg, record)  # the run's baseline check reads it
    k = best_depth(record)
    if k is None:
        return _record(domain, {"chosen": DEFAULT_LAYERS, "kept": "sgc-proto's grid has no K >= 1"})
    if k != DEFAULT_LAYERS:
        domain = _rebuilt(domain, with_layers(cfg, k), build)
    return _record(domain, {"chosen": k, "method": "sgc-proto",
                            "val": depth_scores(record),
                            "selected_on": record.get("selected_on", f"{n} validation tasks")})


def _rebuilt(domain: Any, cfg: Any, build: Callable[[Any], Any]) -> Any:
    """``domain`` built again at ``cfg``'s depth: on the features it already chose (not chosen again), with its
    ``sgc-proto`` record, and without repeating the warnings its first build gave (the graph is fitted the same)."""
    from cmlgraph.domains.feature_choice import note as feature_note

    choice = getattr(domain, "feature_choice", None)
    if choice is not None:
        cfg.data.features = domain.features
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = build(cfg)
    out.feature_baseline = domain.feature_baseline
    if choice is not None:
        out.feature_choice = choice
        out.notes.append(feature_note(choice))
    return out


def _record(domain: Any, choice: dict[str, Any]) -> Any:
    domain.depth_choice = choice
    domain.notes.append(note(choice))
    return domain


def note(choice: dict[str, Any]) -> str:
    """The run's console note on the choice."""
    if "kept" in choice:
        return f"layers: K = {choice['chosen']} ({choice['kept']}; --layers N fixes it)"
    scores = ", ".join(f"K={k} {v:.4f}" for k, v in choice["val"].items())
    return (f"layers auto: K = {choice['chosen']}, the SGC's propagation depth (sgc-proto on the run's "
            f"{choice['selected_on']}: {scores}; --layers N fixes it)")


__all__ = ["DEFAULT_LAYERS", "applies", "best_depth", "choose", "depth_scores", "note", "with_layers"]
