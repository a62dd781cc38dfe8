"""cmlgraph's own meta-training step for each benchmarked domain, built through the library's public path.

Why through ``prepare``/``build_experiment`` and ``MetaAlgorithm.meta_gradients``: the benchmark must time what
``cmlgraph train`` runs (draw a meta-batch, materialise it, meta-gradients, one Adam step), not a copy of it.
Each builder returns a :class:`Workload` whose ``step`` is one meta-iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cmlgraph.algorithms.base import MetaStep
from cmlgraph.config import Config
from cmlgraph.core.episode import Episode
from cmlgraph.core.model import inference_state, parameters_of
from cmlgraph.core.transfer import episode_to_device
from cmlgraph.domains.base import Domain
from cmlgraph.graphs import FewShotGraph
from cmlgraph.train.trainer import Experiment, build_experiment, prepare

#: Meta-steps run before a CUDA-graph case is timed: its padded buffers grow to the batches' sizes meanwhile.
GRAPHED_WARMUP = 30
#: Few-shot settings of the graph cases (the brief's: 5-way 3-shot, 2-layer GCN, meta-batch 4, 2 inner steps).
GRAPH_SETTING = {"ways": 5, "shots": 3, "queries": 10, "hidden": 64, "layers": 2, "meta_batch": 4,
                 "inner_steps": 2, "inner_lr": 0.5}


@dataclass
class Workload:
    """One meta-iteration to time, and facts about what it runs.

    Attributes:
        step: Runs one meta-iteration (meta-batch, meta-gradients, optimizer step).
        meta_batch: Tasks per meta-iteration.
        info: Facts for the report (saved parameter count, execution mode...).
        cycle: Iterations after which ``step`` repeats its tasks (a pool of tasks of different sizes); timing
            runs in whole cycles so that every task counts equally.
        close: Releases what the workload holds (its prefetch worker), if anything; idempotent.
        prepare: Prepares one meta-batch's episodes as a step (or the trainer's prefetch worker) does: sampling,
            materializing on the device, the layouts built on the host (k-hop plans, G-Meta's balls), from its own
            random stream (the step's draws stay as they are). Timed apart by the bench (``host_ms_per_iter``): on a
            GPU the prefetch worker must finish it within a meta-step, or the step waits for it. ``None``: not
            timed apart (the references; the image and sinusoid cases, whose preparation is a few draws, and whose
            random images come from one shared cursor that a separate preparation would move).
        prepare_workers: Build threads of the case's prefetcher (``train.prefetch_workers`` as the trainer resolves
            it on the bench's device); above 1, ``prepare`` is also timed that many calls at once (it must then be
            safe to call from several threads).
    """

    step: Callable[[], None]
    meta_batch: int
    info: dict[str, Any] = field(default_factory=dict)
    cycle: int = 1
    close: Callable[[], None] | None = None
    prepare: Callable[[], Any] | None = None
    prepare_workers: int = 1


def saved_parameters(exp: Experiment) -> int:
    """Number of values in the saved inference weights (``model.pt``: ψ and θ, never the co-learner)."""
    return int(sum(v.numel() for v in inference_state(exp.model).values()))


def meta_step(exp: Experiment, episodes: list[Episode], step: int, batched: bool | None) -> None:
    """One meta-update exactly as the trainer does it: meta-gradients, then Adam."""
    apply_meta_step(exp, exp.algo.meta_gradients(exp.model, parameters_of(exp.model), episodes, exp.domain.loss_fn,
                                                 step, batched=batched))


def apply_meta_step(exp: Experiment, ms: MetaStep) -> None:
    """The optimizer step on computed meta-gradients, as the trainer applies them."""
    for k, p in exp.model.named_parameters():
        p.grad = ms.grads[k].detach()
    exp.optimizer.step()
    exp.optimizer.zero_grad(set_to_none=True)


def _experiment(cfg: Config, domain: Domain | None = None) -> Experiment:
    return build_experiment(prepare(cfg), domain)


def _produce(exp: Experiment) -> Callable[[torch.Generator], list[Episode]]:
    """A meta-batch as the trainer prepares it (``Trainer._prepare_batch``): sampled from ``generator`` and
    materialized on the run's device, with the layouts a domain builds ahead (``prepare_batch``)."""
    mb = int(exp.cfg.train.meta_batch)

    def produce(generator: torch.Generator) -> list[Episode]:
        episodes = [exp.domain.materialize(r, exp.device) for r in exp.domain.sample("train", mb, generator)]
        if hasattr(exp.domain, "prepare_batch"):
            exp.domain.prepare_batch(episodes, None)
        return episodes

    return produce


#: Seed of the stream that :attr:`Workload.prepare` draws its meta-batches from (not the step's).
PREPARE_SEED = 12345


def _prepare_of(exp: Experiment) -> Callable[[], Any]:
    """:attr:`Workload.prepare` of ``exp``: :func:`_produce` from a stream of its own."""
    produce, generator = _produce(exp), torch.Generator().manual_seed(PREPARE_SEED)
    return lambda: produce(generator)


def _sampling_workload(exp: Experiment, batched: bool | None, timed_prepare: bool = False) -> Workload:
    counter = [0]

    def step() -> None:
        raws = exp.domain.sample("train", int(exp.cfg.train.meta_batch), exp.generator)
        episodes = [exp.domain.materialize(r, exp.device) for r in raws]
        meta_step(exp, episodes, counter[0], batched)
        counter[0] += 1

    return Workload(step, int(exp.cfg.train.meta_batch), {"saved_params": saved_parameters(exp)},
                    prepare=_prepare_of(exp) if timed_prepare else None)


def sinusoid_workload(batched: bool, device: str, meta_batch: int = 25, cml: bool = True) -> Workload:
    """Sinusoid regression, 40-40 MLP, 5-shot 10-query tasks; the meta-batch batched with vmap or looped."""
    cfg = Config()
    cfg.data.task = "sinusoid"
    cfg.algo.cml = cml
    cfg.train.meta_batch = meta_batch
    cfg.train.device = device
    cfg.train.steps = 1
    return _sampling_workload(_experiment(cfg), batched)


class RandomImageDomain(Domain):
    """Random images of a fixed size standing in for miniImageNet: the cost of Conv4 does not depend on pixels.

    The episodes are drawn once (a few meta-batches, cycled), so the timing holds no image decoding.
    """

    task = "images"
    metric = "accuracy"

    def __init__(self, ways: int, shots: int, queries: int, channels: int, size: int, pool: int = 8) -> None:
        from cmlgraph.backbones.conv4 import Conv4Backbone

        self.name = f"random-{size}px"
        self.out_dim = ways
        self.notes: list[str] = []
        self.channels, self.size = channels, size
        self._extractor = lambda: Conv4Backbone(in_channels=channels, image_size=size)
        g = torch.Generator().manual_seed(0)
        labels_s = torch.arange(ways).repeat_interleave(shots)
        labels_q = torch.arange(ways).repeat_interleave(queries)
        self.pool = [Episode(torch.randn(ways * shots, channels, size, size, generator=g), labels_s,
                             torch.randn(ways * queries, channels, size, size, generator=g), labels_q)
                     for _ in range(pool)]
        self._next = 0

    def build_extractor(self) -> Any:
        """Conv4 on ``channels`` × ``size`` × ``size`` images."""
        return self._extractor()

    def sample(self, split: str, n: int, generator: torch.Generator) -> list[Episode]:
        """The next ``n`` episodes of the pool."""
        out = [self.pool[(self._next + i) % len(self.pool)] for i in range(n)]
        self._next += n
        return out

    def materialize(self, raw: Episode, device: torch.device | str = "cpu") -> Episode:
        """Move an episode to ``device`` as the package's domains do (pinned, ``non_blocking`` to CUDA)."""
        return episode_to_device(raw, device)

    def to_state(self, raws: list[Any]) -> dict[str, torch.Tensor]:  # pragma: no cover - not saved
        """Not used by the benchmark."""
        raise NotImplementedError

    def from_state(self, state: dict[str, torch.Tensor]) -> list[Any]:  # pragma: no cover - not saved
        """Not used by the benchmark."""
        raise NotImplementedError


def image_workload(batched: bool, device: str, size: int = 84, channels: int = 3, ways: int = 5, shots: int = 5,
                   queries: int = 15, meta_batch: int = 4, cml: bool = True) -> Workload:
    """Conv4 (CML co-learner of depth 2, one inner step) on random images; batched with vmap or looped."""
    cfg = Config()
    cfg.data.task = "omniglot"
    cfg.data.image_size = size
    cfg.data.ways, cfg.data.shots, cfg.data.queries = ways, shots, queries
    cfg.algo.cml = cml
    cfg.algo.inner_lr = 0.01
    cfg.train.meta_batch = meta_batch
    cfg.train.device = device
    cfg.train.steps = 1
    domain = RandomImageDomain(ways, shots, queries, channels, size, pool=2)
    return _sampling_workload(_experiment(cfg, domain), batched)


def graph_config(device: str, cml: bool = True, subgraph: str = "khop") -> Config:
    """The config of the graph cases (GCN, CML with a linear co-learner, second order)."""
    s = GRAPH_SETTING
    cfg = Config()
    cfg.data.task = "graph"
    cfg.data.ways, cfg.data.shots, cfg.data.queries = s["ways"], s["shots"], s["queries"]
    cfg.data.subgraph = subgraph
    cfg.model.gnn, cfg.model.hidden, cfg.model.layers = "gcn", s["hidden"], s["layers"]
    cfg.algo.cml = cml
    cfg.algo.inner_steps, cfg.algo.inner_lr = s["inner_steps"], s["inner_lr"]
    # The references' model: a plain MAML GCN. Not the issue-17 start of `cmlgraph train` (L2-normalised features,
    # Proto-MAML head), which computes more per step, so the ratios compare the same arithmetic.
    cfg.model.init, cfg.model.normalize, cfg.algo.head_init = "random", False, "learned"
    cfg.train.meta_batch = s["meta_batch"]
    cfg.train.device = device
    cfg.train.steps = 1
    return cfg


def graph_workload(graph: FewShotGraph, mode: str, device: str, cml: bool = True, graphed: bool = False,
                   prefetch: bool = False) -> Workload:
    """cmlgraph's graph domain in ``khop`` or ``full`` mode; the k-hop extraction is part of each step.

    ``graphed`` (``--device cuda`` only): the meta-step replayed as a CUDA graph, as training runs it on a GPU
    (``train.cuda_graphs: auto``; padded computation trees, :mod:`cmlgraph.train.cuda_graph_plans`), strict: a
    failed capture fails the case with its reason. Warm-up steps before timing let the padded buffers grow to the
    batches' sizes (each growth is a capture).

    ``prefetch``: the trainer's pipeline on ``device``. A worker thread samples and materializes the next
    meta-batches (building their k-hop plans) while the step runs (:class:`~cmlgraph.train.prefetch.Prefetcher`,
    ``train.prefetch: auto`` on CUDA), and on CUDA the step is replayed as a CUDA graph (strict). Only the wait
    for a batch and the step are timed, so the host work counts where it is not hidden behind the step. Its ops
    count (:func:`cmlgraph.bench.worker.count_ops`) holds the step's only: the worker's run in its own thread."""
    from cmlgraph.domains.graph import GraphDomain

    cfg = prepare(graph_config(device, cml, mode))
    s = GRAPH_SETTING
    domain = GraphDomain(graph, s["ways"], s["shots"], s["queries"], gnn="gcn", hidden=s["hidden"],
                         layers=s["layers"], subgraph=mode)
    exp = build_experiment(cfg, domain)
    mb = int(exp.cfg.train.meta_batch)
    if not graphed and not prefetch:
        work = _sampling_workload(exp, None, timed_prepare=True)
    else:
        step_fn: Any = None
        if graphed or (prefetch and exp.device.type == "cuda"):
            from cmlgraph.train.cuda_graphs import GraphedMetaStep

            step_fn = GraphedMetaStep(exp.algo, exp.model, exp.domain.loss_fn, None, strict=True)
        counter = [0]
        info: dict[str, Any] = {"saved_params": saved_parameters(exp), "prefetch": prefetch,
                                "cuda_graphs": step_fn is not None}

        produce = _produce(exp)

        batches = None
        if prefetch:
            from cmlgraph.train.prefetch import Prefetcher

            batches = Prefetcher(produce, exp.generator, depth=2, name="cmlgraph-bench")  # a daemon thread

        def step() -> None:
            episodes = batches.next() if batches is not None else produce(exp.generator)
            if step_fn is None:
                meta_step(exp, episodes, counter[0], None)
            else:
                apply_meta_step(exp, step_fn(episodes, counter[0]))
                info.update(cuda_graph_captures=step_fn.captures, cuda_graph_replays=step_fn.replays)
            counter[0] += 1

        if step_fn is not None:
            for _ in range(GRAPHED_WARMUP):
                step()
        work = Workload(step, mb, info, close=None if batches is None else batches.close, prepare=_prepare_of(exp))
    work.info.update({"mode": domain.mode, "hops": domain.hops})
    return work


__all__ = ["GRAPH_SETTING", "RandomImageDomain", "Workload", "graph_config", "graph_workload", "image_workload",
           "meta_step", "saved_parameters", "sinusoid_workload"]
