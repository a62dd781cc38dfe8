"""CUDA graphs for the meta-step (issue 18 item 4), behind ``train.cuda_graphs: auto|on|off``.

Why: on a GPU a few-shot meta-iteration is hundreds of tiny kernels, each launched from Python; a CUDA graph records
them once and replays them with one launch. A graph needs static shapes and no host synchronisation: the
meta-step's episode tensors are copied into fixed input buffers, the recorded computation (inner loop, outer loss,
meta-gradients) is replayed, and its outputs are fixed buffers that the optimizer reads before the next replay.

Where (:func:`ineligible` says why not elsewhere): a CUDA device; MAML, ANIL, BOIL, G-Meta or AMM-GNN (± CML), first
order (FOMAML; G-Meta and AMM-GNN first order are the paper's Table 3 setting) or second order (the default: the
capture records the eager double backward's kernels like any others, ``torch.cuda.graph`` is not
``torch.compile``, which refuses double backward); no ``--control noise`` (its noise is drawn on the host); tasks
run batched (``vmap``: the sinusoid MLP, Conv4 on images; one pass over the graph for whole-graph inputs);
fixed-shape episode tensors, or whole-graph (``full`` mode) inputs of SGC, GCN, GraphSAGE, GIN or GAT with dense
features (with or without dropout: each task's masks are drawn inside the pass), whose graph is the domain's fixed
full graph and whose only data are each task's node ids (copied into the capture's node buffers); k-hop
computation trees of SGC, GCN, GraphSAGE or GIN (dense or sparse features, with or without dropout), padded into
fixed buffers (:mod:`cmlgraph.train.cuda_graph_plans`); G-Meta on an undirected graph, its ball layouts padded
likewise (:mod:`cmlgraph.train.cuda_graph_balls`), and AMM-GNN, its computation trees padded and its drawn rows in
fixed buffers (:mod:`cmlgraph.train.cuda_graph_matched`); GAT's k-hop subgraphs, tasks batched, their union padded
(:mod:`cmlgraph.train.cuda_graph_unions`; with dropout the masks are drawn over the padded union). Padded buffers
grow when a batch outgrows them (a new capture). Not yet: sparse features of whole-graph inputs, MAML++'s changing
derivative order, GAT's attention dropout on k-hop subgraphs (Python API only).

``auto`` uses graphs where eligible and checks itself once: the first captured step is compared with the eager
step on the same meta-batch (losses and gradients, ``rtol`` 1e-4); on a mismatch or any capture error the run says
so on the console and continues eager. ``on`` makes an ineligible run or a failed check an error; ``off`` is eager.

Not run on a GPU yet (no device was lent while this was written): ``tests/train/test_cuda_graphs.py`` checks the
eligibility rules and the eager fallback on the CPU, and compares captured and eager losses and gradients where
CUDA exists (skipped otherwise).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from cmlgraph.algorithms.base import MetaAlgorithm, MetaStep
from cmlgraph.algorithms.tlp import AMMGNN, GMeta
from cmlgraph.algorithms.variants import ANIL, BOIL
from cmlgraph.core.episode import Episode, can_stack
from cmlgraph.core.memory import training_spans
from cmlgraph.core.model import parameters_of
from cmlgraph.core.objective import OuterLoss
from cmlgraph.errors import ConfigError

MODES = ("auto", "on", "off")
#: An episode's four parts, as the capture's input buffers hold them.
SIDES = ("support_x", "support_y", "query_x", "query_y")
#: Algorithms whose meta-step is the shared objective (no per-step schedules, no own gradient pass).
GRAPHABLE = (MetaAlgorithm, ANIL, BOIL, GMeta, AMMGNN)
#: Eager warm-up iterations on a side stream before capture (cuBLAS workspaces, autograd's first-use setup).
WARMUP = 3
#: Most captures of one run: k-hop and G-Meta runs capture again when a batch's plans or balls outgrow the padded
#: buffers (each capacity grows by ``SLACK``, so a few captures hold the run's largest batches); after that, an
#: outgrowing batch steps eagerly.
MAX_CAPTURES = 6
#: Tolerance of the first-step check against the eager step. On CUDA ``index_add`` and ``embedding_bag`` sum with
#: atomics, so a replay and an eager step differ in float summation order (about 1e-7 of the summands in float32);
#: ``atol`` leaves second-order gradients room for that, while a wrong capture differs by far more.
RTOL, ATOL = 1e-4, 1e-5


#: ``--algo`` names whose meta-step can be captured (the classes of :data:`GRAPHABLE`).
GRAPHABLE_NAMES = ("maml", "anil", "boil", "gmeta", "ammgnn")


def config_ineligible(cfg: Any) -> str | None:
    """Why a config's meta-step cannot be captured, from the config alone (checked before a run starts), or
    ``None``; :func:`ineligible` adds what needs the built run."""
    t, a = cfg.train, cfg.algo
    if not str(t.device).startswith("cuda"):
        return f"the run is on {t.device}, not a CUDA device (--device cuda)"
    if a.algo not in GRAPHABLE_NAMES:
        return f"--algo {a.algo} has its own meta-step; CUDA graphs cover {', '.join(GRAPHABLE_NAMES)}"
    if a.control == "noise":
        return "--control noise draws its noise on the host"
    if t.batched == "off":
        return "train.batched: off runs the tasks one by one (a config key: there is no --batched flag)"
    # graphs: none of the settings a config can name rules a capture out (k-hop trees, G-Meta's balls and GAT's
    # k-hop subgraphs pad to fixed buffers; whole-graph inputs run batched; feature dropout is drawn in the pass)
    return None


#: Why GAT's k-hop subgraphs with attention dropout are not captured.
GAT_ATTENTION_DROPOUT = ("GAT's attention dropout (drawn inside PyG's conv) runs the k-hop subgraph tasks one by one; "
                         "a CUDA graph replays only their padded union (build the GNN with attn_dropout=0)")


def _union_ineligible(extractor: Any) -> str | None:
    """Why GAT's k-hop subgraph unions cannot be captured for this extractor (its attention dropout), or None."""
    if getattr(extractor, "_draws_attention_dropout", False):
        return GAT_ATTENTION_DROPOUT
    return None


def _graph_input_ok(side: Any) -> bool:
    """A whole-graph input the captured step can take: its graph (dense features) fixed, only its node ids data."""
    from cmlgraph.backbones.gnn_ops import is_sparse
    from cmlgraph.graphs.types import GraphInput

    return isinstance(side, GraphInput) and side.batch_whole and not side.local and not is_sparse(side.x)


def _graph_inputs_marked(episodes: Sequence[Episode], flag: str) -> bool:
    """Whether every input side of the episodes is a ``GraphInput`` with ``flag`` set, looked up without importing
    the graph stack (as :func:`is_ball_batch`)."""
    types = sys.modules.get("cmlgraph.graphs.types")
    return types is not None and bool(episodes) and all(
        type(x := getattr(ep, s)) is types.GraphInput and getattr(x, flag) for ep in episodes
        for s in ("support_x", "query_x"))


def is_plan_batch(episodes: Sequence[Episode]) -> bool:
    """Whether the episodes' inputs are k-hop computation-tree inputs (``GraphInput.local``)."""
    return _graph_inputs_marked(episodes, "local")


def is_union_batch(episodes: Sequence[Episode]) -> bool:
    """Whether the episodes' inputs are GAT's k-hop subgraphs (``GraphInput.subgraph``)."""
    return _graph_inputs_marked(episodes, "subgraph")


def is_matched_batch(episodes: Sequence[Episode]) -> bool:
    """Whether the episodes' inputs are AMM-GNN's matched inputs (looked up as :func:`is_ball_batch`)."""
    ammgnn = sys.modules.get("cmlgraph.backbones.ammgnn")
    return ammgnn is not None and bool(episodes) and all(
        isinstance(getattr(ep, s), ammgnn.MatchedInput) for ep in episodes for s in ("support_x", "query_x"))


def _plans_ineligible(extractor: Any) -> str | None:
    """Why computation-tree inputs cannot fill padded layouts for this extractor, or ``None``."""
    if not callable(getattr(extractor, "plan_reads", None)) or not getattr(extractor, "supports_plan", True):
        return (f"{type(extractor).__name__} has no padded computation-tree path (SGC, GCN, GraphSAGE, GIN and "
                "AMM-GNN have)")
    return None


def is_ball_batch(episodes: Sequence[Episode]) -> bool:
    """Whether the episodes' inputs are G-Meta ball inputs (without importing the graph stack, which pulls PyG:
    no ball input exists before :mod:`cmlgraph.graphs.balls` is loaded)."""
    balls = sys.modules.get("cmlgraph.graphs.balls")
    return balls is not None and bool(episodes) and all(
        isinstance(getattr(ep, s), balls.BallInput) for ep in episodes for s in ("support_x", "query_x"))


def _balls_ineligible(sides: Sequence[Any]) -> str | None:
    """Why G-Meta ball inputs cannot fill padded static layouts (:mod:`cmlgraph.backbones.ball_static`), or
    ``None``: an undirected graph, its features not binary-coded (sparse ones densify per union)."""
    from cmlgraph.backbones.gmeta import feature_codes

    index = sides[0].index
    if not index.symmetric:
        return "the graph is directed (its ball blocks have no symmetric pattern to pad to fixed buffers)"
    if feature_codes(index) is not None:
        return "the features are binary-coded (subset-sum tables are a CPU path)"
    return None


def _signature(side: Any) -> tuple[Any, ...]:
    """What must not change between the captured meta-batch and a replayed one: a tensor's shape and dtype; for a
    whole-graph input, its graph (the same feature tensor object: the domain's full graph) and its nodes' shape."""
    if isinstance(side, Tensor):
        return (tuple(side.shape), side.dtype)
    return ("graph", id(side.x), tuple(side.nodes.shape), side.nodes.dtype)


def static_copy(side: Any) -> Any:
    """The capture's input buffer for one side of an episode: a tensor's clone; for a whole-graph input, an input
    of the same graph with its own node-id buffer (and no per-input stores of the original)."""
    if isinstance(side, Tensor):
        return side.clone()
    return replace(side, nodes=side.nodes.clone())


def copy_into(dst: Any, src: Any) -> None:
    """Refill a capture input buffer (:func:`static_copy`) with the next meta-batch's values, asynchronously."""
    if isinstance(dst, Tensor):
        dst.copy_(src, non_blocking=True)
    else:
        dst.nodes.copy_(src.nodes, non_blocking=True)


def copy_targets(static: Sequence[Episode], episodes: Sequence[Episode]) -> None:
    """Refill the capture's fixed episodes' support and query targets with ``episodes``', asynchronously."""
    for dst, src in zip(static, episodes, strict=True):
        dst.support_y.copy_(src.support_y, non_blocking=True)
        dst.query_y.copy_(src.query_y, non_blocking=True)


def ineligible(cfg: Any, exp: Any, distributed: bool = False, episodes: Sequence[Episode] | None = None
               ) -> str | None:
    """Why this run's meta-step cannot be captured as a CUDA graph, or ``None`` if it can.

    Args:
        cfg: The run's resolved config.
        exp: The run's experiment (``algo``, ``model``, ``device``).
        distributed: Whether the run is one rank of ``torchrun`` (its gradients are reduced across ranks).
        episodes: A meta-batch of the run (checked to stack into fixed-shape tensors).
    """
    algo = exp.algo
    if torch.device(exp.device).type != "cuda":
        return f"the run is on {exp.device}, not a CUDA device (--device cuda)"
    why = config_ineligible(cfg)
    if why is not None:
        return why
    if type(algo) not in GRAPHABLE:
        return f"--algo {cfg.algo.algo} has its own meta-step; CUDA graphs cover {', '.join(GRAPHABLE_NAMES)}"
    if algo.first_order_at(0) is not None:
        return "the derivative order changes during training (MAML++'s annealing)"
    if algo.step_weights(0) is not None:
        return "multi-step loss weights change with the step"
    if distributed:
        return "under torchrun the gradients are reduced across processes each step"
    if episodes is not None:
        sides = [getattr(ep, side) for ep in episodes for side in ("support_x", "query_x")]
        if is_ball_batch(episodes):
            why = _balls_ineligible(sides)
            if why is not None:
                return why
        elif is_union_batch(episodes):
            why = _union_ineligible(getattr(getattr(exp, "model", None), "extractor", None))
            if why is not None:
                return why
        elif is_plan_batch(episodes) or is_matched_batch(episodes):
            why = _plans_ineligible(getattr(getattr(exp, "model", None), "extractor", None))
            if why is not None:
                return why
        elif not all(isinstance(v, Tensor) for v in sides):
            if not all(_graph_input_ok(v) for v in sides):
                return ("the episodes are graph inputs with data-dependent sizes (k-hop subgraphs, sparse features "
                        "of the whole graph; padding them to fixed buffers is not built)")
        if not can_stack(list(episodes)):
            return "the episodes differ in shape (padding to size buckets is not built)"
    return None


def check_mode(mode: Any) -> str:
    """``train.cuda_graphs`` as one of :data:`MODES` (raises ConfigError naming them otherwise)."""
    if mode not in MODES:
        raise ConfigError(f"train.cuda_graphs = {mode!r}: use auto, on or off")
    return str(mode)


def _close(a: Tensor, b: Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))


class GraphedMetaStep:
    """The run's meta-step, captured once and replayed (see the module docstring).

    Args:
        algo: The run's algorithm (one of :data:`GRAPHABLE`).
        model: The meta-model; its parameters are the graph's inputs in place (the optimizer updates them in place).
        loss_fn: The domain's loss.
        batched: ``train.batched`` as the meta-step takes it.
        strict: ``train.cuda_graphs: on``: a failed capture or check raises instead of falling back.
    """

    def __init__(self, algo: MetaAlgorithm, model: Any, loss_fn: Any, batched: bool | None,
                 strict: bool = False) -> None:
        self.algo, self.model, self.loss_fn, self.batched, self.strict = algo, model, loss_fn, batched, strict
        self.graph: Any = None
        self.static: list[Episode] = []
        self.buffers: Any = None  # padded plan or ball buffers (:mod:`.cuda_graph_plans`, :mod:`.cuda_graph_balls`)
        self.out: MetaStep | None = None
        self.failed: str | None = None  # why the run went back to eager
        self.grow_failed: str | None = None  # why growing the padded buffers failed (outgrowing batches: eager)
        self.replays = 0
        self._on: torch.device | None = None  # the parameters' device (:meth:`_device`)
        self.captures = 0

    def _eager(self, episodes: Sequence[Episode], step: int) -> MetaStep:
        return self.algo.meta_gradients(self.model, parameters_of(self.model), list(episodes), self.loss_fn, step,
                                        batched=self.batched)

    def _shapes(self, episodes: Sequence[Episode]) -> list[tuple[Any, ...]]:
        return [tuple(_signature(getattr(e, s)) for s in SIDES) for e in episodes]

    def _copy_in(self, episodes: Sequence[Episode]) -> None:
        if self.buffers is not None:
            self.buffers.copy_in(episodes)
            return
        for dst, src in zip(self.static, episodes, strict=True):
            for side in SIDES:
                copy_into(getattr(dst, side), getattr(src, side))

    def _device(self) -> torch.device:
        """The device of the meta-model's parameters (where the step runs), read once: every replay asks."""
        if self._on is None:
            self._on = next(iter(parameters_of(self.model).values())).device
        return self._on

    def _record(self, fn: Any) -> tuple[Any, MetaStep]:
        """``fn`` (the meta-step on the input buffers) warmed up on a side stream, then captured: the graph and
        its output buffers. Everything on the parameters' device, made current: streams and the capture are
        otherwise the current device's (``cuda:0`` in a process that never set one), and a capture on another
        device than the kernels' records nothing, so every replay would return the capture's gradients."""
        device = self._device()
        with torch.cuda.device(device):
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP):
                    fn()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the prefetch worker (train.prefetch, on for CUDA) may copy the next episodes meanwhile
            with torch.cuda.graph(graph, stream=torch.cuda.Stream(device), capture_error_mode="thread_local"):
                out = fn()
        return graph, out

    def _capture(self, episodes: Sequence[Episode], step: int, capacity: Any = None) -> None:
        self.graph, self.out, self.buffers = None, None, None
        stacked = bool(self.batched if self.batched is not None else len(episodes) > 1 and can_stack(list(episodes)))
        if is_ball_batch(episodes):  # padded static layouts (the batches' ball sizes vary)
            from cmlgraph.backbones.gmeta import MAX_ROWS
            from cmlgraph.train.cuda_graph_balls import BallBuffers

            max_rows = int(getattr(self.model.extractor, "max_rows", MAX_ROWS))
            self.buffers = BallBuffers(episodes, stacked, max_rows, capacity)
            self.static = self.buffers.static
        elif is_plan_batch(episodes):  # padded computation trees (the batches' plan sizes vary)
            from cmlgraph.train.cuda_graph_plans import PlanBuffers

            self.buffers = PlanBuffers(episodes, stacked, self.model.extractor, capacity)
            self.static = self.buffers.static
        elif is_union_batch(episodes):  # GAT's k-hop subgraphs: one padded union per side
            from cmlgraph.train.cuda_graph_unions import UnionBuffers

            self.buffers = UnionBuffers(episodes, stacked, capacity)
            self.static = self.buffers.static
        elif is_matched_batch(episodes):  # AMM-GNN: padded computation trees and fixed drawn rows
            from cmlgraph.train.cuda_graph_matched import MatchedBuffers

            self.buffers = MatchedBuffers(episodes, stacked, self.model.extractor, capacity)
            self.static = self.buffers.static
        else:
            self.static = [Episode(*(static_copy(getattr(e, s)) for s in SIDES)) for e in episodes]
        device = self._device()
        state = _rng_state(device)  # the warm-up and capture passes draw dropout masks: not the run's draws
        try:
            self.graph, self.out = self._record(lambda: self._eager(self.static, step))
        finally:
            _set_rng_state(device, state)
        self.captures += 1

    def _checked(self, episodes: Sequence[Episode], step: int, capacity: Any = None) -> MetaStep:
        """Capture, replay once and compare with the eager step on the same meta-batch (the RNG restored in
        between: G-Meta's dropout draws the same masks); the eager result is the step's. Raises on any failure."""
        self._capture(episodes, step, capacity)
        device = self._device()
        state = _rng_state(device)
        replayed = self._replay(episodes)
        _set_rng_state(device, state)
        # padded inputs: eager on the filled buffers (the same padded shapes, so the same dropout draws)
        eager = self._eager(self.static if self.buffers is not None else episodes, step)
        same = _close(replayed.loss.total, eager.loss.total) and all(
            _close(replayed.grads[k], eager.grads[k]) for k in eager.grads)
        if not same:
            raise RuntimeError("the captured meta-step differs from the eager one on the same meta-batch")
        return eager

    def _recapture(self, episodes: Sequence[Episode], step: int) -> MetaStep:
        """Capture again with buffers grown for ``episodes``; if that fails (memory, a layout too wide to pad), the
        working graph is kept, this batch steps eagerly and so do later batches that outgrow it (``grow_failed``)."""
        kept = (self.graph, self.out, self.buffers, self.static)
        try:
            return self._checked(episodes, step, self.buffers.needs(episodes))
        except Exception as exc:  # noqa: BLE001 - keep what works
            self.graph, self.out, self.buffers, self.static = kept
            self.grow_failed = f"{type(exc).__name__}: {exc}"
            return self._eager(episodes, step)

    def _capture_checked(self, episodes: Sequence[Episode], step: int, capacity: Any = None) -> MetaStep:
        """The first capture (:meth:`_checked`); on any failure the run goes eager (``on``: raises)."""
        try:
            return self._checked(episodes, step, capacity)
        except Exception as exc:  # noqa: BLE001 - any capture problem: eager from here on (or raise with on)
            self.graph, self.out, self.buffers = None, None, None
            self.failed = f"{type(exc).__name__}: {exc}"
            if self.strict:
                raise ConfigError(f"train.cuda_graphs on: capturing the meta-step failed ({self.failed}); use "
                                  f"--cuda-graphs off") from exc
            return self._eager(episodes, step)

    def __call__(self, episodes: Sequence[Episode], step: int) -> MetaStep:
        """The meta-step of ``episodes``: replayed where captured, else eager (the fallback, or a batch of another
        shape). Padded inputs (k-hop plans, G-Meta balls): a batch that outgrows the buffers is captured again with
        larger ones (at most :data:`MAX_CAPTURES` captures a run; later outgrowing batches step eagerly). A batch
        that runs in memory groups steps eagerly."""
        if self.failed is not None or self._grouped(episodes):
            return self._eager(episodes, step)
        if self.graph is None:
            return self._capture_checked(episodes, step)
        if self.buffers is not None:
            fit = self.buffers.fits(episodes)
            if fit is None:
                return self._eager(episodes, step)  # another shape, or several row groups: this step eager
            if not fit:
                if self.captures >= MAX_CAPTURES or self.grow_failed is not None:
                    return self._eager(episodes, step)
                return self._recapture(episodes, step)
        elif self._shapes(episodes) != self._shapes(self.static):
            return self._eager(episodes, step)  # another shape (e.g. a last short batch): this step eager
        return self._replay(episodes)

    def _grouped(self, episodes: Sequence[Episode]) -> bool:
        """Whether this meta-batch runs in memory groups (:func:`~cmlgraph.core.memory.training_spans`): such a step
        is eager (a capture records one pass over fixed buffers; the groups' passes read other inputs)."""
        device = self._device()
        return len(training_spans(self.model.extractor, episodes, self.algo.kept_passes(0), device)) > 1

    def _replay(self, episodes: Sequence[Episode]) -> MetaStep:
        assert self.graph is not None and self.out is not None
        self._copy_in(episodes)
        device = self._device()
        with torch.cuda.device(device) if device.type == "cuda" else nullcontext():  # (the CPU: tests' stand-in)
            self.graph.replay()
        self.replays += 1
        out = self.out  # fixed buffers: read (the optimizer step, the deferred losses) before the next replay
        loss = OuterLoss(meta=out.loss.meta, co=out.loss.co, total=out.loss.total)
        return MetaStep(grads=dict(out.grads), loss=loss)


def _rng_state(device: torch.device) -> Tensor:
    """The RNG state that a meta-step on ``device`` draws from (dropout masks)."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def make_graphed_step(cfg: Any, exp: Any, episodes: Sequence[Episode], batched: bool | None,
                      distributed: bool = False, console: Any = None) -> GraphedMetaStep | None:
    """The run's :class:`GraphedMetaStep` where ``train.cuda_graphs`` and :func:`ineligible` allow, else ``None``.

    Raises:
        ConfigError: ``train.cuda_graphs: on`` for a run that cannot be captured, naming why.
    """
    mode = check_mode(cfg.train.cuda_graphs)
    if mode == "off":
        return None
    why = ineligible(cfg, exp, distributed, episodes)
    if why is not None:
        if mode == "on":
            raise ConfigError(f"--cuda-graphs on: {why}; use --cuda-graphs auto or off")
        return None
    if console is not None:
        console.print("[dim]note: the meta-step runs as a CUDA graph (train.cuda_graphs; checked against the eager "
                      "step on the first meta-batch)[/dim]")
    return GraphedMetaStep(exp.algo, exp.model, exp.domain.loss_fn, batched, strict=mode == "on")


__all__ = ["GAT_ATTENTION_DROPOUT", "GRAPHABLE", "GRAPHABLE_NAMES", "GraphedMetaStep", "MODES", "SIDES",
           "check_mode", "config_ineligible", "copy_into", "copy_targets", "ineligible",
           "is_ball_batch", "is_matched_batch", "is_plan_batch", "is_union_batch", "make_graphed_step", "static_copy"]
