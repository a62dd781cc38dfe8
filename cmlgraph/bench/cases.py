"""What the benchmark measures: the cases (one timed workload each) and the ratios reported between them.

Why data, not code: the parent process only decides *what* runs; each case is executed in a fresh child process
(``cmlgraph.bench.worker``) that rebuilds its workload from the :class:`Case` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cmlgraph.bench.graphs import GraphSpec, synthetic
from cmlgraph.errors import ConfigError

#: Graphs of the full benchmark; ``--quick`` uses only the first.
GRAPHS: dict[str, GraphSpec] = {
    # One average degree (20) at every size, so the ratios show how cost grows with the graph, not the degree.
    "synthetic-10k": synthetic("synthetic-10k", 10_000, num_edges=100_000),
    "synthetic-100k": synthetic("synthetic-100k", 100_000, num_edges=1_000_000),
    "synthetic-1m": synthetic("synthetic-1m", 1_000_000, num_edges=10_000_000),
    "amazon-clothing": GraphSpec("amazon-clothing", "amazon-clothing"),
    # A small graph (Cora-sized), where data.subgraph auto used to run the whole graph: both exact modes and auto.
    "synthetic-2k": synthetic("synthetic-2k", 2_000, num_edges=20_000),
    "amazon-computers": GraphSpec("amazon-computers", "amazon-computers"),
}
#: Graphs of the ``gmeta`` domain only (the paper's Table 3); the ``graph`` domain's default set excludes them.
GMETA_GRAPHS = ("amazon-computers",)
QUICK_GRAPHS = ("synthetic-10k",)
#: Graphs on which the ``auto`` mode is timed too (it must match the faster of khop and full).
AUTO_GRAPHS = ("synthetic-2k",)
#: Graph on which CML is compared with MAML (and parameter counts checked) when it is benchmarked.
OVERHEAD_GRAPHS = ("synthetic-10k", "amazon-clothing")
#: Targets of issue 5 on the Amazon-Clothing-sized graph (its default, k-hop mode: computation trees) and the image
#: domain (ratio >= value; CML: <=). Full-graph mode is measured for comparison, without a target.
TARGETS = {"graph/amazon-clothing:khop/ref-a": 30.0, "graph/amazon-clothing:khop/ref-b": 5.0,
           "images/conv4-84px:batched/loop": 1.5, "gmeta/amazon-computers:batched/per-node": 20.0}
CML_TARGET = 1.25
#: Ratio metric of the op counts: tasks per 1000 aten ops (``cmlgraph.bench.worker.count_ops``; on CUDA the device's).
OPS_METRIC = "tasks_per_kop"
#: ms per meta-iteration on the 1M-node graph ÷ on the 10k-node one (same average degree).
SCALE_TARGET = 1.5
#: Peak-memory targets (MiB): training on Amazon-Clothing (1 GiB) and on the 1M-node graph (4 GiB).
MEMORY_TARGETS_MB = {"graph/amazon-clothing/khop": 1024.0, "graph/synthetic-1m/khop": 4096.0}


@dataclass(frozen=True)
class Case:
    """One timed workload.

    Attributes:
        name: Unique name, ``domain/setting/variant`` (``graph/amazon-clothing/khop``).
        impl: ``cmlgraph``, ``reference-a`` (published-code style) or ``reference-b`` (sparse per-task loop).
        domain: ``sinusoid``, ``images`` or ``graph``.
        workload: Builder key of :mod:`cmlgraph.bench.worker` (``sinusoid``, ``images``, ``graph``, ``reference``).
        options: Keyword arguments of the builder.
        graph: Key of :data:`GRAPHS` for graph cases.
    """

    name: str
    impl: str
    domain: str
    workload: str
    options: dict[str, Any] = field(default_factory=dict)
    graph: str | None = None


@dataclass(frozen=True)
class Ratio:
    """``numerator ÷ denominator`` of two cases' ``metric`` (tasks/s; ms per iteration for CML's overhead)."""

    name: str
    numerator: str
    denominator: str
    metric: str = "tasks_per_s"
    target: float | None = None
    target_kind: str = ">="


def graph_cases(key: str) -> list[Case]:
    """cmlgraph (k-hop and full), both references and, on :data:`OVERHEAD_GRAPHS`, cmlgraph with CML off."""
    base = f"graph/{key}"
    out = [Case(f"{base}/khop", "cmlgraph", "graph", "graph", {"mode": "khop", "cml": True}, key),
           # the same meta-step replayed as a CUDA graph, as a GPU run trains (--device cuda only; skipped on the CPU)
           Case(f"{base}/khop-graphed", "cmlgraph", "graph", "graph", {"mode": "khop", "cml": True, "graphed": True},
                key),
           # the trainer's pipeline: the next batches prepared by its prefetch worker while the step runs (on CUDA
           # the step replayed as a CUDA graph), as `cmlgraph train` runs on a GPU
           Case(f"{base}/khop-prefetch", "cmlgraph", "graph", "graph", {"mode": "khop", "cml": True, "prefetch": True},
                key),
           Case(f"{base}/full", "cmlgraph", "graph", "graph", {"mode": "full", "cml": True}, key)]
    if key in AUTO_GRAPHS:
        out.append(Case(f"{base}/auto", "cmlgraph", "graph", "graph", {"mode": "auto", "cml": True}, key))
    if key in OVERHEAD_GRAPHS:
        out.append(Case(f"{base}/khop-maml", "cmlgraph", "graph", "graph", {"mode": "khop", "cml": False}, key))
    out += [Case(f"{base}/ref-a", "reference-a", "graph", "reference", {"kind": "a"}, key),
            Case(f"{base}/ref-b", "reference-b", "graph", "reference", {"kind": "b"}, key)]
    return out


DOMAINS = ("sinusoid", "images", "graph", "gmeta")


def gmeta_cases(key: str) -> list[Case]:
    """G-Meta (TLP variant) + CML: cmlgraph's batched balls against per-node-subgraph loops (issue 10): (a) in the
    published code's style (dense, subgraphs extracted per episode), (b) sparse with cached subgraphs."""
    base = f"gmeta/{key}"
    return [Case(f"{base}/batched", "cmlgraph", "gmeta", "gmeta", {"impl": "batched"}, key),
            # The same without the binary-feature tables (float products), to show what they contribute.
            Case(f"{base}/batched-float", "cmlgraph", "gmeta", "gmeta", {"impl": "batched-float"}, key),
            # The meta-step replayed as a CUDA graph (padded ball layouts; --device cuda only, skipped on the CPU).
            Case(f"{base}/batched-graphed", "cmlgraph", "gmeta", "gmeta", {"impl": "batched-graphed"}, key),
            # The trainer's pipeline: the next tasks' ball layouts built by its prefetch worker while the step runs
            # (on CUDA the step replayed as a CUDA graph), as `cmlgraph train` runs G-Meta on a GPU.
            Case(f"{base}/batched-prefetch", "cmlgraph", "gmeta", "gmeta", {"impl": "batched-prefetch"}, key),
            Case(f"{base}/per-node", "reference-a", "gmeta", "gmeta", {"impl": "per-node"}, key),
            Case(f"{base}/per-node-sparse", "reference-b", "gmeta", "gmeta", {"impl": "per-node-sparse"}, key)]


def build_cases(quick: bool, graphs: list[str] | None = None, domains: list[str] | None = None) -> list[Case]:
    """The cases of the quick or full benchmark, optionally limited to some domains and graphs.

    Raises:
        ConfigError: An unknown graph or domain (the message lists the valid ones).
    """
    keys = list(QUICK_GRAPHS if quick else [g for g in GRAPHS if g not in GMETA_GRAPHS]) if graphs is None else graphs
    unknown = [k for k in keys if k not in GRAPHS]
    if unknown:
        raise ConfigError(f"unknown benchmark graphs {unknown}; valid: {', '.join(GRAPHS)}")
    domains = list(DOMAINS) if domains is None else domains
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown or not domains:
        raise ConfigError(f"unknown benchmark domains {unknown or domains}; valid: {', '.join(DOMAINS)}")
    img = ({"size": 28, "channels": 1, "shots": 1, "queries": 5} if quick
           else {"size": 84, "channels": 3, "shots": 5, "queries": 15})
    tag = f"conv4-{img['size']}px"
    cases = [Case("sinusoid/mlp/batched", "cmlgraph", "sinusoid", "sinusoid", {"batched": True}),
             Case("sinusoid/mlp/loop", "cmlgraph", "sinusoid", "sinusoid", {"batched": False}),
             Case(f"images/{tag}/batched", "cmlgraph", "images", "images", {"batched": True, **img}),
             Case(f"images/{tag}/loop", "cmlgraph", "images", "images", {"batched": False, **img})]
    for key in keys:
        if key not in GMETA_GRAPHS:
            cases += graph_cases(key)
    if not quick and "gmeta" in domains:
        cases += [c for key in GMETA_GRAPHS for c in gmeta_cases(key)]
    selected = [c for c in cases if c.domain in domains]
    if not selected:
        why = ("--quick has no gmeta case (it runs minutes on Amazon-Computer): drop --quick" if quick and
               "gmeta" in domains else f"no case of domains {domains} on graphs {keys}")
        raise ConfigError(f"nothing to benchmark: {why}")
    return selected


def build_ratios(cases: list[Case]) -> list[Ratio]:
    """Ratios between the cases present: batched vs loop, cmlgraph vs each reference, CML vs MAML."""
    names = {c.name for c in cases}
    out: list[Ratio] = []

    def add(name: str, num: str, den: str, metric: str = "tasks_per_s", target_kind: str = ">=",
            target: float | None = None) -> None:
        if num in names and den in names:
            out.append(Ratio(name, num, den, metric, TARGETS.get(name, target), target_kind))

    for prefix in sorted({c.name.rsplit("/", 1)[0] for c in cases if c.domain in ("sinusoid", "images")}):
        add(f"{prefix}:batched/loop", f"{prefix}/batched", f"{prefix}/loop")
    for key in GRAPHS:
        base = f"graph/{key}"
        for mode in ("khop", "full"):
            for ref in ("ref-a", "ref-b"):
                add(f"{base}:{mode}/{ref}", f"{base}/{mode}", f"{base}/{ref}")
        add(f"{base}:khop/full", f"{base}/khop", f"{base}/full")
        add(f"{base}:khop-graphed/ref-a", f"{base}/khop-graphed", f"{base}/ref-a")
        add(f"{base}:khop-graphed/khop", f"{base}/khop-graphed", f"{base}/khop")
        add(f"{base}:khop-prefetch/ref-a", f"{base}/khop-prefetch", f"{base}/ref-a")
        add(f"{base}:khop-prefetch/khop", f"{base}/khop-prefetch", f"{base}/khop")
        add(f"{base}:auto/khop", f"{base}/auto", f"{base}/khop")
        add(f"{base}:cml/maml ms", f"{base}/khop", f"{base}/khop-maml", "ms_per_iter", "<=", CML_TARGET)
    for key in GMETA_GRAPHS:
        add(f"gmeta/{key}:batched/per-node", f"gmeta/{key}/batched", f"gmeta/{key}/per-node")
        add(f"gmeta/{key}:batched/per-node-sparse", f"gmeta/{key}/batched", f"gmeta/{key}/per-node-sparse")
        add(f"gmeta/{key}:batched-float/per-node", f"gmeta/{key}/batched-float", f"gmeta/{key}/per-node")
        add(f"gmeta/{key}:batched/batched-float", f"gmeta/{key}/batched", f"gmeta/{key}/batched-float")
        add(f"gmeta/{key}:batched-graphed/per-node", f"gmeta/{key}/batched-graphed", f"gmeta/{key}/per-node")
        add(f"gmeta/{key}:batched-graphed/batched", f"gmeta/{key}/batched-graphed", f"gmeta/{key}/batched")
        add(f"gmeta/{key}:batched-prefetch/per-node", f"gmeta/{key}/batched-prefetch", f"gmeta/{key}/per-node")
        add(f"gmeta/{key}:batched-prefetch/batched", f"gmeta/{key}/batched-prefetch", f"gmeta/{key}/batched")
    # Ops per task (tasks per 1000 ops, cmlgraph ÷ reference) of eager steps that count all their work: on a
    # launch-bound GPU an eager step's time roughly follows its op count (docs/gpu.md, "Ops per meta-iteration").
    # Not for CUDA-graph cases (a replay counts none of its kernels) nor the prefetch case (its worker's ops are
    # in another thread): their op counts stay in the case table, marked. No targets: counted, not timed.
    for prefix in sorted({c.name.rsplit("/", 1)[0] for c in cases if c.domain in ("sinusoid", "images")}):
        add(f"{prefix}:batched/loop ops", f"{prefix}/batched", f"{prefix}/loop", OPS_METRIC)
    for key in GRAPHS:
        base = f"graph/{key}"
        for variant in ("khop", "full"):
            add(f"{base}:{variant}/ref-a ops", f"{base}/{variant}", f"{base}/ref-a", OPS_METRIC)
    for key in GMETA_GRAPHS:
        for variant in ("batched", "batched-float"):
            add(f"gmeta/{key}:{variant}/per-node ops", f"gmeta/{key}/{variant}", f"gmeta/{key}/per-node",
                OPS_METRIC)
    add("graph/synthetic-1m÷10k:khop ms", "graph/synthetic-1m/khop", "graph/synthetic-10k/khop", "ms_per_iter", "<=",
        SCALE_TARGET)
    return out


__all__ = ["AUTO_GRAPHS", "CML_TARGET", "DOMAINS", "GMETA_GRAPHS", "GRAPHS", "MEMORY_TARGETS_MB", "OPS_METRIC",
           "OVERHEAD_GRAPHS", "QUICK_GRAPHS", "SCALE_TARGET", "TARGETS", "Case", "Ratio", "build_cases",
           "build_ratios", "gmeta_cases", "graph_cases"]
