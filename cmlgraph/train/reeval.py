"""``cmlgraph eval RUN_DIR``: re-evaluate a saved inference model on the run's fixed test tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmlgraph.algorithms.registry import get_algorithm
from cmlgraph.config import from_yaml, load_yaml
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.domains.registry import build_domain
from cmlgraph.errors import CmlgraphError
from cmlgraph.graphs.features import pin_legacy_features
from cmlgraph.train.evaluate import evaluate
from cmlgraph.train.io import load_torch
from cmlgraph.train.progress import progress_bar, stage
from cmlgraph.train.trainer import prepare


def load_inference_model(run_dir: str | Path) -> tuple[Any, MetaModel, Any]:
    """Rebuild a run's domain and its co-learner-free inference model from ``config.yaml`` and ``model.pt``."""
    run_dir = Path(run_dir)
    for f in ("config.yaml", "model.pt", "test_episodes.pt"):
        if not (run_dir / f).is_file():
            raise CmlgraphError(f"{run_dir / f} is missing; `cmlgraph eval` needs a finished run folder "
                                f"made by `cmlgraph train`")
    cfg = prepare(pin_legacy_features(from_yaml(run_dir / "config.yaml"), load_yaml(run_dir / "config.yaml")))
    domain = build_domain(cfg)
    algo = get_algorithm(cfg.algo, total_steps=int(cfg.train.steps), seed=cfg.train.seed)
    model = MetaModel(domain.build_extractor(), domain.out_dim, co_depth=None)
    algo.prepare(model)
    model.load_state_dict(load_torch(run_dir / "model.pt"))
    return (cfg, algo, domain), model, load_torch(run_dir / "test_episodes.pt")


def reevaluate(run_dir: str | Path, console: Any = None) -> dict[str, Any]:
    """Mean ± 95% CI of the saved inference model on the run's saved test episodes (a progress bar on
    ``console`` when given); ``nonfinite_tasks`` counts tasks with NaN/inf predictions (scored as wrong)."""
    (cfg, algo, domain), model, state = load_inference_model(run_dir)
    raws = domain.from_state(state)
    with progress_bar(console, enabled=console is not None) as bar, \
            stage(bar, "evaluating", len(raws), keep=True) as hook:
        res = evaluate(algo, model, parameters_of(model), domain, raws, cfg.train.device, progress=hook)
    return {"metric": domain.metric, "mean": res["mean"], "ci95": res["ci95"], "num_tasks": res["num_tasks"],
            "nonfinite_tasks": res["nonfinite_tasks"]}
