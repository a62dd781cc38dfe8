"""Host-device syncs of one meta-iteration and one evaluation batch on each hot path (issue 18 item 2).

Each path builds a tiny experiment, then counts, under :class:`SyncCounter` on CPU tensors, the ops that would force
a host-device synchronisation on CUDA, by op and by the cmlgraph function that ran them, in four phases:

- ``host``: sampling and materializing the meta-batch (``Domain.sample``/``materialize``, before the step): host
  work on CPU tensors, where a "sync" costs nothing; it builds the k-hop plans (GNN and AMM-GNN computation trees,
  issue 18 item 2) and runs in the prefetch worker (:mod:`cmlgraph.train.prefetch`) ahead of the step;
- ``first``: the meta-gradients on those episodes, building the rest of their layouts (the batched block-diagonal
  layout from the plans, G-Meta ball blocks) on the first forward;
- ``steady``: the meta-gradients again on the same episodes (layouts memoised): the per-inner-step device compute;
- ``eval_host``: materializing one evaluation task batch (host, as ``host``);
- ``eval``: predicting that batch (``algo.predict`` as :func:`cmlgraph.train.evaluate.evaluate` runs it).

A warm-up meta-iteration first builds the per-graph caches (adjacency, ball index, binary codes), built once a run.
The counts must equal the allow-lists below, where each entry says why that sync is there; a new sync (or a
removed one) fails the test and must be justified here. docs/gpu.md ("Syncs per meta-iteration") has the table.
"""

from __future__ import annotations

import traceback
from collections import Counter
from typing import Any

import pytest
import torch

from cmlgraph.api import make_config
from cmlgraph.backbones.base import auto_batched
from cmlgraph.core.episode import can_stack, stack
from cmlgraph.core.model import parameters_of
from cmlgraph.train.sync_counter import SyncCounter
from cmlgraph.train.trainer import build_experiment, prepare
from tests.conftest import register_sparse_graph


class SiteCounter(SyncCounter):
    """A :class:`SyncCounter` that also keys each sync by ``op @ file:function`` of the innermost cmlgraph frame."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, D105
        before = self.total
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if self.total != before:
            op = func._schema.name.split("::", 1)[1]
            frame = next((f for f in reversed(traceback.extract_stack()) if "/cmlgraph/" in f.filename
                          and "sync_counter" not in f.filename), None)
            site = "?" if frame is None else f"{frame.filename.rsplit('/', 1)[-1]}:{frame.name}"
            self.sites[f"{op} @ {site}"] += 1
        return out


PHASES = ("host", "first", "steady", "eval_host", "eval")


def measure(settings: dict[str, Any], batched: bool | None = None) -> dict[str, dict[str, int]]:
    """Sync counts per phase (:data:`PHASES`) of one meta-iteration of ``settings``."""
    cfg = prepare(make_config(**settings))
    e = build_experiment(cfg)
    params = parameters_of(e.model)
    if batched is None:
        batched = {"auto": auto_batched(e.model.extractor, e.device), "on": True, "off": False}[cfg.train.batched]
    meta_batch = int(cfg.train.meta_batch)

    def episodes(split: str, stacked: bool | None) -> list:  # as the trainer's/evaluate's prefetch worker does
        eps = [e.domain.materialize(r, e.device) for r in e.domain.sample(split, meta_batch, e.generator)]
        e.domain.prepare_batch(eps, stacked)
        return eps

    together = auto_batched(e.model.extractor, e.device) is None

    e.algo.meta_gradients(e.model, params, episodes("train", batched), e.domain.loss_fn, 0, batched=batched)  # warm
    phases: dict[str, SiteCounter] = {k: SiteCounter() for k in PHASES}
    with phases["host"]:
        eps = episodes("train", batched)
    for phase in ("first", "steady"):
        with phases[phase]:
            ms = e.algo.meta_gradients(e.model, params, eps, e.domain.loss_fn, 1, batched=batched)
    assert torch.isfinite(ms.loss.total)
    e.model.eval()
    with phases["eval_host"]:
        veps = episodes("val", None if together else False)
    with phases["eval"]:  # as evaluate() does: stacked when the backbone batches, else task by task
        if together and can_stack(veps):
            out, _ = e.algo.predict(e.model, params, stack(veps), e.domain.loss_fn, batched=True)
        else:
            out = torch.stack([e.algo.predict(e.model, params, ep, e.domain.loss_fn)[0] for ep in veps])
    assert out.shape[0] == meta_batch
    return {k: dict(sorted(c.sites.items())) for k, c in phases.items()}


register_sparse_graph("sync-sparse", nodes=300, edges=1200, classes=15, split="9/3/3", seed=0)  # sparse k-hop paths

GRAPH = dict(task="graph", graph="synthetic", synthetic_nodes=300, synthetic_classes=15, ways=3, shots=2, queries=3,
             meta_batch=2, inner_steps=2, cml=True, steps=1, layers=2)  # MAML + CML defaults otherwise (second
# order); two layers fixed: the counts below are of these layouts, not of a depth chosen on validation
SPARSE = dict(task="graph", graph="sync-sparse", ways=3, shots=2, queries=3, meta_batch=2, inner_steps=2, cml=True,
              steps=1, features="raw", layers=2)  # sparse features kept as they are

# Why each remaining sync is there. "host" phases (and "host" entries of the others) run on tensors that stay on
# the CPU in a CUDA run too (the episode's raw node ids, the CPU adjacency, G-Meta's BallIndex): host reads, no
# device sync. "cpu only" entries exist only on CPU tensors. The device phases (first, steady, eval) of the k-hop and
# AMM-GNN paths have no plan syncs: their plans are built on the host in ``materialize`` (issue 18 item 2).
ONE_HOT = 2  # cpu only: F.one_hot's class-range check (aminmax().item(), 2 reads); on CUDA it relies on device
#              asserts (ATen Onehot.cpp), no sync. One call per proto_head (--head-init proto, the default).
# Host index work in numpy since session 38 (no torch op, so nothing to count here): the CSR rows of each level
# (``csr_row_entries``) and the distinct ids of each level (``gnn_plan._unique_in_order``), on CPU tensors only. On a
# device tensor they run as torch ops with syncs, which the meta-device rehearsal (tests/train/test_device_placement)
# refuses in a device phase.
PLAN = {  # host: each k-hop computation-tree plan (support and query of 2 episodes = 4 plans, 2 layers), built in
    #       materialize from the CPU graph (GraphDomain.tree_input, prepare_plan) and copied to the device
    "_local_scalar_dense @ gnn_plan.py:build_plan": 4,  # whether the level is the requested order (1 per plan)
}
PLAN_CSR = {"_coalesce @ gnn_plan.py:_coo": 4}  # host: each plan's read aggregation as CSR (host_prepare)
# host, sparse features (issue 18 item 2, session 29): what the device pass would build with syncs, built with the plan
# (host_prepare): the constants' sparse × sparse products, coalesced, as CSR (4 plans)
SPARSE_Z = {"_sparse_sparse_matmul @ gnn_plan.py:_sparse_product": 4, "_coalesce @ gnn_plan.py:_coo": 8}
SPARSE_SGC = {"_sparse_sparse_matmul @ gnn_plan.py:_sparse_product": 8, "_coalesce @ gnn_plan.py:_coo": 8}
# host: AMM-GNN's matching draws, one .item() per episode on the raw CPU ids
MATCH = {"_local_scalar_dense @ tlp_graph.py:match_draws": 2}
MATCH_ROWS = {"_coalesce @ sparse.py:slice_rows": 2}  # host: AMM-GNN's drawn rows of sparse features, per episode
BALLS = {  # host: ball membership of new centre nodes (BallIndex.expand on the CPU CSR; cached per node)
    "_unique2 @ balls.py:expand": 8, "bincount @ balls.py:balls": 4,  # (the CSR rows in numpy since session 38)
}
BALL_BLOCK = {  # host: the support and query ball blocks of the meta-batch, built on the CPU in the prefetch worker
    #              (TLPGraphDomain.prepare_batch, issue 18), found again by the step's own stacking
    "_local_scalar_dense @ gmeta.py:<listcomp>": 4,  # ball_groups: rows per task (ball_sizes, a CPU tensor)
    "_local_scalar_dense @ balls.py:block": 2,  # entries inside the balls (selected in numpy since session 38)
    "_unique2 @ gmeta.py:ball_layout": 2, "bincount @ gmeta.py:ball_layout": 2,  # union of members, CSR counts
    # (+2) on the CPU, each task's own members too: the per-task feature blocks' choice (gmeta.task_blocks_win)
}
BALL_BLOCK["_unique2 @ gmeta.py:ball_layout"] += 2
PROTO = {"_local_scalar_dense @ proto_head.py:class_means": ONE_HOT}
# host, GNN dropout in training (input dropout reads the input level): each plan lists one level more (its distinct
# ids) and both layers' aggregations are built as CSR (4 plans x 2)
DROPOUT_PLAN = {**PLAN, "_coalesce @ gnn_plan.py:_coo": 8}
# ... with sparse features: the input level's rows sliced from the sparse features too (4 plans)
DROPOUT_SPARSE = {**DROPOUT_PLAN, "_coalesce @ gnn_plan.py:_coo": 12, "_coalesce @ sparse.py:slice_rows": 4,
                  "index_select @ sparse.py:slice_rows": 4, "_sparse_sparse_matmul @ gnn_plan.py:_sparse_product": 4}


def _sum(*parts: dict[str, int]) -> dict[str, int]:
    """Allow-lists added site by site (a site in two of them counts both)."""
    return dict(sum((Counter(p) for p in parts), Counter()))
SUBGRAPH = {  # host: each of 2 episodes' own 2-hop subgraph, built in materialize from the CPU graph
    "_unique2 @ subgraph.py:k_hop_nodes": 6, "nonzero @ subgraph.py:k_hop_nodes": 2,  # frontiers, the subset
    "index @ subgraph.py:k_hop_nodes": 8,  # boolean masks of the frontier and the induced edges
    "_local_scalar_dense @ subgraph.py:episode_input": 4,  # the node-id range check (min, max)
    "index @ gnn_ops.py:build": 2,  # GAT's self-looped edges (remove_self_loops' mask), on the host too
}
PROTOTYPES = {"_local_scalar_dense @ protonet.py:prototype_logits": ONE_HOT}  # ProtoNet's class means, batched
ALLOW: dict[str, dict[str, dict[str, int]]] = {
    "khop": {"host": PLAN, "first": PROTO, "steady": PROTO, "eval_host": PLAN, "eval": PROTO},
    # full mode (SGC): the tasks run as one batch (gathered propagated rows), one proto_head per meta-batch
    "full": {"host": {}, "first": PROTO, "steady": PROTO, "eval_host": {}, "eval": PROTO},
    # full mode (GCN): the tasks run as one pass over the graph (node-major activations), one proto_head per batch
    "full-gcn": {"host": {}, "first": PROTO, "steady": PROTO, "eval_host": {}, "eval": PROTO},
    # full mode (GAT): every task's attention per edge in one pass (softmax per target: scatter max and sum)
    "full-gat": {"host": {}, "first": PROTO, "steady": PROTO, "eval_host": {}, "eval": PROTO},
    # k-hop mode (GAT): each episode's own subgraph, built on the host (CSR expansion, its self-looped edges), the
    # tasks as one pass over their disjoint union
    "khop-gat": {"host": SUBGRAPH, "first": PROTO, "steady": PROTO, "eval_host": SUBGRAPH, "eval": PROTO},
    # ProtoNet on computation trees: the meta-batch's prototypes at once (one F.one_hot per pass: cpu only)
    "protonet": {"host": PLAN, "first": PROTOTYPES, "steady": PROTOTYPES, "eval_host": PLAN, "eval": PROTOTYPES},
    "gmeta": {"host": {**BALLS, **BALL_BLOCK}, "first": {}, "steady": {}, "eval_host": {**BALLS, **BALL_BLOCK},
              "eval": {}},
    "ammgnn": {"host": {**PLAN, **MATCH, **PLAN_CSR}, "first": {}, "steady": {},
               "eval_host": {**PLAN, **MATCH, **PLAN_CSR}, "eval": {}},
    # k-hop computation trees of a 2-layer GCN (the bench's path): the second layer's aggregation built on the host
    "khop-gcn": {"host": {**PLAN, **PLAN_CSR}, "first": PROTO, "steady": PROTO,
                 "eval_host": {**PLAN, **PLAN_CSR}, "eval": PROTO},
    # sparse features (Cora's, CiteSeer's raw bag of words): no device sync either, the sparse work on the host
    "khop-gcn-sparse": {"host": {**PLAN, **SPARSE_Z}, "first": PROTO, "steady": PROTO,
                        "eval_host": {**PLAN, **SPARSE_Z}, "eval": PROTO},
    "khop-sgc-sparse": {"host": {**PLAN, **SPARSE_SGC}, "first": PROTO, "steady": PROTO,
                        "eval_host": {**PLAN, **SPARSE_SGC}, "eval": PROTO},
    # GNN dropout (session 30: masks from core/dropout.py, each run's own stream when fused): no device sync either
    "khop-gcn-dropout": {"host": DROPOUT_PLAN, "first": PROTO, "steady": PROTO, "eval_host": DROPOUT_PLAN,
                         "eval": PROTO},
    "khop-gcn-sparse-dropout": {"host": DROPOUT_SPARSE, "first": PROTO, "steady": PROTO,
                                "eval_host": DROPOUT_SPARSE, "eval": PROTO},
    "full-sgc-dropout": {"host": {}, "first": PROTO, "steady": PROTO, "eval_host": {}, "eval": PROTO},
    # (session 34) whole-graph GCN and GAT's k-hop unions with dropout: one pass, each task's masks drawn in it
    "full-gcn-dropout": {"host": {}, "first": PROTO, "steady": PROTO, "eval_host": {}, "eval": PROTO},
    "khop-gat-dropout": {"host": SUBGRAPH, "first": PROTO, "steady": PROTO, "eval_host": SUBGRAPH, "eval": PROTO},
    "ammgnn-sparse": {"host": _sum(PLAN, MATCH, SPARSE_Z, MATCH_ROWS), "first": {}, "steady": {},
                      "eval_host": _sum(PLAN, MATCH, SPARSE_Z, MATCH_ROWS), "eval": {}},
    "sinusoid": {k: {} for k in PHASES},
    "digits": {k: {} for k in PHASES},
}
#: Sites in a device phase (first, steady, eval) that are not device syncs on CUDA: host work on CPU tensors or
#: cpu-only checks. Every other site there would be a real device sync; none is left on these paths.
NOT_DEVICE: dict[str, set[str]] = {"khop": set(PROTO), "full": set(PROTO), "full-gcn": set(PROTO),
                                   "full-gat": set(PROTO), "khop-gat": set(PROTO), "khop-gcn": set(PROTO),
                                   "khop-gcn-sparse": set(PROTO), "khop-sgc-sparse": set(PROTO),
                                   "ammgnn-sparse": set(), "khop-gcn-dropout": set(PROTO),
                                   "khop-gcn-sparse-dropout": set(PROTO), "full-sgc-dropout": set(PROTO),
                                   "full-gcn-dropout": set(PROTO), "khop-gat-dropout": set(PROTO),
                                   "protonet": set(PROTOTYPES), "gmeta": set(),
                                   "ammgnn": set(), "sinusoid": set(), "digits": set()}


def device_syncs(path: str, counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The entries of the device phases of ``counts`` that are real device syncs on CUDA."""
    return {ph: {k: v for k, v in counts[ph].items() if k not in NOT_DEVICE[path]} for ph in ("first", "steady",
                                                                                            "eval")}
PATHS = {
    "khop": (dict(GRAPH, subgraph="khop"), None),
    "full": (dict(GRAPH, subgraph="full"), None),
    "full-gcn": (dict(GRAPH, subgraph="full", gnn="gcn"), None),
    "full-gat": (dict(GRAPH, subgraph="full", gnn="gat"), None),
    "khop-gat": (dict(GRAPH, subgraph="khop", gnn="gat"), None),
    "khop-gcn": (dict(GRAPH, subgraph="khop", gnn="gcn"), None),
    "khop-gcn-sparse": (dict(SPARSE, subgraph="khop", gnn="gcn"), None),
    "khop-sgc-sparse": (dict(SPARSE, subgraph="khop"), None),
    "ammgnn-sparse": (dict(SPARSE, algo="ammgnn"), None),
    "khop-gcn-dropout": (dict(GRAPH, subgraph="khop", gnn="gcn", dropout=0.5), None),
    "khop-gcn-sparse-dropout": (dict(SPARSE, subgraph="khop", gnn="gcn", dropout=0.5), None),
    "full-sgc-dropout": (dict(GRAPH, subgraph="full", dropout=0.5), None),
    "full-gcn-dropout": (dict(GRAPH, subgraph="full", gnn="gcn", dropout=0.5), None),
    "khop-gat-dropout": (dict(GRAPH, subgraph="khop", gnn="gat", dropout=0.5), None),
    "protonet": (dict(GRAPH, subgraph="khop", algo="protonet"), None),
    "gmeta": (dict(GRAPH, algo="gmeta"), None),
    "ammgnn": (dict(GRAPH, algo="ammgnn"), None),
    "sinusoid": (dict(task="sinusoid", meta_batch=2, inner_steps=2, cml=True, steps=1), True),
    "digits": (dict(task="digits", ways=3, shots=1, queries=2, meta_batch=2, inner_steps=1, cml=True, steps=1),
               True),  # embedded 8x8 digits, no download; batched (vmap) as on a GPU
}


@pytest.mark.parametrize("path", list(PATHS))
def test_syncs_per_meta_iteration(path: str, monkeypatch) -> None:
    import cmlgraph.backbones.gnn as gnn

    monkeypatch.setattr(gnn, "dropout_passes_batch", lambda device: True)  # whole-graph dropout as on a GPU
    settings, batched = PATHS[path]
    counts = measure(settings, batched)
    assert counts == ALLOW[path]
    assert device_syncs(path, counts) == {"first": {}, "steady": {}, "eval": {}}


def test_site_counter_names_the_function() -> None:
    from cmlgraph.graphs.sparse import _device_row_entries, csr_row_entries

    with SiteCounter() as c:  # the torch ops (a device tensor's path; CPU tensors go through numpy)
        _device_row_entries(torch.tensor([0, 2, 3]), torch.tensor([1, 0]))
    assert c.sites == {"repeat_interleave @ sparse.py:_device_row_entries": 2,
                       "_local_scalar_dense @ sparse.py:_device_row_entries": 1}
    with SiteCounter() as c:
        csr_row_entries(torch.tensor([0, 2, 3]), torch.tensor([1, 0]))
    assert c.total == 0


#: Table 3's settings for the fused step (first order, dropout 0.5), on a registered graph both seeds share (the
#: ``synthetic`` graph is drawn from each run's seed: different graphs never fuse).
FUSED = {"gmeta": dict(SPARSE, algo="gmeta", first_order=True, dropout=0.5),
         "ammgnn": dict(SPARSE, algo="ammgnn", first_order=True, dropout=0.5),
         "khop-gcn-dropout": dict(SPARSE, subgraph="khop", gnn="gcn", dropout=0.5)}


@pytest.mark.parametrize("path", list(FUSED))
def test_a_fused_parallel_runs_step_has_no_device_sync(tmp_path, path, monkeypatch):
    """``--parallel-runs``' fused meta-step (Table 3's GPU path: G-Meta, AMM-GNN, each run's dropout from its own
    stream) issues no device sync either: counted on every fused step of a group of two seeds, its only syncs are
    the proto head's CPU-only class check (GNN backbone), as in the run-alone allow-lists above."""
    import cmlgraph.train.parallel as parallel
    from cmlgraph.config import apply_overrides

    counts: list[dict[str, int]] = []
    original = parallel.fused_gradients

    def counted(trainers, episodes, **kwargs):
        assert kwargs.get("generators") is not None  # each run's dropout from its own stream
        with SiteCounter() as counter:
            out = original(trainers, episodes, **kwargs)
        counts.append(dict(counter.sites))
        return out

    monkeypatch.setattr(parallel, "fused_gradients", counted)
    cfgs = [apply_overrides(make_config(**{**FUSED[path], "steps": 3, "val_every": 3, "val_tasks": 2,
                                           "test_tasks": 2, "seed": seed, "runs_dir": str(tmp_path),
                                           "name": f"s{seed}"}), {"train": {"batched": "on"}}, "test")
            for seed in (0, 1)]
    results = parallel.train_parallel(cfgs, progress=False)
    assert [r.error for r in results] == [None, None]
    assert len(counts) == 2  # steps 2 and 3 fused (the first steps alone: the RNG probe)
    allowed = PROTO if path.startswith("khop") else {}  # one proto head for the fused batch (cpu only)
    if path == "gmeta":
        allowed = FUSED_BALL_LAYOUT
    assert all(c == allowed for c in counts), counts


#: host: a fused G-Meta step's ball layout of the two runs' 2 + 2 tasks, built in the step (each run's prefetch
#: worker built its own tasks' layout, which a fused step does not use) on the host's ball index, as BALL_BLOCK: the
#: rows per task, the blocks, the union and its CSR counts, and the union's rows of the sparse features, sliced from
#: the index's host copy (``BallIndex.host_x``; a slice of the device's features would read its entry count back).
#: On a GPU these are CPU tensors too: host work inside the step, no device sync (the step's latency, not overlapped).
FUSED_BALL_LAYOUT = {"_local_scalar_dense @ gmeta.py:<listcomp>": 8, "_local_scalar_dense @ balls.py:block": 2,
                     "_unique2 @ gmeta.py:ball_layout": 4,
                     "bincount @ gmeta.py:ball_layout": 2, "_coalesce @ sparse.py:slice_rows": 2}
