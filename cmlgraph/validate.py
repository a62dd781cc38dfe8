"""Checks of every setting before any work starts, each failing with the bad value and the fix."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from cmlgraph.config import SECTION_CLASSES, Config, check_types
from cmlgraph.errors import ConfigError

#: No setting sensibly exceeds this; larger integers would overflow torch's 64-bit arithmetic downstream.
MAX_INT = 2**31 - 1


def device_unavailable(device: str) -> str | None:
    """Why ``device`` (``cpu``, ``cuda``, ``cuda:N`` or ``mps``) cannot be used on this machine, naming the fix;
    ``None`` where it can. Shared by the run's validation, ``cmlgraph bench`` and reading a run back
    (:func:`cmlgraph.train.reeval.here_device`)."""
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            return (f"--device {device}: no CUDA device is available; use --device cpu or install a CUDA build of "
                    f"torch (see README)")
        index, count = device.partition(":")[2], torch.cuda.device_count()
        if index and (not index.isdigit() or int(index) >= count):
            return (f"--device {device}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}; use one of "
                    f"them (or --device cuda)")
        return None
    if device == "mps":
        available = torch.backends.mps.is_available()
        return None if available else "--device mps: MPS is not available here; use --device cpu"
    return None if device == "cpu" else f"--device {device!r}: use cpu, cuda or cuda:N"


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    _need(value in choices, f"{name} = {value!r} is not valid; choose one of: {', '.join(choices)}")


def _ranges(cfg: Config) -> None:
    """Every float finite, every integer within :data:`MAX_INT`."""
    for section in SECTION_CLASSES:
        for key, value in vars(getattr(cfg, section)).items():
            if isinstance(value, float):
                _need(math.isfinite(value), f"{section}.{key} = {value}: must be a finite number")
            elif isinstance(value, int) and not isinstance(value, bool):
                _need(abs(value) <= MAX_INT, f"{section}.{key} = {value}: too large; use a value below {MAX_INT}")


def _split(task: str, split: str | dict | None) -> None:
    if split is None:
        return
    if isinstance(split, dict):  # lists of classes: checked against the graph's classes when it is loaded
        _need(task in ("graph", "omniglot"), f"split {split}: a {task} run has no classes to split")
        _need(set(split) <= {"train", "val", "test"} and {"train", "test"} <= set(split),
              f"split {split}: give 'train' and 'test' (and optionally 'val') lists of classes, nothing else")
        return
    parts = split.split("/")
    if len(parts) == 3 and all(p.strip().isdigit() for p in parts):
        return
    if task == "graph":
        _need(Path(split).is_file(), f"--split {split!r} is neither TRAIN/VAL/TEST class counts like '10/5/5' "
                                     f"nor an existing JSON file of class ids")
    elif task == "omniglot":
        _need(split in ("vinyals", "seeded") or Path(split).is_file(),
              f"--split {split!r}: use vinyals, seeded or TRAIN/VAL/TEST class counts like '1100/100/423'")


def _run(cfg: Config) -> None:
    from cmlgraph.train.run_dir import check_name

    if cfg.run.name:
        check_name(cfg.run.name)
    _need(bool(cfg.run.runs_dir.strip()), "--runs-dir is empty; give a folder (default: runs)")
    runs = Path(cfg.run.runs_dir)
    for p in (runs, *runs.parents):
        if p.exists():
            _need(p.is_dir(), f"--runs-dir {cfg.run.runs_dir!r}: {p} exists and is not a folder")
            break


def validate_config(cfg: Config) -> None:
    """Validate a defaults-filled config; raises :class:`ConfigError` on the first problem.

    Checks types (normalising int to float where a float is expected), ranges, choices, combinations and the
    run folder settings, so nothing is written before every setting is known to be usable.
    """
    from cmlgraph.algorithms.registry import ALGORITHMS

    check_types(cfg)
    _ranges(cfg)
    d, m, a, t = cfg.data, cfg.model, cfg.algo, cfg.train
    regression = d.task == "sinusoid"
    if not regression:
        _need(d.ways >= 2, f"--ways {d.ways}: a classification task needs at least 2 ways")
    _need(d.shots is not None and d.shots >= 1, f"--shots {d.shots}: shots must be a positive integer (e.g. 5)")
    _need(d.queries is not None and d.queries >= 1, f"--queries {d.queries}: queries must be a positive integer")
    _choice("data.subgraph", d.subgraph, ("auto", "full", "khop"))
    if d.protocol is not None:
        from cmlgraph.protocols import PROTOCOLS

        _choice("--protocol", d.protocol, PROTOCOLS)
    _need(d.test_queries is None or d.test_queries >= 1, f"data.test_queries = {d.test_queries}: must be >= 1")
    _need(d.subgraph_threshold >= 0, "data.subgraph_threshold must be >= 0")
    if d.features is not None:
        _choice("data.features", d.features, ("raw", "row", "standard", "auto"))
    _split(d.task, d.split)
    _need(d.synthetic_nodes >= 10, f"data.synthetic_nodes = {d.synthetic_nodes}: need at least 10 nodes")
    _need(d.synthetic_classes >= 2, f"data.synthetic_classes = {d.synthetic_classes}: need at least 2 classes")
    _need(8 <= d.image_size <= 512, f"data.image_size = {d.image_size}: use a size between 8 and 512 pixels")

    if d.task == "graph":
        from cmlgraph.backbones.gnn import GNN_REGISTRY

        _choice("--gnn", m.gnn, list(GNN_REGISTRY))
    _need(m.hidden is not None and m.hidden >= 1, f"model.hidden = {m.hidden}: must be a positive integer")
    _need(m.layers is None or m.layers >= 1, f"model.layers = {m.layers}: need at least one layer")
    _need(0.0 <= m.dropout < 1.0, f"model.dropout = {m.dropout}: must be in [0, 1)")
    _need(m.gat_heads >= 1, f"model.gat_heads = {m.gat_heads}: must be >= 1")
    if m.norm is not None:
        from cmlgraph.backbones.conv_norm import NORMS

        _need(d.task in ("omniglot", "digits"), f"model.norm = {m.norm!r} sets Conv4's normalisation of image tasks; "
                                                 f"--task {d.task} has no Conv4: drop model.norm")
        _choice("model.norm", m.norm, NORMS)

    _choice("--algo", a.algo, list(ALGORITHMS))
    _start_settings(cfg)
    if regression:
        _need(a.algo != "protonet", "--algo protonet classifies by class prototypes; sinusoid is regression: "
                                    "use maml, anil, boil, maml++ or sharp-maml")
    _need(a.gamma >= 0, f"--gamma {a.gamma}: γ weights the co-learner loss and must be >= 0")
    _need(a.co_depth is not None and a.co_depth >= 0, f"--co-depth {a.co_depth}: must be >= 0")
    _choice("--control", a.control, ("none", "cl", "noise", "frozen-co"))
    _need(a.co_hidden is None or a.co_hidden >= 1, f"--co-hidden {a.co_hidden}: must be a positive integer")
    _need(a.co_hidden is None or d.task not in ("omniglot", "digits"),
          "--co-hidden sets the width of an MLP co-learner (graph, sinusoid); Conv4's co-learner is conv blocks: "
          "drop --co-hidden")
    if a.algo in ("gmeta", "ammgnn"):
        _need(d.task == "graph", f"--algo {a.algo} is a node-classification method; use it with --task graph")
    if not ALGORITHMS[a.algo].trains:  # the training-free baselines of issue 17
        _need(d.task == "graph", f"--algo {a.algo} is a training-free node-classification baseline; use it with "
                                 f"--task graph (or --graph NAME)")
        _need(a.control == "none", f"--algo {a.algo} trains nothing, so the paper's controls do not apply: drop "
                                   f"--control {a.control}")
        _need(not (m.gnn == "gat" and d.subgraph != "full"),
              f"--algo {a.algo} reads the whole graph, but --gnn gat runs tasks on k-hop subgraphs: drop --gnn "
              f"(the baselines use no GNN) or pass --subgraph full")
    _need(a.prop_steps is None or a.prop_steps >= (1 if a.algo == "label-prop" else 0),
          f"algo.prop_steps = {a.prop_steps}: must be >= 0 (label-prop: >= 1)")
    _need(a.prop_alpha is None or 0.0 <= a.prop_alpha < 1.0, f"algo.prop_alpha = {a.prop_alpha}: must be in [0, 1)")
    _need(a.probe_c is None or a.probe_c > 0, f"algo.probe_c = {a.probe_c}: must be > 0")
    _need(a.pretrain_epochs is None or a.pretrain_epochs >= 1,
          f"algo.pretrain_epochs = {a.pretrain_epochs}: must be >= 1")
    if a.control == "noise":
        _need(not a.cml, "--control noise replaces the co-learner by gradient noise; add --no-cml")
    _need(a.noise_std >= 0, f"algo.noise_std = {a.noise_std}: must be >= 0")
    _need(a.inner_steps is not None and a.inner_steps >= 1, f"--inner-steps {a.inner_steps}: must be >= 1")
    _need(a.eval_inner_steps is None or a.eval_inner_steps >= 1,
          f"algo.eval_inner_steps = {a.eval_inner_steps}: must be >= 1")
    _need(a.inner_lr is not None and a.inner_lr > 0, f"--inner-lr {a.inner_lr}: must be > 0")
    _choice("--adapt", a.adapt, ("auto", "all", "head", "extractor"))
    for key in ("inner_lr_extractor", "inner_lr_head"):
        value = getattr(a, key)
        _need(value is None or value > 0, f"algo.{key} = {value}: must be > 0")
    _need(a.sam_rho >= 0, f"algo.sam_rho = {a.sam_rho}: must be >= 0")
    for key in ("msl_fraction", "first_order_fraction"):
        value = getattr(a, key)
        _need(0.0 <= value <= 1.0, f"algo.{key} = {value}: must be in [0, 1]")

    _need(t.steps is not None and t.steps >= 1, f"--steps {t.steps}: must be >= 1")
    _need(t.meta_batch is not None and t.meta_batch >= 1, f"--meta-batch {t.meta_batch}: must be >= 1")
    _need(t.meta_lr > 0, f"--meta-lr {t.meta_lr}: must be > 0")
    _need(0 <= t.seed <= MAX_INT, f"--seed {t.seed}: must be in [0, {MAX_INT}]")
    for key in ("val_every", "val_tasks", "test_tasks", "log_every", "checkpoint_every"):
        value = getattr(t, key)
        _need(value is not None and value >= 1, f"train.{key} = {value}: must be >= 1")
    _need(t.diag_every >= 0, f"train.diag_every = {t.diag_every}: must be >= 0 (0 turns diagnostics off)")
    _choice("train.batched", t.batched, ("auto", "on", "off"))
    _choice("train.prefetch", t.prefetch, ("auto", "on", "off"))
    _need(t.prefetch_workers >= 0, f"--prefetch-workers {t.prefetch_workers}: must be >= 0 (0: auto)")
    _choice("train.cuda_graphs", t.cuda_graphs, ("auto", "on", "off"))
    _choice("train.nan_policy", t.nan_policy, ("stop", "skip"))
    _need(t.patience is None or t.patience >= 1, f"--patience {t.patience}: must be >= 1 (or unset: no early stop)")
    _need(t.weight_decay >= 0, f"train.weight_decay = {t.weight_decay}: must be >= 0")
    why = device_unavailable(t.device)
    _need(why is None, str(why))
    if t.cuda_graphs == "on":
        from cmlgraph.train.cuda_graphs import config_ineligible

        why = config_ineligible(cfg)
        _need(why is None, f"--cuda-graphs on: {why}; use --cuda-graphs auto or off")
    _run(cfg)


def _start_settings(cfg: Config) -> None:
    """``model.init``, ``model.normalize`` and ``algo.head_init`` (issue 17): where each means something."""
    from cmlgraph.domains.registry import MAML_FAMILY

    d, m, a = cfg.data, cfg.model, cfg.algo
    _choice("--init", m.init, ("auto", "pca", "random"))
    _choice("--head-init", a.head_init, ("proto", "learned"))
    _choice("algo.proto_inner (--proto-inner)", a.proto_inner, ("total", "partial"))
    could_proto = d.task == "graph" and a.algo in MAML_FAMILY
    _need(a.proto_inner == "total" or a.head_init == "proto",
          f"--proto-inner {a.proto_inner} chooses the inner gradient of a Proto-MAML head (--head-init proto); this "
          f"run's head is --head-init {a.head_init}: "
          + ("add --head-init proto or drop --proto-inner" if could_proto else
             f"--algo {a.algo} (--task {d.task}) has no Proto-MAML head, drop --proto-inner"))
    if m.init == "pca":
        _need(d.task == "graph" and m.gnn == "sgc" and a.algo not in ("gmeta", "ammgnn"),
              f"--init pca projects SGC's propagated features on their principal axes; --gnn {m.gnn} "
              f"(--algo {a.algo}, --task {d.task}) has no such linear extractor: use --gnn sgc or --init random")
    family = " or ".join(MAML_FAMILY)
    if a.head_init == "proto":
        _need(d.task == "graph", f"--head-init proto starts a linear head from the support class means of node "
                                 f"features; --task {d.task} has no such head (sinusoid: regression; images: a "
                                 f"pooling head): use --head-init learned")
        _need(a.algo in MAML_FAMILY, f"--head-init proto starts the inner loop of a MAML-family method ({family}); "
                                     f"--algo {a.algo} has no such head: use --head-init learned")
    if m.normalize:
        _need(a.algo in MAML_FAMILY or a.algo == "protonet",
              f"--normalize L2-normalises the features of a MetaModel extractor; --algo {a.algo} does not read them "
              f"that way: use --no-normalize")
