"""Use a trained run: label a few nodes of new classes and predict the rest (:func:`adapt`), or read the trained
extractor's node features (:func:`embed`).

Why it reuses evaluation: the prediction is the run's own test-time rule, nothing re-implemented. The user's
support nodes and every other node become one node episode (support / query); the run's domain code builds its
input exactly as for a test task (full graph, k-hop subgraph or computation trees, by the run's settings) and the
run's algorithm's ``predict`` adapts and predicts, the same call :func:`cmlgraph.train.evaluate.evaluate` makes
per test task: MAML / Sharp-MAML adapt ψ and θ, ANIL θ, BOIL ψ, MAML++ with its learned per-step rates, ProtoNet
compares with class prototypes. So a test episode's support given to :func:`adapt` reproduces the run's own score
on that episode.

Number of classes: the saved head θ has one row per trained way (``W``). A task with ``W`` classes uses it as
is (class ``classes[i]`` → row ``i``). A task with another number ``C >= 2`` of classes starts from a head of
``C`` identical rows, each the mean of the trained rows (the trained rows are exchangeable: every training task
assigns its classes to rows at random); the inner loop then tells them apart. That needs an inner loop that
adapts the head, so an algorithm whose head stays frozen at test time (BOIL, ``adapt: extractor``) predicts
exactly ``W`` classes. ProtoNet takes any number of classes.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmlgraph.errors import CmlgraphError, ConfigError, DataError
from cmlgraph.text import agree, counted


@dataclass
class Prediction:
    """Predictions for every node of a graph that was not in the support set.

    Attributes:
        nodes: The predicted nodes' ids (the user's ids for a custom graph, else 0-based indices), in graph order.
        classes: The task's labels; column ``j`` of ``probabilities`` is ``classes[j]``.
        probabilities: ``float32[len(nodes), len(classes)]``, each row sums to 1 (softmax of the predictor's
            outputs; for ProtoNet, of the negative squared distances to the prototypes).
        labels: The predicted label of each node (``classes[argmax]``), of the support labels' type; ``None``
            for a node the method cannot answer (label-prop: no path to a labelled node), whose probabilities are
            uniform.
        unanswered: How many nodes have no answer (label ``None``).
    """

    nodes: list[Hashable]
    classes: list[Hashable]
    probabilities: np.ndarray
    labels: list[Hashable]
    unanswered: int = 0

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``: ``node``, ``prediction`` and one probability column per class.

        Raises:
            ImportError: pandas is not installed (``pip install pandas``).
        """
        import pandas as pd

        frame = pd.DataFrame({"node": self.nodes, "prediction": self.labels})
        for j, c in enumerate(self.classes):
            frame[f"p_{c}"] = self.probabilities[:, j]
        return frame

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write ``node,prediction,p_<class>...`` rows to ``path`` atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["node", "prediction", *(f"p_{c}" for c in self.classes)])
                for node, label, row in zip(self.nodes, self.labels, self.probabilities, strict=True):
                    w.writerow([node, label, *(f"{p:.6g}" for p in row)])
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


# --- the run's model --------------------------------------------------------------------------------------------
@dataclass
class _Run:
    cfg: Any
    algo: Any
    state: dict[str, Any]


def _load_run(run_dir: str | os.PathLike[str], device: str | None = None) -> _Run:
    """A finished graph run's config, algorithm and inference weights (``model.pt``, read weights-only)."""
    from cmlgraph.algorithms.registry import get_algorithm
    from cmlgraph.graphs.features import run_features
    from cmlgraph.train.io import load_torch

    if isinstance(run_dir, tuple) and len(run_dir) == 2 and isinstance(run_dir[1], dict):
        run_dir = run_dir[0]  # what cmlgraph.fit returns, (run_dir, summary), passed whole
    if not isinstance(run_dir, (str, os.PathLike)):
        raise ConfigError(f"run_dir must be a run folder path, not {type(run_dir).__name__}; pass the folder "
                          f"`run_dir, summary = cmlgraph.fit(...)` returns")
    run_dir = Path(run_dir)
    for f in ("config.yaml", "model.pt"):
        if not (run_dir / f).is_file():
            raise CmlgraphError(f"{run_dir / f} is missing; pass a finished run folder made by `cmlgraph train` "
                                f"(`cmlgraph runs` lists them)")
    from cmlgraph.train.reeval import run_data_root, saved_run_config

    cfg = saved_run_config(run_dir, device)  # asked for, else the run's device where it is here, else the CPU

    cfg.data.data_root = run_data_root(run_dir, cfg)  # the run's recorded root when nothing else names one
    run_features(cfg, run_dir)  # the preprocessing the run used (auto: its choice; None: the graph's default)
    if cfg.data.task != "graph":
        raise ConfigError(f"{run_dir} is a {cfg.data.task} run; predict and embed need a node-classification run "
                          f"(task: graph)")
    algo = get_algorithm(cfg.algo, total_steps=int(cfg.train.steps), seed=cfg.train.seed)
    return _Run(cfg, algo, load_torch(run_dir / "model.pt"))


def _resolve_graph(run: _Run, graph: Any, data_root: str | None) -> Any:
    """The graph to work on: a FewShotGraph, a registered name, a ``.npz`` file, or ``None`` (the run's own)."""
    from cmlgraph.graphs import FewShotGraph, load_graph

    if isinstance(graph, FewShotGraph):
        return graph
    d = run.cfg.data
    name = d.graph if graph is None else os.fspath(graph)
    from cmlgraph.domains.graph import CUSTOM_GRAPHS

    if name in CUSTOM_GRAPHS:
        return CUSTOM_GRAPHS[name]
    if name == d.graph:  # the run's graph: load it exactly as the run did
        from cmlgraph.graphs.registry import REGISTRY

        if name not in REGISTRY and not name.endswith(".npz"):
            raise ConfigError(f"this run was trained on the in-memory graph {name!r} (cmlgraph.fit on a "
                              f"FewShotGraph), which is not stored with the run: save that graph with "
                              f"graph.save('{name}.npz') and pass it (--graph {name}.npz, or in Python "
                              f"`cmlgraph.adapt(RUN_DIR, graph, support)` with the FewShotGraph)")
        options: dict[str, Any] = {}
        if name == "synthetic":
            options = {"num_nodes": d.synthetic_nodes, "num_classes": d.synthetic_classes}
        return load_graph(name, data_root or d.data_root, allow_partial=d.allow_partial, split=d.split,
                          seed=run.cfg.train.seed, **options)
    return load_graph(name, data_root)


def resolve_graph(run_dir: str | os.PathLike[str], graph: Any = None, data_root: str | None = None) -> Any:
    """The :class:`FewShotGraph` that :func:`adapt` / :func:`embed` would use for ``graph`` with this run (the
    run's own graph, loaded with the run's settings, when ``graph`` is ``None`` or its name)."""
    return _resolve_graph(_load_run(run_dir), graph, data_root)


def _domain(run: _Run, graph: Any, ways: int) -> Any:
    from cmlgraph.domains.graph import GraphDomain
    from cmlgraph.graphs.features import with_features

    d, m = run.cfg.data, run.cfg.model
    if m.layers is None:  # chosen on validation; a finished run's summary.json records it (run_features)
        raise CmlgraphError("the run's summary.json does not record the propagation depth it chose (\"layers\"); "
                            "evaluate or retrain it with this cmlgraph")
    graph, _ = with_features(graph, d.features)  # the features the model was trained on (data.features)
    if run.cfg.algo.algo in ("gmeta", "ammgnn"):  # TLP's encoders run on their own domain, as in training
        from cmlgraph.domains.tlp_graph import TLPGraphDomain

        return TLPGraphDomain(graph, ways, int(d.shots), int(d.queries), kind=run.cfg.algo.algo,
                              hidden=int(m.hidden), layers=m.layers, dropout=m.dropout, episodes=False)
    return GraphDomain(graph, ways, int(d.shots), int(d.queries), gnn=m.gnn, hidden=int(m.hidden), layers=m.layers,
                       dropout=m.dropout, heads=m.gat_heads, subgraph=d.subgraph, threshold=d.subgraph_threshold,
                       episodes=False, bias=m.init != "pca")


def _model(run: _Run, domain: Any, ways: int) -> Any:
    """The run's inference model on ``domain``'s graph, with a head for ``ways`` classes (see module doc)."""
    import torch

    from cmlgraph.core.model import MetaModel, group_of

    trained_ways = int(run.cfg.data.ways)
    model = MetaModel(domain.build_extractor(), trained_ways, co_depth=None, normalize=bool(run.cfg.model.normalize))
    run.algo.prepare(model)
    own = model.state_dict()
    bad = [k for k, v in run.state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        k = bad[0]
        trained, here = tuple(run.state[k].shape), tuple(own[k].shape)
        hint = ""
        if group_of(k) == "extractor" and len(trained) == 2 and trained[0] == here[0]:
            hint = (f": the run's model reads {trained[1]}-dimensional node features, this graph "
                    f"({domain.graph.name!r}) has {domain.graph.num_features}")
        raise DataError(f"this graph does not fit the trained model ({k} has shape {trained} in model.pt, {here} "
                        f"here){hint}; predict on a graph with the same node features as the run's training graph "
                        f"({run.cfg.data.graph!r})")
    try:
        model.load_state_dict(run.state)
    except RuntimeError as exc:
        raise CmlgraphError(f"model.pt does not match the run's config.yaml ({str(exc).splitlines()[0][:200]}); "
                            f"the run folder was edited") from None
    if ways != trained_ways:
        proto = run.cfg.algo.head_init == "proto"  # the head starts from this task's class means: any number
        if run.algo.uses_inner_loop and "head" not in run.algo.adapt_groups() and not proto:
            raise ConfigError(f"this run's {run.cfg.algo.algo} keeps the head frozen at test time, so it predicts "
                              f"exactly the {trained_ways} classes it was trained with; give {trained_ways} classes "
                              f"(got {ways})")
        head = domain.build_extractor().make_head(ways)
        trained = dict(model.head.named_parameters())
        with torch.no_grad():
            for name, p in head.named_parameters():  # every row (and bias entry): the mean of the trained ones
                p.copy_(trained[name].mean(0, keepdim=True).expand_as(p))
        model.head = head
        model.out_dim = ways
    model.eval()
    return model


# --- the user's task --------------------------------------------------------------------------------------------
def node_ids(graph: Any) -> list[Hashable]:
    """The ids users name nodes by: ``info["node_ids"]`` (custom graphs from networkx or a saved file), else the
    0-based node indices."""
    ids = graph.info.get("node_ids")
    return list(ids) if ids is not None else list(range(graph.num_nodes))


def _is_missing(label: Any) -> bool:
    return label is None or (isinstance(label, float) and math.isnan(label)) or label == ""


def _task(graph: Any, support: Mapping[Hashable, Hashable], classes: Sequence[Hashable] | None
          ) -> tuple[list[int], list[int], list[Hashable]]:
    """Support node indices, their class positions and the class order; raises on every bad input."""
    if not isinstance(support, Mapping) or not support:
        raise ConfigError("support must be a non-empty mapping node id → label (e.g. {12: 'cat', 40: 'dog'})")
    ids = node_ids(graph)
    index = {v: i for i, v in enumerate(ids)}
    unknown = [v for v in support if v not in index]
    if unknown:
        hint = ""
        by_text = {str(v): v for v in ids}
        if all(str(v) in by_text for v in unknown):  # '12' for 12 (or 12 for '12'): same text, another type
            given, wanted = type(unknown[0]).__name__, type(by_text[str(unknown[0])]).__name__
            hint = (f"; they match node ids as text but are {given}s where the graph's ids are {wanted}s: "
                    f"give them as {wanted}s")
        raise DataError(f"{counted(len(unknown), 'support node id')} {agree(len(unknown), 'is', 'are')} not "
                        f"{agree(len(unknown), 'a node', 'nodes')} of graph {graph.name!r} (e.g. {unknown[:5]}); "
                        f"node ids are {_id_doc(graph)}{hint}")
    missing = [v for v, lab in support.items() if _is_missing(lab)]
    if missing:
        raise DataError(f"support nodes {missing[:5]} have no label; give every support node a label")
    given = list(dict.fromkeys(support.values()))
    if classes is None:
        try:
            order = sorted(given)
        except TypeError:
            order = given  # labels of mixed types: the order of first appearance
    else:
        order = list(classes)
        if len(set(order)) != len(order):
            raise ConfigError(f"classes {order} repeat a label; list each class once")
        extra = [c for c in given if c not in set(order)]
        if extra:
            raise DataError(f"support labels {extra[:5]} are not among classes {order}; add them to classes")
        empty = [c for c in order if c not in set(given)]
        if empty:
            raise DataError(f"class {empty[0]!r} has no support node "
                            f"({counted(len(empty), 'such class', 'such classes')}: {empty[:5]}); "
                            f"label at least one node of every class, or drop it from classes")
    if len(order) < 2:
        raise DataError(f"the support set has {counted(len(order), 'class', 'classes')} ({order}); a prediction "
                        f"needs at least 2 classes with labelled nodes")
    pos = {c: j for j, c in enumerate(order)}
    nodes = [index[v] for v in support]
    return nodes, [pos[lab] for lab in support.values()], order


def _id_doc(graph: Any) -> str:
    if graph.info.get("node_ids") is not None:
        ids = graph.info["node_ids"]
        return f"the graph's own ids (e.g. {list(ids)[:3]})"
    return f"0-based indices 0..{graph.num_nodes - 1}"


def run_health(run_dir: str | os.PathLike[str]) -> str | None:
    """The warning a finished run folder carries for whoever predicts with it, else None (issue 17 item 4).

    A run whose best validation accuracy (``summary.json["best_val"]``) is below the training-free baseline's on the
    same validation tasks (``summary.json["baseline_val"]``, :mod:`cmlgraph.train.baseline_check`) labels nodes
    worse than a method with no training; the message names both numbers and the method to use instead. Folders
    written before the check (no ``baseline_val``), healthy runs and runs where the check was skipped give None.
    """
    if isinstance(run_dir, tuple) and len(run_dir) == 2 and isinstance(run_dir[1], dict):
        run_dir = run_dir[0]
    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    record, best = summary.get("baseline_val"), summary.get("best_val")
    if not isinstance(record, dict) or not isinstance(record.get("val"), (int, float)) or \
            not isinstance(best, (int, float)) or float(best) >= float(record["val"]):
        return None
    from cmlgraph.graphs.registry import dataset_names

    method, graph = record.get("method", "sgc-proto"), summary.get("dataset") or "G"
    # a user's own graph (cmlgraph.fit) is no registered name: the command reads the file it was saved to
    registered = graph in dataset_names()
    flag = graph if registered else "GRAPH.npz"
    saved = "" if registered else " (the graph saved with graph.save)"
    return (f"run {Path(run_dir).name}: its best validation accuracy {float(best):.4f} is below the training-free "
            f"{method}'s {float(record['val']):.4f} on the same validation tasks, so its predictions are likely "
            f"worse than {method}'s; `cmlgraph predict --method {method} --graph {flag} --support CSV --out CSV`"
            f"{saved}, or in Python `cmlgraph.predict_with_method({method!r}, graph, support)`, needs no run folder")


def adapt(run_dir: str | os.PathLike[str], graph: Any = None, support: Mapping[Hashable, Hashable] | None = None,
          *, classes: Sequence[Hashable] | None = None, data_root: str | None = None,
          device: str | None = None, console: Any = None) -> Prediction:
    """Adapt a trained run to a new few-shot task and predict every other node of the graph.

    The task is the support set plus every other node as its queries, run through the algorithm's own test-time
    call. For G-Meta each node is read from its 2-hop ball as in training; AMM-GNN's feature modulation is drawn
    from the task's nodes (support and queries, as in its episodes), here the whole graph.

    Args:
        run_dir: A finished graph run folder (``cmlgraph train``).
        graph: A :class:`FewShotGraph`, a registered dataset name, a ``.npz`` file from ``graph.save(PATH)``, or
            ``None`` for the run's own graph. Its node features must have the run's dimension.
        support: Node id → label for the labelled nodes, any number per class. Ids are the graph's own node ids
            (``info["node_ids"]``: custom graphs from networkx or a saved file) or 0-based indices; labels any
            hashable (strings come back as strings).
        classes: The class order (optional; default: the sorted labels). Class ``classes[i]`` uses head row ``i``
            when the run's number of ways equals ``len(classes)``.
        data_root: Raw data root for a registered graph.
        device: ``cpu``/``cuda``; default the run's device when available, else CPU.
        console: A rich console to print the run's health warning on (:func:`run_health`: a run below the
            training-free baseline); without one it is a Python ``RuntimeWarning``.

    Returns:
        A :class:`Prediction` for every node not in ``support``.

    Raises:
        DataError: Unknown node ids, unlabelled support nodes, a class without a support node, fewer than 2
            classes, or node features of another dimension than the trained model's.
        ConfigError: A non-graph run, or a frozen-head algorithm asked for another number of classes.
    """
    run = _load_run(run_dir, device)
    g = _resolve_graph(run, graph, data_root)
    nodes, labels, order = _task(g, support or {}, classes)
    health = run_health(run_dir)
    if health is not None:
        if console is not None:
            console.print(f"[yellow]warning:[/yellow] {health}")
        else:
            from cmlgraph.user_warnings import warn_user

            warn_user(health, RuntimeWarning)
    dev = run.cfg.train.device  # asked for, else the run's where this machine has it (saved_run_config)
    domain = _domain(run, g, len(order))
    model = _model(run, domain, len(order)).to(dev)
    return _predict_task(run.algo, model, domain, g, nodes, labels, order, dev)


def _predict_task(algo: Any, model: Any, domain: Any, g: Any, nodes: list[int], labels: list[int],
                  order: list[Hashable], dev: str) -> Prediction:
    """Every non-support node of ``g`` as the queries of one task, through the algorithm's evaluation call."""
    import torch

    from cmlgraph.core.model import parameters_of
    from cmlgraph.graphs.types import NodeEpisode

    chosen = torch.zeros(g.num_nodes, dtype=torch.bool)
    chosen[torch.tensor(nodes)] = True
    query = torch.nonzero(~chosen).view(-1)
    if query.numel() == 0:
        raise DataError("every node of the graph is in the support set; leave some nodes to predict")
    raw = NodeEpisode(support=torch.tensor(nodes), support_y=torch.tensor(labels), query=query,
                      query_y=torch.zeros_like(query), classes=torch.arange(len(order)))
    ep = domain.materialize(raw, dev)
    out, _ = algo.predict(model, parameters_of(model), ep, domain.loss_fn)  # the evaluation's own call
    out = out.detach().double().cpu()
    answered = torch.isfinite(out).all(dim=-1)  # label-prop leaves unreached nodes unanswered (NaN rows)
    probs = torch.softmax(out.nan_to_num(0.0), dim=-1)
    probs[~answered] = 1.0 / len(order)
    probs = probs.float().numpy()
    ids = node_ids(g)
    best = probs.argmax(axis=1)
    return Prediction(nodes=[ids[i] for i in query.tolist()], classes=list(order), probabilities=probs,
                      labels=[order[j] if ok else None for j, ok in zip(best.tolist(), answered.tolist(),
                                                                         strict=True)],
                      unanswered=int((~answered).sum()))


def predict_with_method(method: str, graph: Any, support: Mapping[Hashable, Hashable] | None = None, *,
                        classes: Sequence[Hashable] | None = None, data_root: str | None = None,
                        device: str | None = None, seed: int = 0, features: str | None = None,
                        **options: Any) -> Prediction:
    """Predict every other node of a graph with a training-free method; no run folder (issue 17 item 5).

    The support set and every other node form one task, answered by the method's own test-time call (the one a
    ``--algo METHOD`` run is scored with). Settings not given take :data:`cmlgraph.algorithms.baselines.DEFAULTS`
    (chosen by measurement on validation tasks, docs/baselines.md); ``gcl-probe`` first pretrains GRACE on the
    graph (features and edges, no labels) for ``pretrain_epochs`` epochs.

    Args:
        method: ``sgc-proto``, ``label-prop``, ``sgc-logreg`` or ``gcl-probe``.
        graph: A :class:`FewShotGraph`, a registered dataset name or a ``.npz`` file from ``graph.save(PATH)``;
            its features are preprocessed as a run on it would (the dataset's default ``data.features``).
        support: Node id → label, as for :func:`adapt`.
        classes: The class order (default: the sorted labels).
        data_root: Raw data root for a registered graph.
        device: ``cpu``/``cuda`` (default CPU).
        seed: Seed of ``gcl-probe``'s pretraining.
        features: Feature preprocessing, ``raw``, ``row`` or ``standard`` (default: the graph's own, e.g. ``row``
            on Cora). Not ``auto``: there are no validation tasks to choose on here; a ``--algo sgc-proto`` run
            says what it chose (``summary.json["features"]``, and the console note).
        **options: ``prop_steps``, ``prop_alpha``, ``probe_c``, ``pretrain_epochs`` (as ``algo.*`` of a run).

    Raises:
        ConfigError: An unknown method, an option it does not take or a bad option value.
        DataError: As for :func:`adapt`.
    """
    import torch
    from torch import nn

    from cmlgraph.algorithms.baselines import BASELINE_ALGORITHMS
    from cmlgraph.config import AlgoConfig
    from cmlgraph.domains.graph import GraphDomain
    from cmlgraph.graphs.features import FEATURE_MODES, with_features

    if method not in BASELINE_ALGORITHMS:
        raise ConfigError(f"--method {method!r} is not a training-free method; choose one of "
                          f"{', '.join(BASELINE_ALGORITHMS)} (or pass a run folder to predict with a trained model)")
    cls = BASELINE_ALGORITHMS[method]
    given = {k: v for k, v in options.items() if v is not None}
    takes = set(cls.config_keys.values())
    extra = sorted(set(given) - takes)
    if extra:
        raise ConfigError(f"{method} takes no {', '.join('--' + k.replace('_', '-') for k in extra)}; its options: "
                          f"{', '.join('--' + k.replace('_', '-') for k in sorted(takes)) or 'none'}")
    cfg = AlgoConfig(algo=method, cml=False, **given)
    _check_options(cfg)
    if graph is None:
        raise ConfigError(f"--method {method} needs --graph (a registered name or a .npz file from graph.save)")
    g = resolve_method_graph(graph, data_root)
    nodes, labels, order = _task(g, support or {}, classes)
    if features is not None and features not in FEATURE_MODES:
        hint = (" (auto chooses on a run's validation tasks, and predicting without a run has none: give the "
                "features a `cmlgraph train --algo sgc-proto` run chose, its summary.json \"features\")"
                if features == "auto" else "")
        raise ConfigError(f"--features {features!r}: choose one of {', '.join(FEATURE_MODES)}{hint}")
    g, _ = with_features(g, features)
    dev = device or "cpu"
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {dev!r} was asked for but CUDA is not available; use --device cpu")
    algo = cls(cfg, seed=seed)
    domain = GraphDomain(g, len(order), 1, 1, episodes=False)
    holder = nn.Module()
    algo.prepare(holder)  # type: ignore[arg-type]
    holder.to(dev)
    if method == "gcl-probe":
        algo.pretrain(holder, domain.node_input(torch.arange(g.num_nodes), dev), g.name, seed)  # type: ignore
    pred = _predict_task(algo, holder, domain, g, nodes, labels, order, dev)
    if pred.unanswered:  # a label of None, probabilities uniform: said, so no one scores them as answers
        from cmlgraph.user_warnings import warn_user

        warn_user(f"{pred.unanswered} of {len(pred.nodes)} nodes have no path to a labelled node within "
                  f"{method}'s reach: no prediction (label None, an empty cell in a CSV), uniform probabilities; "
                  f"leave them out of any accuracy, or use sgc-proto, which answers every node",
                  RuntimeWarning)
    return pred


def _check_options(cfg: Any) -> None:
    least_steps = 1 if cfg.algo == "label-prop" else 0
    for key, ok, rule in (("prop_steps", lambda v: v >= least_steps, f">= {least_steps}"),
                          ("prop_alpha", lambda v: 0 <= v < 1, "in [0, 1)"), ("probe_c", lambda v: v > 0, "> 0"),
                          ("pretrain_epochs", lambda v: v >= 1, ">= 1")):
        value = getattr(cfg, key)
        if value is not None and not ok(value):
            raise ConfigError(f"--{key.replace('_', '-')} {value}: must be {rule}")


def resolve_method_graph(graph: Any, data_root: str | None) -> Any:
    """A FewShotGraph, an in-memory graph's name, a registered name or a ``.npz`` file."""
    from cmlgraph.domains.graph import CUSTOM_GRAPHS
    from cmlgraph.graphs import FewShotGraph, load_graph

    if isinstance(graph, FewShotGraph):
        return graph
    name = os.fspath(graph)
    if name in CUSTOM_GRAPHS:
        return CUSTOM_GRAPHS[name]
    return load_graph(name, data_root)


def embed(run_dir: str | os.PathLike[str], graph: Any = None, *, data_root: str | None = None,
          device: str | None = None) -> np.ndarray:
    """The trained (unadapted) extractor ψ's features of every node: ``float32[num_nodes, d]``.

    Args:
        run_dir: A finished graph run folder.
        graph: As for :func:`adapt` (default: the run's own graph).
        data_root: Raw data root for a registered graph.
        device: As for :func:`adapt`.

    Raises:
        DataError: Node features of another dimension than the trained model's.
    """
    import torch

    from cmlgraph.core.functional import features
    from cmlgraph.core.model import parameters_of
    run = _load_run(run_dir, device)
    g = _resolve_graph(run, graph, data_root)
    dev = run.cfg.train.device  # asked for, else the run's where this machine has it (saved_run_config)
    domain = _domain(run, g, int(run.cfg.data.ways))
    model = _model(run, domain, int(run.cfg.data.ways)).to(dev)
    nodes = torch.arange(domain.graph.num_nodes)
    chunks = nodes.split(domain.embed_chunk) if domain.embed_chunk else [nodes]
    params = parameters_of(model)
    with torch.no_grad():
        out = torch.cat([features(model, params, domain.node_input(c, dev)) for c in chunks])
    return out.detach().float().cpu().numpy()


# --- CSV files --------------------------------------------------------------------------------------------------
def read_support_csv(path: str | os.PathLike[str], graph: Any) -> dict[Hashable, str]:
    """Read a ``node,label`` CSV into a support mapping, matching node ids to the graph's ids.

    Node ids in the file are text; each is matched to the graph's id with the same text (``"12"`` → node 12).
    Labels stay strings.

    Raises:
        DataError: Missing file or columns, empty file, a node listed twice with different labels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"support file {str(path)!r} does not exist; give a CSV with a header `node,label`")
    by_text = {str(v): v for v in node_ids(graph)}
    support: dict[Hashable, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        if "node" not in fields or "label" not in fields:
            raise DataError(f"{str(path)!r} has columns {fields}; it needs a header row `node,label`")
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            text, label = row["node"], row["label"]
            if not text:
                raise DataError(f"{str(path)!r} line {line}: empty node id; give a node id on every row")
            node = by_text.get(text, text)
            if node in support and support[node] != label:
                raise DataError(f"{str(path)!r} line {line}: node {text} is listed twice with different labels "
                                f"({support[node]!r}, {label!r}); keep one")
            support[node] = label
    if not support:
        raise DataError(f"{str(path)!r} has no rows; list the labelled nodes as `node,label` rows")
    return support


__all__ = ["Prediction", "adapt", "embed", "node_ids", "predict_with_method", "read_support_csv", "resolve_graph",
           "resolve_method_graph", "run_health"]
