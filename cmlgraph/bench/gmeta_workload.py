"""The G-Meta benchmark case: cmlgraph's batched ball encoder against a per-node-subgraph loop (published style).

Setting (the CML paper's Table 3 on Amazon-Computer, TLP protocol): 2-way 5-shot, 5 training queries per class,
meta-batch 1, GCN 16 + linear head, CML with a 1×16 co-learner and γ = 0.2, 20 first-order inner steps of 0.05.
All implementations meta-train on the same small pool of tasks (cycled), each step materialising its task afresh:
``per-node`` (reference (a), the published code's style, :class:`DensePerNodeBallGCN`) extracts the task's
subgraphs from the dense adjacency every episode, as that code does; ``per-node-sparse`` (reference (b)) reads
sparse subgraphs cached per node; cmlgraph reads balls cached per node and lays out each task's block-diagonal
matrix inside every timed step. cmlgraph multiplies binary features (Amazon-Computer's bag of words) through
subset-sum tables (:mod:`cmlgraph.backbones.binary_features`); ``batched-float`` is cmlgraph with the tables off,
to show what they contribute; ``batched-graphed`` (``--device cuda`` only) replays the meta-step as a CUDA graph on
padded ball layouts (:mod:`cmlgraph.train.cuda_graphs`), as ``train.cuda_graphs`` does in training;
``batched-prefetch`` is the trainer's pipeline (``train.prefetch``: a worker thread lays out the next tasks' balls
while the step runs; on CUDA the step replayed as a CUDA graph); on the CPU it trains what ``batched`` trains, its
worker thread beside the step. The pool's tasks differ in size, so the bench times whole cycles of the pool
(:func:`cmlgraph.bench.worker.time_workload`).
Before timing, each reference workload checks on one task that it gives the same outer loss and meta-gradients as
cmlgraph (dropout off, 2 inner steps) and records the largest difference.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

from cmlgraph.backbones.gmeta import CODES_KEY, feature_codes
from cmlgraph.bench.workloads import Workload, apply_meta_step, meta_step, saved_parameters
from cmlgraph.config import Config
from cmlgraph.core.model import MetaModel, parameters_of
from cmlgraph.graphs import FewShotGraph
from cmlgraph.train.trainer import build_experiment, prepare

GMETA_SETTING = {"ways": 2, "shots": 5, "queries": 5, "hidden": 16, "inner_steps": 20, "inner_lr": 0.05,
                 "gamma": 0.2, "meta_batch": 1, "pool": 4}


def _config(device: str) -> Config:
    s = GMETA_SETTING
    cfg = Config()
    cfg.data.task = "graph"
    cfg.data.ways, cfg.data.shots, cfg.data.queries = s["ways"], s["shots"], s["queries"]
    cfg.model.hidden, cfg.model.dropout = s["hidden"], 0.5
    cfg.algo.algo, cfg.algo.cml, cfg.algo.gamma = "gmeta", True, s["gamma"]
    cfg.algo.co_depth, cfg.algo.co_hidden = 1, s["hidden"]
    cfg.algo.inner_steps, cfg.algo.inner_lr, cfg.algo.first_order = s["inner_steps"], s["inner_lr"], True
    cfg.train.meta_batch, cfg.train.steps, cfg.train.device = s["meta_batch"], 1, device
    return cfg


def _domain(graph: FewShotGraph, impl: str) -> Any:
    from cmlgraph.bench.gmeta_reference import DensePerNodeBallGCN, PerNodeBallGCN
    from cmlgraph.domains.tlp_graph import TLPGraphDomain
    from cmlgraph.protocols import TLP_COUNTS, tlp_split_for

    s = GMETA_SETTING
    if graph.name in TLP_COUNTS:  # the classes Table 3 trains on
        graph.splits = tlp_split_for(graph.name)
    dom = TLPGraphDomain(graph, s["ways"], s["shots"], s["queries"], kind="gmeta", hidden=s["hidden"], dropout=0.5)
    ref = {"per-node": DensePerNodeBallGCN, "per-node-sparse": PerNodeBallGCN}.get(impl)
    if ref is not None:
        dom.build_extractor = lambda: ref(graph.num_features, hidden=s["hidden"], dropout=0.5)
    return dom


def check_equal(graph: FewShotGraph, impl: str, device: str) -> dict[str, float]:
    """Largest |difference| of outer loss and meta-gradients, batched vs the reference ``impl``, on one task
    (no dropout)."""
    fast_dom, ref_dom = _domain(graph, "batched"), _domain(graph, impl)
    raw = fast_dom.sample("train", 1, torch.Generator().manual_seed(0))
    cfg = prepare(_config(device))
    cfg.algo.inner_steps = 2
    fast_exp, ref_exp = build_experiment(cfg, fast_dom), build_experiment(cfg, ref_dom)
    ref_exp.model.load_state_dict(fast_exp.model.state_dict())
    out = {}
    steps = []
    for exp, dom, batched in ((fast_exp, fast_dom, None), (ref_exp, ref_dom, False)):
        model: MetaModel = exp.model.eval()
        steps.append(exp.algo.meta_gradients(model, parameters_of(model), [dom.materialize(raw[0], device)],
                                             F.cross_entropy, 0, batched=batched))
    a, b = steps
    out["loss_abs_diff"] = float((a.loss.total - b.loss.total).detach().abs())
    out["grad_max_abs_diff"] = max(float((a.grads[k] - b.grads[k]).abs().max()) for k in a.grads)
    out["grad_max_abs"] = max(float(b.grads[k].abs().max()) for k in b.grads)
    return out


def gmeta_workload(graph: FewShotGraph, impl: str, device: str) -> Workload:
    """One meta-iteration of G-Meta + CML: ``impl`` = ``batched`` (cmlgraph), ``batched-float`` (cmlgraph with
    binary features multiplied as floats, no subset-sum tables), ``batched-graphed`` (cmlgraph's meta-step as a
    CUDA graph: CUDA only), ``batched-prefetch`` (the next tasks' ball layouts built by a worker thread while the
    step runs, as the trainer's prefetch; on CUDA the step replayed as a CUDA graph), ``per-node`` (published
    style) or ``per-node-sparse``."""
    per_node = impl.startswith("per-node")
    info: dict[str, Any] = check_equal(graph, impl, device) if per_node else {}
    dom = _domain(graph, impl)
    index = dom.ball_index(device)
    if impl == "batched-float":
        index.memo[CODES_KEY] = None  # BallGCN then slices X_U as floats
    info["binary_tables"] = impl == "batched" and feature_codes(index) is not None
    exp = build_experiment(prepare(_config(device)), dom)
    s = GMETA_SETTING
    pool = dom.sample("train", s["pool"], torch.Generator().manual_seed(1))
    for raw in pool:  # cache every node's ball (cmlgraph, per-node-sparse); the published style re-extracts anyway
        ep = dom.materialize(raw, device)
        with torch.no_grad():
            exp.model.extractor(ep.support_x)
            exp.model.extractor(ep.query_x)
    counter = [0]
    graphed = None
    prefetch = impl == "batched-prefetch"
    if impl == "batched-graphed" or (prefetch and torch.device(device).type == "cuda"):
        # the trainer's CUDA-graph step (strict: a failed capture fails the case)
        from cmlgraph.train.cuda_graphs import GraphedMetaStep

        graphed = GraphedMetaStep(exp.algo, exp.model, exp.domain.loss_fn, None, strict=True)
        for i, raw in enumerate(pool):  # capture for the pool's sizes here (buffers only grow), not while timed
            graphed([dom.materialize(raw, device)], i)

    def prepared(i: int) -> list[Any]:
        """The pool's task ``i`` (cyclically) materialized, its ball layout built as the trainer's prefetch
        worker builds it (``TLPGraphDomain.prepare_batch``)."""
        episodes = [dom.materialize(pool[i % len(pool)], device)]
        dom.prepare_batch(episodes, None)
        return episodes

    sizes = torch.cat([dom.ball_index(device).ball_sizes(torch.cat([r.support, r.query])) for r in pool])
    info.update(saved_params=saved_parameters(exp), mean_ball=float(sizes.float().mean()),
                balls_per_task=int(sizes.numel() // len(pool)), prefetch=prefetch, cuda_graphs=graphed is not None)
    batches, workers = None, 1
    if prefetch:  # the trainer's pipeline: the worker lays out the next tasks' balls while the step runs, with as
        # many build threads as the trainer would start on this device (train.prefetch_workers: auto)
        from cmlgraph.train.prefetch import Prefetcher, prefetch_workers

        produced, workers = itertools.count(), prefetch_workers(0, device)
        batches = Prefetcher(lambda _: next(produced), None, depth=2, name="cmlgraph-bench", build=prepared,
                             workers=workers)
        info.update(prefetch_workers=workers)

    def step() -> None:
        if batches is not None:
            episodes = batches.next()
        else:
            episodes = [dom.materialize(pool[counter[0] % len(pool)], device)]
        if graphed is None:
            meta_step(exp, episodes, counter[0], False if per_node else None)
        else:
            apply_meta_step(exp, graphed(episodes, counter[0]))
            info.update(cuda_graph_captures=graphed.captures, cuda_graph_replays=graphed.replays)
        counter[0] += 1

    host_turns = itertools.count()  # the host's share of a step, timed apart (Workload.prepare)
    return Workload(step, s["meta_batch"], info, cycle=len(pool), close=None if batches is None else batches.close,
                    prepare=None if per_node else lambda: prepared(next(host_turns)), prepare_workers=workers)


__all__ = ["GMETA_SETTING", "check_equal", "gmeta_workload"]
