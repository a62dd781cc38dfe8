"""Many runs in one process (issue 18 item 5): runs that share a shape train in lockstep, their meta-steps fused.

Why: a GPU runs one few-shot meta-iteration as many tiny kernels and sits idle most of the time; ``compare``,
``reproduce`` and ``leaderboard`` train many runs that differ only in the seed or the ``--cml`` arm. Trained
together, the R runs' B tasks become R·B tasks of the existing task-batched path (``vmap``, or a GNN's
block-diagonal ``forward_tasks``): fewer, larger kernels.

Contract: each run keeps its own :class:`~cmlgraph.train.trainer.Trainer` (run folder, lock, generators, torch's
global RNG state, optimizer, best parameters, early stopping, checkpoints, ``metrics.jsonl``, ``summary.json``), so
each run's folder equals a separate ``cmlgraph train`` of it up to float rounding, and ``cmlgraph train --resume``
continues any one folder as it continues a normal run. Runs whose patience is spent drop out of the group; a run
that fails (an exception, a non-finite loss) is stopped alone, its folder left as a killed run's, the others go on.

What is fused (:func:`fusable`): the meta-gradients of runs at the same step with the same parameter names (same
``--cml`` arm) of algorithms whose objective is the mean of their per-task losses
(:meth:`~cmlgraph.algorithms.base.MetaAlgorithm.task_losses`, plus a regulariser each run adds on its own parameters:
AMM-GNN's) and whose meta-gradient is that objective's gradient at a point they name (``gradient_point``): MAML,
FOMAML, ANIL, BOIL, MAML++ (each task steps with its own run's learned rates), Sharp-MAML (both passes fused, each
run's SAM point from its own gradient), ProtoNet, G-Meta, AMM-GNN, and their noise control, whose run would batch its
tasks (``train.batched`` on, or ``auto`` where the backbone batches: MLP and GNNs always, Conv4 on GPU) and whose
episodes stack (fixed-shape tensors; graph computation-tree inputs, or SGC's whole-graph inputs, of one shared full
graph; G-Meta's balls of one shared ball index). A run whose meta-step draws from torch's global RNG (checked on its
first step) is fused only where its encoder draws from per-run streams (``random_streams``: the dropout of G-Meta,
AMM-GNN and the GNN backbone, :mod:`cmlgraph.core.streams`); a fused step that still moves the global RNG (GAT's
attention dropout) is redone run by run and those runs are not fused again. Stepped one after another inside the
lockstep loop instead: a step that logs gradient diagnostics, episodes that do not stack (graphs that differ between
the runs) and other runs that draw from the global RNG. The validations due after a lockstep are
scored in one pass where the runs share the method's prediction and shape (each task adapted from its own run's
parameters: :func:`~cmlgraph.train.evaluate.evaluate_runs`; not ProtoNet, MAML++, or tasks that run one by one);
so are the runs' final tests (each from its own best-validation parameters); the best-validation bookkeeping,
checkpoints and files are per run.

Each run's ``wall_time_s`` and ``time_s`` count the group's wall time while the run was in it (its own steps,
validations and its share of the fused steps in full), so they add up to more than the group's wall time.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from cmlgraph.algorithms.base import MetaAlgorithm, MetaStep, add_gradient_noise
from cmlgraph.backbones.base import auto_batched
from cmlgraph.config import Config
from cmlgraph.core.episode import Episode, can_stack, stack
from cmlgraph.core.memory import training_spans
from cmlgraph.core.model import parameters_of
from cmlgraph.core.objective import OuterLoss
from cmlgraph.core.streams import generator_from_state, task_streams
from cmlgraph.errors import CmlgraphError, ConfigError, NumericalError
from cmlgraph.runs import FAILED_FILE
from cmlgraph.train.fuse_policy import FusePolicy
from cmlgraph.train.interrupt import StopRequest, announce, run_stopped, stopped_gracefully
from cmlgraph.train.io import MetricsLog, kill_point
from cmlgraph.train.trainer import Trainer, prepare

#: Settings that may differ inside a group: the seed and the arm. Everything else is the group's shape.
_FREE = {("train", "seed"), ("algo", "cml")}


def check_parallel_runs(n: Any, flag: str = "--parallel-runs") -> int:
    """``n`` as a group size of at least 1 (raises ConfigError naming the fix otherwise)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{flag} {n!r}: give a whole number of runs per process, at least 1 (1 trains the runs "
                          f"one after another)")
    return n


def shape_key(cfg: Config) -> str:
    """What runs must share to train together: the resolved config without the seed, the arm and the run folder."""
    d = prepare(cfg).to_dict()
    d.pop("run", None)
    for section, key in _FREE:
        d.get(section, {}).pop(key, None)
    return json.dumps(d, sort_keys=True, default=str)


def group_runs(cfgs: Sequence[Config], n: int) -> list[list[int]]:
    """Indices of ``cfgs`` in groups of at most ``n`` runs of one shape (:func:`shape_key`).

    Within a shape, runs of the same arm come together (they fuse with each other, :func:`fusable`); groups keep
    the order in which their shapes first appear.
    """
    check_parallel_runs(n)
    shapes: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        shapes.setdefault(shape_key(cfg), []).append(i)
    groups: list[list[int]] = []
    for members in shapes.values():
        members = sorted(members, key=lambda i: (bool(prepare(cfgs[i]).algo.cml), members.index(i)))
        groups += [members[j:j + n] for j in range(0, len(members), n)]
    return groups


@dataclass
class ParallelResult:
    """One run of a group: its folder and summary, or the error that stopped it (its folder then kept as a killed
    run's, resumable with ``cmlgraph train --resume``)."""

    cfg: Config
    run_dir: Path | None = None
    summary: dict[str, Any] | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Member:
    trainer: Trainer
    result: ParallelResult
    log: MetricsLog | None = None
    rng: Tensor | None = None
    cuda_rng: list[Tensor] = field(default_factory=list)
    global_rng_free: bool | None = None  # whether its meta-step leaves torch's global RNG untouched (first step)
    streams_ok: bool = True  # False once a fused step with its own streams still drew from the global RNG
    fused_steps: int = 0  # meta-steps computed together with other runs (said on the console at the end)
    fused_validations: int = 0  # validations scored in one pass with other runs' (said on the console too)
    shown: float | None = None  # the last loss read back, for the progress bar (none before the first)

    @property
    def ok(self) -> bool:
        return self.result.error is None

    @property
    def steps(self) -> int:
        """Meta-steps the run trains: its ``train.steps``; 0 for a training-free baseline (whose whole run is done
        when it opens)."""
        return int(self.trainer.cfg.train.steps) if getattr(self.trainer.exp.algo, "trains", True) else 0

    def validates_at(self, step: int) -> bool:
        """Whether the run validates after meta-step ``step`` (every ``val_every`` steps, and at its last)."""
        return step % int(self.trainer.cfg.train.val_every) == 0 or step == self.steps

    def active(self) -> bool:
        t = self.trainer
        return self.ok and t.step < self.steps and not t._patience_spent()


def _device_states(device: torch.device) -> list[Tensor]:
    """The states of torch's global generators of ``device`` besides the CPU's (a CUDA run's dropout draws from the
    CUDA one); none for a CPU run."""
    return list(torch.cuda.get_rng_state_all()) if device.type == "cuda" and torch.cuda.is_available() else []


def _set_device_states(device: torch.device, states: Sequence[Tensor]) -> None:
    """Set the generators that :func:`_device_states` read (nothing for a CPU run or no states)."""
    if states:
        torch.cuda.set_rng_state_all(list(states))


@contextmanager
def _own_rng(m: _Member) -> Iterator[None]:
    """Torch's global RNGs as the run would have them alone (each separate run seeds and draws its own): the CPU's
    and, for a CUDA run, the CUDA ones."""
    device = m.trainer.exp.device
    outer, outer_device = torch.get_rng_state(), _device_states(device)
    if m.rng is not None:
        torch.set_rng_state(m.rng)
    _set_device_states(device, m.cuda_rng)
    try:
        yield
    finally:
        m.rng = torch.get_rng_state()
        m.cuda_rng = _device_states(device)
        torch.set_rng_state(outer)
        _set_device_states(device, outer_device)


def fusable(trainer: Trainer) -> bool:
    """Whether a run's meta-steps can be fused with others' (see the module docstring); the per-step conditions
    (same step and arm, no diagnostics, stacking episodes, no global RNG) are checked in the loop."""
    cfg, e = trainer.cfg, trainer.exp
    algo_type = type(e.algo)
    if algo_type.meta_gradients is not MetaAlgorithm.meta_gradients or algo_type.objective is not \
            MetaAlgorithm.objective:
        return False
    batched = {"auto": auto_batched(e.model.extractor, e.device), "on": True, "off": False}[cfg.train.batched]
    return batched is not False and int(cfg.train.meta_batch) >= 1 and not trainer.dist.active


def _stream_aware(trainer: Trainer) -> bool:
    """Whether the run's encoder draws from each run's own stream inside a fused meta-step (``random_streams``:
    G-Meta, AMM-GNN, the GNN backbone; :mod:`cmlgraph.core.streams`), so a meta-step that draws from torch's global
    RNG (dropout) can still be fused."""
    return bool(getattr(trainer.exp.model.extractor, "random_streams", False))


def _run_generator(m: _Member) -> torch.Generator | None:
    """A generator in the run's own RNG state on its device (what its global RNG would draw alone); ``None``
    where that state is not known yet."""
    device = m.trainer.exp.device
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return generator_from_state(m.cuda_rng[index], device) if len(m.cuda_rng) > index else None
    return generator_from_state(m.rng, "cpu") if m.rng is not None and device.type == "cpu" else None


def _global_states(device: torch.device) -> list[Tensor]:
    return [torch.get_rng_state(), *_device_states(device)]


def _same(a: Tensor, b: Tensor) -> bool:
    if a.layout != b.layout or a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.layout == torch.sparse_csr:
        return (torch.equal(a.crow_indices(), b.crow_indices()) and torch.equal(a.col_indices(), b.col_indices())
                and torch.equal(a.values(), b.values()))
    if a.is_sparse:
        a, b = a.coalesce(), b.coalesce()
        return torch.equal(a.indices(), b.indices()) and torch.equal(a.values(), b.values())
    return torch.equal(a, b)


def _share_graph(members: Sequence[_Member]) -> None:
    """Let the runs of one graph use one copy of its full-graph tensors (same values: their episodes then stack
    into one batch, and the graph sits once in memory): computation-tree (k-hop) inputs and AMM-GNN's full graph
    share the domain's full-graph tensors, G-Meta its ball index."""
    first = members[0].trainer.exp
    device = first.device
    kind = getattr(first.domain, "kind", None)  # TLP's encoders (G-Meta, AMM-GNN)
    if kind == "gmeta" and hasattr(first.domain, "ball_index"):
        index = first.domain.ball_index(device)
        for m in members[1:]:
            d = m.trainer.exp.domain
            if getattr(d, "kind", None) == "gmeta" and _same_graph(d, first.domain):
                d._index[str(device)] = index
        return
    if not _whole_graph_inputs(first.domain) or not hasattr(first.domain, "_full_graph"):
        return
    shared = first.domain._full_graph(device)
    for m in members[1:]:
        d = m.trainer.exp.domain
        if not _whole_graph_inputs(d) or not hasattr(d, "_full"):
            continue
        if _same_graph(d, first.domain):
            d._full[str(device)] = shared


def _whole_graph_inputs(domain: Any) -> bool:
    """Whether the domain's episodes read its full-graph tensors: computation trees, the ``full`` mode, AMM-GNN."""
    return bool(getattr(domain, "trees", False) or getattr(domain, "mode", None) == "full"
                or getattr(domain, "kind", None) == "ammgnn")


def _same_graph(a: Any, b: Any) -> bool:
    return _same(a.graph.edge_index, b.graph.edge_index) and _same(a.graph.x, b.graph.x)


class ParallelTrainer:
    """Trains several configs of one shape in one process, in lockstep (see the module docstring).

    Args:
        cfgs: The runs' configs (their ``run`` sections name the folders, as for :class:`Trainer`).
        console: Where the runs print (each line as a separate run prints it); quiet when ``None``.
        progress: Show one progress bar per run.

    Raises:
        ConfigError: No configs, or configs of different shapes (:func:`shape_key`), or under ``torchrun``.
    """

    def __init__(self, cfgs: Sequence[Config], console: Console | None = None, progress: bool = True) -> None:
        if not cfgs:
            raise ConfigError("no runs to train together; give at least one config")
        keys = {shape_key(c) for c in cfgs}
        if len(keys) > 1:
            raise ConfigError(f"{len(cfgs)} runs of {len(keys)} different shapes cannot train together (only the "
                              f"seed and --cml may differ); group them with cmlgraph.train.parallel.group_runs")
        self.console = console or Console(quiet=True)
        self.progress = progress
        self.members: list[_Member] = []
        for cfg in cfgs:  # each built as its own run builds it: seeded model init, then the folder
            result = ParallelResult(cfg)
            trainer = Trainer(cfg, self.console, progress=False)
            if trainer.dist.active:
                raise ConfigError("--parallel-runs trains several runs in one process; under torchrun each process "
                                  "trains one run: use --parallel-runs 1")
            # the states its seeding left (a later run's Trainer seeds the global generators again), the device's too
            self.members.append(_Member(trainer, result, rng=torch.get_rng_state(),
                                        cuda_rng=_device_states(trainer.exp.device)))

    def run(self) -> list[ParallelResult]:
        """Open every run folder, train the group in lockstep, test each run; one result per config, in order."""
        try:
            _share_graph(self.members)  # before any run evaluates: its graph is then the shared one from the start
            for m in self.members:
                self._guarded(m, lambda m=m: self._open(m))
            self._loop()
            self._test_together([m for m in self.members if m.ok and m.log is not None])
            for m in self.members:
                if m.ok and m.result.summary is None:  # a training-free baseline was tested in _open already
                    if len(self.members) > 1 and m.trainer.run_dir is not None:  # whose test lines follow
                        self.console.print(f"[bold]test of[/bold] {m.trainer.run_dir.name}")
                    self._guarded(m, lambda m=m: setattr(m.result, "summary", m.trainer.finish()))
        except KeyboardInterrupt as exc:  # Ctrl-C twice, or outside meta-training: where each run stands
            if not stopped_gracefully(exc):
                for m in self.members:
                    if m.ok and m.result.summary is None and m.trainer.run_dir is not None:
                        self.console.print(f"[yellow]interrupted:[/yellow] {m.trainer.interrupted_message()}")
                        announce()
            raise
        finally:
            for m in self.members:
                m.trainer._stop_prefetch()  # a prefetch worker never outlives its run (train.prefetch)
                m.trainer._release()
        return [m.result for m in self.members]

    # --- per run -------------------------------------------------------------------------------------------
    def _guarded(self, m: _Member, fn: Callable[[], Any]) -> None:
        """Run ``fn`` with the run's own RNG; an error stops this run only (its lock released, folder kept)."""
        try:
            with _own_rng(m):
                fn()
        except Exception as exc:  # noqa: BLE001 - one failing run must not stop the others
            m.result.error = exc
            if isinstance(exc, NumericalError):
                m.trainer.record_failure(exc)  # listed as failed, as the run alone would be
            m.trainer._stop_prefetch()
            m.trainer._release()
            where = f" ({m.trainer.run_dir})" if m.trainer.run_dir is not None else ""
            self.console.print(f"[red]run{where} stopped: {type(exc).__name__}: {exc}[/red]")

    def _open(self, m: _Member) -> None:
        t = m.trainer
        if t.run_dir is None:
            t.open_run()
        m.result.run_dir = t.run_dir
        assert t.run_dir is not None
        (t.run_dir / FAILED_FILE).unlink(missing_ok=True)  # tried again: not failed until it fails (as Trainer.run)
        m.log = MetricsLog(t.run_dir / "metrics.jsonl")
        t._pending = []  # deferred losses: read back only when logged, as a run alone does
        from cmlgraph.train.trainer import _arm_label

        cfg, e = t.cfg, t.exp
        self.console.print(f"[bold]run[/bold] {t.run_dir}  ({e.domain.name}, {cfg.algo.algo}{_arm_label(cfg)}, "
                           f"{m.steps if e.algo.trains else 'training-free, 0'} steps; in a group of "
                           f"{len(self.members)})" + (f"  resumed at step {t.step}" if t.step else ""))
        for note in [*e.domain.notes, *getattr(t, "_notes", [])]:  # the run's memory groups too
            self.console.print(f"[yellow]note:[/yellow] {note}")
        if not e.algo.trains:  # a training-free baseline: its whole run now (no lockstep to join)
            m.result.summary = t._fit_training_free()
            m.trainer._release()
            m.log = None
            return
        if t.step == 0 and t.best is None and m.steps > 0:
            t._validate_start(m.log)

    def _after_step(self, m: _Member, record: dict[str, Any], seconds: float) -> None:
        """What :meth:`Trainer._run` does after a meta-step: loss guard, validation, log line, checkpoint."""
        t, cfg = m.trainer, m.trainer.cfg
        t0 = time.perf_counter()
        t.step += 1
        if t._flush_due(record, m.steps):  # as Trainer._run: before any log line, validation or checkpoint
            t._flush()  # raises on a non-finite step (nan_policy stop)
        kill_point("step_end")
        if m.validates_at(t.step):
            record.update(t._validate())
        t.elapsed += seconds + time.perf_counter() - t0
        if isinstance(record.get("loss"), float):  # read back (flushed)
            m.shown = record["loss"]
        if t.step % cfg.train.log_every == 0 or "val" in record or "diag" in record:
            record["time_s"] = round(t.elapsed, 3)
            assert m.log is not None
            m.log.append(record)
            kill_point("log")
        if t.step % cfg.train.checkpoint_every == 0 or "val" in record:
            t.save_checkpoint()

    # --- the lockstep loop ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        from cmlgraph.train.progress import bar_info, run_progress

        # as a run alone shows it: the last logged loss and the best validation score, per run
        first = self.members[0].trainer
        # fused eager steps or each run's CUDA graph: timed on the device where the runs' steps are captured
        self.policy = FusePolicy(str(first.cfg.train.cuda_graphs), first.exp.device, say=self.console.print)
        with (run_progress(self.console, self.progress and any(m.active() for m in self.members)) as bar,
              StopRequest(self.console.print) as stop):
            tasks = {id(m): bar.add_task(f"meta-training {m.trainer.run_dir.name if m.trainer.run_dir else ''}",
                                         total=m.steps, completed=m.trainer.step, info="")
                     for m in self.members if m.active()}
            while True:
                active = [m for m in self.members if m.active()]
                for m in self.members:
                    if not m.active():
                        m.trainer._stop_prefetch()  # done (steps, patience) or failed: its worker joined now
                if stop.requested:  # also after the last steps: the group's tests are not run
                    self._stop_on_request(active or [m for m in self.members if m.ok and m.log is not None],
                                          stop.signum)
                if not active:
                    break
                self._lockstep(active)
                for m in active:
                    if id(m) in tasks:
                        t = m.trainer
                        info = bar_info(bool(getattr(t.exp.algo, "cml", False)), m.shown, t.best)
                        bar.update(tasks[id(m)], completed=t.step, info=info)
        trained = [m for m in self.members if m.log is not None]
        if len(trained) > 1:  # say what the group gained: which runs' steps were fused (docs/gpu.md)
            self.console.print("meta-steps fused with other runs: " + ", ".join(
                f"{m.trainer.run_dir.name if m.trainer.run_dir else '?'} {m.fused_steps}/{m.trainer.step}"
                for m in trained))
            if any(m.fused_validations for m in trained):
                self.console.print("validations scored with other runs': " + ", ".join(
                    f"{m.trainer.run_dir.name if m.trainer.run_dir else '?'} {m.fused_validations}"
                    for m in trained))

    def _stop_on_request(self, active: list[_Member], signum: int | None = None) -> None:
        """Ctrl-C was pressed or SIGTERM received (``signum``): every run still training writes a checkpoint at its
        step (as :meth:`Trainer._stop_on_request`; a run whose pending steps turn out non-finite fails as it would
        have), then the group stops.

        Raises:
            KeyboardInterrupt: Always after Ctrl-C, naming each run's folder and step; after SIGTERM
                :class:`~cmlgraph.train.interrupt.RunTerminated` (exit status 143).
        """
        lines = []
        for m in active:
            self._guarded(m, m.trainer.checkpoint_now)
            if m.ok:
                lines.append(m.trainer.interrupted_message())
        for line in lines:
            self.console.print(f"[yellow]stopped:[/yellow] {line}")
        announce()
        raise run_stopped("; ".join(lines) or "every run of the group had stopped", signum or signal.SIGINT)

    def _lockstep(self, active: list[_Member]) -> None:
        """One meta-step of every active run: fused where possible, else one run after another."""
        alone: list[_Member] = []
        fused: dict[tuple[Any, ...], list[_Member]] = {}
        for m in active:
            t = m.trainer
            diag = t.cfg.train.diag_every > 0 and (t.step + 1) % t.cfg.train.diag_every == 0
            draws_ok = m.global_rng_free or (m.global_rng_free is False and m.streams_ok and _stream_aware(t))
            if draws_ok and not diag and fusable(t) and self.policy.fuses and not _draws_over_padding(m):
                key = (t.step, tuple((k, tuple(p.shape)) for k, p in parameters_of(t.exp.model).items()))
                fused.setdefault(key, []).append(m)
            else:
                alone.append(m)
        self._stepped: list[tuple[_Member, dict[str, Any], float]] = []
        before = {id(m): m.fused_steps for m in active}  # which runs' steps this lockstep fused
        self.policy.begin()
        for group in fused.values():
            if len(group) == 1:
                alone += group
            else:
                self._fused_step(group)
        for m in alone:
            self._alone_step(m)
        stepped, self._stepped = self._stepped, []
        running = [m for m in active if m.ok]
        self.policy.end(len(stepped), [m.trainer for m in running],
                        fused=sum(m.fused_steps > before[id(m)] for m in active),
                        padded_draws=bool(running) and all(_draws_over_padding(m) for m in running))
        shared = self._validate_together([m for m, _, _ in stepped])
        for m, record, seconds in stepped:
            self._guarded(m, lambda m=m, record=record, seconds=seconds: self._after_step(
                m, record, seconds + shared.get(id(m), 0.0)))
            m.trainer.fused_val = None  # used by its validation, or unused where _after_step stopped the run

    def _test_together(self, members: list[_Member]) -> None:
        """The trained runs' final tests in one pass where they can (as :meth:`_validate_together`), each from
        its own best-validation parameters; each result is left on its trainer (``fused_test``) for
        :meth:`~cmlgraph.train.trainer.Trainer.finish`. Runs that cannot share one are tested alone there."""
        ready = []
        for m in members:
            t = m.trainer
            try:
                if t.best_params is not None:
                    t.exp.model.load_state_dict(t.best_params)  # what finish tests (it loads them again)
                ready.append(m)
            except Exception:  # noqa: BLE001 - finish loads them again, where an error stops that run only
                continue
        for group, results, _ in self._evaluate_together(ready, "test_raws"):
            for m, res in zip(group, results, strict=True):
                m.trainer.fused_test = res
            self.console.print("test tasks scored in one pass: " + ", ".join(
                m.trainer.run_dir.name if m.trainer.run_dir else "?" for m in group))

    def _evaluate_together(self, members: list[_Member], which: str
                           ) -> Iterator[tuple[list[_Member], list[dict[str, Any]], float]]:
        """Members grouped by method, device and parameter shapes, each group's ``which`` tasks (``val_raws`` or
        ``test_raws``) scored in one pass: ``(group, results, seconds)`` for the groups that could be
        (:func:`~cmlgraph.train.evaluate.runs_fusable`, stacking episodes). Any error leaves a group to its runs,
        which then evaluate alone (where an error stops that run only)."""
        from cmlgraph.train.evaluate import evaluate_runs, runs_fusable
        from cmlgraph.train.prefetch import use_prefetch

        groups: dict[tuple[Any, ...], list[_Member]] = {}
        for m in members:
            t = m.trainer
            try:
                if getattr(t, which):
                    key = (type(t.exp.algo), str(t.exp.device),
                           tuple((k, tuple(p.shape)) for k, p in parameters_of(t.exp.model).items()))
                    groups.setdefault(key, []).append(m)
            except Exception:  # noqa: BLE001 - evaluated alone
                continue
        for group in groups.values():
            t0 = time.perf_counter()
            try:
                first = group[0].trainer.exp
                params = [parameters_of(m.trainer.exp.model) for m in group]
                if not runs_fusable(first.algo, first.model, params, first.device):
                    continue
                results = evaluate_runs(first.algo, first.model, [(p, m.trainer.exp.domain, getattr(m.trainer, which))
                                                                  for p, m in zip(params, group, strict=True)],
                                        first.device, prefetch=use_prefetch(group[0].trainer.cfg.train.prefetch,
                                                                            first.device))
            except Exception:  # noqa: BLE001 - each run then evaluates alone
                results = None
            if results is not None:
                yield group, results, time.perf_counter() - t0

    def _validate_together(self, members: list[_Member]) -> dict[int, float]:
        """The validations due after this lockstep, several runs' in one pass where they can
        (:func:`~cmlgraph.train.evaluate.evaluate_runs`): each result is left on its trainer (``fused_val``) for
        :meth:`_after_step`; returns the seconds each such run spent in it (the whole pass, as for fused steps).
        Runs that cannot share one (another method, shape or graph) validate alone in :meth:`_after_step`."""
        due = [m for m in members if m.ok and m.validates_at(m.trainer.step + 1)]  # _after_step counts the step
        seconds: dict[int, float] = {}
        for group, results, spent in self._evaluate_together(due, "val_raws"):
            for m, res in zip(group, results, strict=True):
                m.trainer.fused_val = res
                m.fused_validations += 1
                seconds[id(m)] = spent
        return seconds

    def _alone_step(self, m: _Member) -> None:
        """The run's own :meth:`Trainer._train_step`; on its first step, whether it touched the global RNG."""

        def step() -> None:
            kill_point("step_begin")
            t0 = time.perf_counter()
            # every global generator the step could draw from: on a GPU, dropout draws from the CUDA one
            before = _global_states(m.trainer.exp.device) if m.global_rng_free is None else None
            record = m.trainer._train_step()
            if before is not None:
                m.global_rng_free = all(torch.equal(a, b) for a, b in zip(
                    before, _global_states(m.trainer.exp.device), strict=True))
            self._stepped.append((m, record, time.perf_counter() - t0))  # _after_step once every run stepped

        self._guarded(m, step)

    def _fused_step(self, group: list[_Member]) -> None:
        """One meta-step of runs at the same step: their R·B tasks as one task batch (see :func:`fused_gradients`)."""
        t0 = time.perf_counter()
        drawn: list[tuple[_Member, list[Episode]]] = []
        for m in group:
            holder: list[list[Episode]] = []

            def draw(m: _Member = m, holder: list[list[Episode]] = holder) -> None:
                kill_point("step_begin")
                holder.append(list(m.trainer._next_batch()[1]))  # the run's own draw (its prefetch worker, if any)

            self._guarded(m, draw)
            if m.ok:
                drawn.append((m, holder[0]))
        steps: list[MetaStep] | None = None
        if (len(drawn) > 1 and can_stack([ep for _, eps in drawn for ep in eps])
                and not _over_budget(drawn[0][0].trainer, [ep for _, eps in drawn for ep in eps])):
            # runs whose step draws random numbers (dropout) draw them from their own streams, as alone
            gens = [_run_generator(m) for m, _ in drawn] if any(not m.global_rng_free for m, _ in drawn) else None
            device = drawn[0][0].trainer.exp.device
            before = _global_states(device)
            try:
                if gens is not None and any(g is None for g in gens):
                    raise CmlgraphError("a run's RNG state is not known yet")
                steps = fused_gradients([m.trainer for m, _ in drawn], [eps for _, eps in drawn], generators=gens)
                if gens is not None and not all(torch.equal(a, b) for a, b in zip(before, _global_states(device),
                                                                                   strict=True)):
                    for m, _ in drawn:  # a draw outside the streams: never fuse these runs again
                        m.streams_ok = False
                    steps = None
            except Exception:  # noqa: BLE001 - redone run by run below, where an error stops that run only
                steps = None
            if steps is not None and gens is not None:  # each run's RNG moves on as its own draws moved it
                for (m, _), gen in zip(drawn, gens, strict=True):
                    _set_run_state(m, gen)
        shared = time.perf_counter() - t0
        for i, (m, eps) in enumerate(drawn):

            def apply(m: _Member = m, eps: list[Episode] = eps, ms: MetaStep | None = None if steps is None
                      else steps[i]) -> None:
                t1 = time.perf_counter()
                t, e = m.trainer, m.trainer.exp
                if ms is None:
                    batched = {"auto": auto_batched(e.model.extractor, e.device), "on": True,
                               "off": False}[t.cfg.train.batched]
                    ms = e.algo.meta_gradients(e.model, parameters_of(e.model), eps, e.domain.loss_fn, t.step,
                                               batched=batched)
                else:
                    m.fused_steps += 1
                record = apply_meta_step(t, ms)
                self._stepped.append((m, record, shared + time.perf_counter() - t1))

            self._guarded(m, apply)


def _draws_over_padding(m: _Member) -> bool:
    """Whether the run's meta-step replays a CUDA graph over padded buffers (k-hop plans, GAT's unions, G-Meta's
    balls, AMM-GNN's trees) and draws random numbers (dropout): its masks are then drawn over the padded shapes,
    which a fused step, over the tasks' own rows from the run's stream, cannot reproduce. Such a run steps alone,
    replaying its graph, as it does alone: its folder then equals its run alone."""
    graphed = getattr(m.trainer, "_graphed", None)
    return (m.global_rng_free is False and graphed is not None and graphed.failed is None
            and graphed.buffers is not None)


def _set_run_state(m: _Member, gen: torch.Generator | None) -> None:
    if gen is None:
        return
    if gen.device.type == "cuda":
        index = gen.device.index if gen.device.index is not None else torch.cuda.current_device()
        m.cuda_rng[index] = gen.get_state()
    else:
        m.rng = gen.get_state()


def _over_budget(trainer: Trainer, episodes: Sequence[Episode]) -> bool:
    """Whether the fused runs' tasks would hold more activations together than one meta-step may
    (:func:`~cmlgraph.core.memory.training_spans`): then each run steps alone, its own meta-batch split as it
    would be alone."""
    e = trainer.exp
    return len(training_spans(e.model.extractor, episodes, e.algo.kept_passes(trainer.step), e.device)) > 1


def fused_gradients(trainers: Sequence[Trainer], episodes: Sequence[Sequence[Episode]],
                    generators: Sequence[torch.Generator] | None = None) -> list[MetaStep]:
    """The meta-gradients of R runs at the same step from one computation over their R·B tasks (two, where the
    algorithm takes its meta-gradient at another point: Sharp-MAML).

    Each task's initial parameters are its run's parameters expanded along the task dimension, so autograd sums
    each run's tasks' gradients into that run's parameters only; each run's outer loss is the mean over its own B
    tasks, as in :func:`cmlgraph.core.objective.outer_objective`, plus its algorithm's regulariser on its own
    parameters (AMM-GNN's). The noise control draws from each run's own algorithm generator, as alone;
    ``generators`` (one per run, in each run's RNG state) give stream-aware encoders each run's dropout draws
    (:mod:`cmlgraph.core.streams`).
    """
    first = trainers[0]
    algo, model, step, loss_fn = first.exp.algo, first.exp.model, first.step, first.exp.domain.loss_fn
    sizes = [len(eps) for eps in episodes]
    params = [parameters_of(t.exp.model) for t in trainers]
    ep = stack([e for eps in episodes for e in eps])

    def losses_at(points: Sequence[dict[str, Tensor]]) -> list[OuterLoss]:
        """Each run's outer loss at its point, from one pass over the R·B stacked tasks."""
        batch = {k: torch.cat([p[k].unsqueeze(0).expand(b, *p[k].shape) for p, b in zip(points, sizes, strict=True)])
                 for k in points[0]}  # learned rates (MAML++) too: a row of the run's rates per task
        meta, co = algo.task_losses(model, batch, ep, loss_fn, step, batched=True)
        out = []
        for m_r, c_r, p, eps in zip(meta.split(sizes), co.split(sizes), points, episodes, strict=True):
            mean_m, mean_c = m_r.mean(), c_r.mean()
            reg = algo.regulariser(p, eps)
            if reg is not None:
                mean_m = mean_m + reg
            out.append(OuterLoss(meta=mean_m, co=mean_c, total=mean_m + algo.cfg.gamma * mean_c if algo.cml
                                 else mean_m))
        return out

    def run_gradients(losses: Sequence[OuterLoss]) -> list[dict[str, Tensor]]:
        """Each run's gradients w.r.t. its own parameters (one backward pass: the runs' losses do not mix)."""
        flat = [p[k] for p in params for k in p]
        raw = iter(torch.autograd.grad(torch.stack([loss.total for loss in losses]).sum(), flat, allow_unused=True))
        return [{k: g if (g := next(raw)) is not None else torch.zeros_like(p[k]) for k in p} for p in params]

    with task_streams(sizes, generators) if generators is not None else nullcontext():
        losses = losses_at(params)
        grads = run_gradients(losses)
        points = [t.exp.algo.gradient_point(p, g) for t, p, g in zip(trainers, params, grads, strict=True)]
        if any(pt is not None for pt in points):  # Sharp-MAML: the meta-gradient at each run's SAM point
            grads = run_gradients(losses_at([p if pt is None else pt for p, pt in zip(params, points,
                                                                                      strict=True)]))
    out = []
    for t, g, loss in zip(trainers, grads, losses, strict=True):
        if t.exp.algo.cfg.control == "noise":
            g = add_gradient_noise(g, t.exp.algo.cfg.noise_std, t.exp.algo.generator)
        out.append(MetaStep(grads=g, loss=loss))
    return out


def apply_meta_step(trainer: Trainer, ms: MetaStep) -> dict[str, Any]:
    """The tail of a run's meta-step for a computed (fused) meta-step, as the run alone does it
    (:meth:`Trainer._step_record`: record, optimizer step, the losses and finiteness flag kept on the device until
    the run's next flush)."""
    return trainer._step_record(ms)


def train_parallel(cfgs: Sequence[Config], console: Console | None = None, progress: bool = True
                   ) -> list[ParallelResult]:
    """Train configs of one shape together (:class:`ParallelTrainer`); one result per config, in order."""
    return ParallelTrainer(cfgs, console, progress).run()


def raise_first_error(results: Sequence[ParallelResult]) -> None:
    """Re-raise the first run's error of a group (after the others finished), naming the run's folder."""
    for r in results:
        if r.error is not None:
            if isinstance(r.error, CmlgraphError):
                raise r.error
            raise CmlgraphError(f"run {r.run_dir or r.cfg.run.name} failed: {type(r.error).__name__}: "
                                f"{r.error}") from r.error


__all__ = ["ParallelResult", "ParallelTrainer", "apply_meta_step", "check_parallel_runs", "fused_gradients",
           "fusable", "group_runs", "raise_first_error", "shape_key", "train_parallel"]
