"""``data.features: auto``: a graph's feature preprocessing chosen on the run's own validation tasks.

Why: which preprocessing of a bag-of-words graph serves few-shot node classification best depends on the graph,
and the gap is large. Nearest class means on propagated features (``sgc-proto``, no training), seed 0, 2-way,
the same 500 test tasks (session 27, ``cmlgraph train --graph G --ways 2 --shots K --algo sgc-proto --features
row|standard``): Cora 81.5 row against 93.8 standardised, Amazon-Photo 84.3 against 88.3, CiteSeer 80.8 against
82.3, Amazon-Computers (5-shot) 90.4 against 87.8. A default meta-learning run on row features (Cora 86.7) then
scored 7 points below a training-free method on standardised ones. No one preprocessing wins everywhere, so it is
chosen like any other setting: on the run's validation tasks, never its test tasks.

How: for each candidate (:data:`CANDIDATES`) the domain is built on those features and ``sgc-proto`` (its ``K``
chosen on the same tasks, :func:`cmlgraph.train.baseline_check.baseline_val`) is scored on the run's fixed
validation tasks (``train.val_tasks`` drawn with ``train.seed``: the tasks the run itself validates on, from its
own validation classes). The best mean accuracy wins; a tie keeps the first candidate (``row``, the literature's
preprocessing). The choice draws no random numbers and is kept per process (:data:`_CHOSEN`), so a run's domain,
its resume and the ``sgc-proto`` run of the same setting and seed get the same features.

Default (:func:`cmlgraph.domains.registry.fill_defaults`): ``auto`` for ``--algo sgc-proto`` and for the MAML
family's PCA-started SGC (the issue-17 start, which is ``sgc-proto`` plus meta-learning) on the registered
bag-of-words graphs whose standardised features are small (:data:`cmlgraph.domains.registry.GNN_FEATURES`).
``--features row|standard|raw`` fixes them; ``--features auto`` asks for the choice on any graph run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from typing import Any

from cmlgraph.errors import ConfigError

#: The preprocessings compared, in tie-break order.
CANDIDATES = ("row", "standard")
#: ``data.features`` value that asks for the choice.
AUTO = "auto"
#: What was chosen, per data settings and seed (see :func:`_key`): the mode and its record.
_CHOSEN: dict[str | None, dict[str, Any]] = {}
#: The chosen mode's full ``sgc-proto`` validation record, per :func:`_key`: the run's baseline check
#: (:func:`cmlgraph.train.baseline_check.baseline_val` on the same tasks) reads it instead of computing it again.
_BASELINES: dict[str | None, dict[str, Any]] = {}


def _key(cfg: Any) -> str:
    """What the choice depends on: the data settings (features aside), the seed (class split and validation tasks),
    the number of validation tasks, the device and the domain's kind (TLP's encoders read their own episodes);
    not the algorithm or the model, so every method of one setting and seed gets the same features."""
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k != "features"}
    graph_file = None
    if os.path.isfile(str(cfg.data.graph)):  # a saved graph: its file's version
        st = os.stat(str(cfg.data.graph))
        graph_file = (st.st_size, st.st_mtime_ns)
    return json.dumps({"data": data, "graph_file": graph_file, "seed": cfg.train.seed,
                       "val_tasks": cfg.train.val_tasks, "device": str(cfg.train.device),
                       "tlp": cfg.algo.algo in ("gmeta", "ammgnn")},
                      sort_keys=True, default=str)


def _with(cfg: Any, mode: str) -> Any:
    out = copy.deepcopy(cfg)
    out.data.features = mode
    return out


def choose(cfg: Any, build: Any) -> tuple[Any, dict[str, Any]]:
    """The domain of ``cfg`` on the features its validation tasks prefer, and the record of the choice.

    Args:
        cfg: A defaults-filled config with ``data.features == "auto"`` on a graph.
        build: Builds a domain from a config with concrete features (:func:`cmlgraph.domains.registry.build_domain`).

    Returns:
        ``(domain, record)``: the chosen candidate's domain (``domain.features`` the chosen mode) and
        ``{"chosen", "val": {mode: accuracy}, "k": {mode: K}, "method": "sgc-proto", "selected_on", "seconds"}``;
        a candidate that cannot be built (standardising too large a sparse matrix) is listed under ``skipped``.

    Raises:
        ConfigError: The first candidate (``row``) cannot be built: the run's settings do not fit the graph (its
            own message, as with fixed features); or the run has no validation tasks to choose on.
    """
    from cmlgraph.domains.graph import CUSTOM_GRAPHS
    from cmlgraph.train.baseline_check import baseline_val

    # a user's in-memory graph is chosen for afresh (another graph may be registered under its name later)
    key = None if str(cfg.data.graph) in CUSTOM_GRAPHS else _key(cfg)
    if key in _CHOSEN:
        record = _CHOSEN[key]
        return _keep(build(_with(cfg, record["chosen"])), cfg, _BASELINES[key]), record
    t0 = time.perf_counter()
    scores: dict[str, float] = {}
    ks: dict[str, int] = {}
    skipped: dict[str, str] = {}
    domains: dict[str, Any] = {}
    baselines: dict[str, dict[str, Any]] = {}
    n = int(cfg.train.val_tasks)
    if n < 1:
        raise ConfigError("data.features auto chooses on the validation tasks, but train.val_tasks is 0; give "
                          "--features row or --features standard")
    for mode in CANDIDATES:
        try:
            domain = build(_with(cfg, mode))
        except ConfigError as exc:
            if mode == CANDIDATES[0]:  # the settings themselves fail (e.g. more ways than a split's classes)
                raise
            skipped[mode] = str(exc)  # standardising would densify too large a matrix
            continue
        raws = domain.fixed("val", n, cfg.train.seed)
        rec = baseline_val(domain, raws, cfg.train.device, seed=int(cfg.train.seed))
        scores[mode], ks[mode] = float(rec["val"]), int(rec["settings"]["k"])
        domains[mode], baselines[mode] = domain, rec
    chosen = max(scores, key=lambda m: (scores[m], -CANDIDATES.index(m)))
    record = {"chosen": chosen, "method": "sgc-proto", "val": scores, "k": ks,
              "selected_on": f"{n} validation task{'s' if n != 1 else ''} (seed {cfg.train.seed})",
              "seconds": round(time.perf_counter() - t0, 3)}
    if skipped:
        record["skipped"] = skipped
    if key is not None:
        _CHOSEN[key], _BASELINES[key] = record, baselines[chosen]
    return _keep(domains[chosen], cfg, baselines[chosen]), record


def _keep(domain: Any, cfg: Any, baseline: dict[str, Any]) -> Any:
    """``domain`` with the chosen features' ``sgc-proto`` record on the run's validation tasks (``val_tasks``,
    ``seed``, ``device``), for :func:`reusable_baseline`."""
    domain.feature_baseline = ((int(cfg.train.val_tasks), int(cfg.train.seed), str(cfg.train.device)), baseline)
    return domain


def reusable_baseline(domain: Any, cfg: Any) -> dict[str, Any] | None:
    """The ``sgc-proto`` validation record the feature choice computed for ``domain`` on exactly the run's
    validation tasks (same count, seed and device), a copy; ``None`` where there is none (the run's baseline check
    then computes it)."""
    kept = getattr(domain, "feature_baseline", None)
    if kept is None or kept[0] != (int(cfg.train.val_tasks), int(cfg.train.seed), str(cfg.train.device)):
        return None
    return copy.deepcopy(kept[1])


def note(record: dict[str, Any]) -> str:
    """The run's console note on the choice."""
    scores = ", ".join(f"{m} {v:.4f}" for m, v in record["val"].items())
    others = "|".join(m for m in CANDIDATES)
    return (f"features auto: {record['chosen']} (sgc-proto on the run's {record['selected_on']}: {scores}; "
            f"--features {others} fixes them)")


__all__ = ["AUTO", "CANDIDATES", "choose", "note", "reusable_baseline"]
