"""Checks of every setting before any work starts, each failing with the bad value and the fix."""

from __future__ import annotations

import re

import torch

from cmlgraph.config import Config
from cmlgraph.errors import ConfigError


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    _need(value in choices, f"{name} = {value!r} is not valid; choose one of: {', '.join(choices)}")


def validate_config(cfg: Config) -> None:
    """Validate a defaults-filled config; raises :class:`ConfigError` on the first problem."""
    from cmlgraph.algorithms.registry import ALGORITHMS

    d, m, a, t = cfg.data, cfg.model, cfg.algo, cfg.train
    regression = d.task == "sinusoid"
    if not regression:
        _need(d.ways >= 2, f"--ways {d.ways}: a classification task needs at least 2 ways")
    _need(d.shots is not None and d.shots >= 1, f"--shots {d.shots}: shots must be a positive integer (e.g. 5)")
    _need(d.queries is not None and d.queries >= 1, f"--queries {d.queries}: queries must be a positive integer")
    _choice("data.subgraph", d.subgraph, ("auto", "full", "khop"))
    _need(d.subgraph_threshold >= 0, "data.subgraph_threshold must be >= 0")
    _need(d.synthetic_nodes >= 10, f"data.synthetic_nodes = {d.synthetic_nodes}: need at least 10 nodes")
    _need(d.synthetic_classes >= 2, f"data.synthetic_classes = {d.synthetic_classes}: need at least 2 classes")
    _need(8 <= d.image_size <= 512, f"data.image_size = {d.image_size}: use a size between 8 and 512 pixels")

    if d.task == "graph":
        from cmlgraph.backbones.gnn import GNN_REGISTRY

        _choice("--gnn", m.gnn, list(GNN_REGISTRY))
    _need(m.hidden is not None and m.hidden >= 1, f"model.hidden = {m.hidden}: must be a positive integer")
    _need(m.layers >= 1, f"model.layers = {m.layers}: need at least one layer")
    _need(0.0 <= m.dropout < 1.0, f"model.dropout = {m.dropout}: must be in [0, 1)")
    _need(m.gat_heads >= 1, f"model.gat_heads = {m.gat_heads}: must be >= 1")

    _choice("--algo", a.algo, list(ALGORITHMS))
    _need(a.gamma >= 0, f"--gamma {a.gamma}: γ weights the co-learner loss and must be >= 0")
    _need(a.co_depth is not None and a.co_depth >= 0, f"--co-depth {a.co_depth}: must be >= 0")
    _choice("--control", a.control, ("none", "cl", "noise"))
    if a.control == "noise":
        _need(not a.cml, "--control noise replaces the co-learner by gradient noise; add --no-cml")
    _need(a.noise_std >= 0, f"algo.noise_std = {a.noise_std}: must be >= 0")
    _need(a.inner_steps is not None and a.inner_steps >= 1, f"--inner-steps {a.inner_steps}: must be >= 1")
    _need(a.eval_inner_steps is None or a.eval_inner_steps >= 1,
          f"algo.eval_inner_steps = {a.eval_inner_steps}: must be >= 1")
    _need(a.inner_lr is not None and a.inner_lr > 0, f"--inner-lr {a.inner_lr}: must be > 0")
    _choice("algo.adapt", a.adapt, ("auto", "all", "head", "extractor"))
    _need(a.sam_rho >= 0, f"algo.sam_rho = {a.sam_rho}: must be >= 0")
    for key in ("msl_fraction", "first_order_fraction"):
        value = getattr(a, key)
        _need(0.0 <= value <= 1.0, f"algo.{key} = {value}: must be in [0, 1]")

    _need(t.steps is not None and t.steps >= 1, f"--steps {t.steps}: must be >= 1")
    _need(t.meta_batch is not None and t.meta_batch >= 1, f"--meta-batch {t.meta_batch}: must be >= 1")
    _need(t.meta_lr > 0, f"--meta-lr {t.meta_lr}: must be > 0")
    _need(t.seed >= 0, f"--seed {t.seed}: must be >= 0")
    for key in ("val_every", "val_tasks", "test_tasks", "log_every", "checkpoint_every"):
        value = getattr(t, key)
        _need(value is not None and value >= 1, f"train.{key} = {value}: must be >= 1")
    _need(t.diag_every >= 0, f"train.diag_every = {t.diag_every}: must be >= 0 (0 turns diagnostics off)")
    _choice("train.batched", t.batched, ("auto", "on", "off"))
    _choice("train.nan_policy", t.nan_policy, ("stop", "skip"))
    _need(re.fullmatch(r"cpu|cuda(:\d+)?|mps", t.device) is not None,
          f"--device {t.device!r}: use cpu, cuda or cuda:N")
    if t.device.startswith("cuda"):
        _need(torch.cuda.is_available(), f"--device {t.device}: no CUDA device is available; use --device cpu "
                                         f"or install a CUDA build of torch (see README)")
