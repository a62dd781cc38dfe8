"""Meta-training: the outer loop shared by every domain and algorithm, writing the run folder of DESIGN §3.

Why it looks like this: all input is validated and the data loaded *before* the run folder is created, so a bad
flag leaves nothing behind; checkpoints hold every random generator's state so ``--resume`` continues exactly
where a killed run stopped.

Crash safety (DESIGN §3, issue 6). Each step runs: draw the meta-batch → update → validate (every ``val_every``
steps and at the last step) → append the metrics line → write ``checkpoint.pt`` (every ``checkpoint_every``
steps and at every validation, hence at every new best score). A run killed at any point and resumed restarts
from the last checkpoint, drops the metrics lines written after it and redoes those steps with the restored
generators, so on CPU it ends bit-identical to an uninterrupted run. ``summary.json`` is written last: its
presence means the run is finished.
"""

from __future__ import annotations

import copy
import math
import os
import shlex
import shutil
import signal
import time
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.progress import Progress

from cmlgraph.algorithms.base import MetaAlgorithm
from cmlgraph.algorithms.registry import get_algorithm
from cmlgraph.backbones.base import Backbone, auto_batched
from cmlgraph.config import Config, apply_overrides, check_types
from cmlgraph.core import memory
from cmlgraph.core.model import MetaModel, inference_state, parameters_of
from cmlgraph.domains.base import Domain
from cmlgraph.domains.registry import build_domain, fill_defaults
from cmlgraph.errors import CmlgraphError, ConfigError, DataError, NumericalError
from cmlgraph.runs import FAILED_FILE
from cmlgraph.train.distributed import setup as setup_distributed
from cmlgraph.train.distributed import teardown as teardown_distributed
from cmlgraph.train.evaluate import evaluate
from cmlgraph.train.guards import (
    baseline_warning,
    chance_warning,
    check_test_result,
    distinct_tasks_warning,
    make_guard,
    near_chance_warning,
    test_tasks_warning,
)
from cmlgraph.train.interrupt import StopRequest, announce, run_stopped, stopped_gracefully
from cmlgraph.train.io import (
    MetricsLog,
    kill_point,
    load_torch,
    remove_stale_temps,
    save_torch,
    write_json,
    write_yaml,
)
from cmlgraph.train.prefetch import Prefetcher, prefetch_workers, usable_cores, use_prefetch
from cmlgraph.train.progress import bar_info, run_progress, stage
from cmlgraph.train.run_dir import RunLock, create_run_dir
from cmlgraph.user_warnings import warn_user
from cmlgraph.validate import validate_config

if TYPE_CHECKING:
    from cmlgraph.train.build_processes import HostBuild


@dataclass
class Experiment:
    """Everything a run needs in memory: config, domain, model, algorithm, optimizer and generators."""

    cfg: Config
    domain: Domain
    model: MetaModel
    algo: MetaAlgorithm
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator
    device: torch.device


def prepare(cfg: Config) -> Config:
    """Fill the domain's defaults and validate every setting (raises ConfigError)."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"expected a cmlgraph Config, got {type(cfg).__name__}; build one with Config()")
    cfg = fill_defaults(check_types(copy.deepcopy(cfg)))
    validate_config(cfg)
    from cmlgraph.algorithms.registry import ALGORITHMS

    if not ALGORITHMS[cfg.algo.algo].trains:  # a training-free baseline: no co-learner to add (issue 17)
        cfg.algo.cml = False
    if cfg.algo.control in ("cl", "frozen-co"):
        # These controls bring their own co-learner term, whatever --cml says: one canonical config, so
        # `--cml --control frozen-co` and `--no-cml --control frozen-co` name, record and reuse the same run.
        cfg.algo.cml = False
    return cfg


def _arm_label(cfg: Config) -> str:
    """`` + CML``, ``, control cl`` (a paper control) or nothing, for the run's console line."""
    if cfg.algo.control != "none":
        return f", control {cfg.algo.control}"
    return " + CML" if cfg.algo.cml else ""


def build_model(cfg: Config, domain: Domain, algo: MetaAlgorithm) -> MetaModel:
    """A freshly initialised meta-model (seeded by ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    model = MetaModel(domain.build_extractor(), domain.out_dim, cfg.algo.co_depth if algo.cml else None,
                      co_hidden=cfg.algo.co_hidden, normalize=bool(cfg.model.normalize))
    if cfg.model.init == "pca":  # issue 17: the start keeps the geometry of the propagated features
        domain.init_extractor(model.extractor)
    if cfg.algo.head_init == "proto":  # θ is added to the prototype head: zero, the start is the formula
        from cmlgraph.core.proto_head import zero_head_

        zero_head_(model)
    algo.prepare(model)
    return model


def trained_parameters(cfg: Config, model: MetaModel) -> list[torch.nn.Parameter]:
    """The parameters the meta-optimizer updates: all of them, except the co-learner under ``--control frozen-co``
    (the paper's "random noise": a co-learner whose random initial weights never change)."""
    frozen = cfg.algo.control == "frozen-co"
    return [p for k, p in model.named_parameters() if not (frozen and k.startswith("co."))]


def build_experiment(cfg: Config, domain: Domain | None = None) -> Experiment:
    """Build domain, model, algorithm and optimizer from a prepared config."""
    domain = domain or build_domain(cfg)
    algo = get_algorithm(cfg.algo, total_steps=int(cfg.train.steps), seed=cfg.train.seed)
    device = torch.device(cfg.train.device)
    model = build_model(cfg, domain, algo).to(device)
    # nan_policy skip undoes a non-finite step on the device (Trainer._apply_if_finite): Adam's step count must be
    # a device tensor for that on CUDA (capturable), not the CPU tensor it reads on the host
    capturable = device.type == "cuda" and cfg.train.nan_policy == "skip"
    optimizer = torch.optim.Adam(trained_parameters(cfg, model), lr=cfg.train.meta_lr,
                                 weight_decay=cfg.train.weight_decay, capturable=capturable)
    scheduler = algo.make_scheduler(optimizer)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    return Experiment(cfg, domain, model, algo, optimizer, scheduler, generator, device)


def _baseline_features(baseline: dict[str, Any]) -> str | None:
    """The features the run's baseline check ran on (the below-baseline warning names them in the commands it
    recommends: ``--algo sgc-proto`` alone may choose others, ``data.features auto``), or ``None`` if unknown."""
    used = (baseline.get("settings") or {}).get("features")
    return str(used) if used else None


def _better(metric: str, new: float, best: float | None) -> bool:
    if not math.isfinite(new):  # a diverged validation score is never the best
        return False
    if best is None:
        return True
    return new < best if metric == "mse" else new > best


def _keep_capturable(optimizer: torch.optim.Optimizer, capturable: list[bool]) -> None:
    """Give the optimizer's groups back the ``capturable`` setting they were built with, after
    ``load_state_dict`` took the checkpoint's (a run resumed with another ``nan_policy``, or from a checkpoint
    written before ``skip`` made Adam capturable on CUDA), with Adam's step counts where that setting keeps them:
    on the parameter's device (float32) when capturable, else on the CPU."""
    for group, want in zip(optimizer.param_groups, capturable, strict=True):
        if "capturable" not in group or bool(group["capturable"]) == want:
            continue
        group["capturable"] = want
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if torch.is_tensor(state.get("step")):
                step = state["step"]
                state["step"] = step.to(p.device, torch.float32) if want else step.to("cpu", torch.float32)


def _finite_flag(step_grads: dict[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
    """Whether the loss and every gradient are finite, as a 0-d bool tensor on the run's device (no sync)."""
    checks = [torch.isfinite(loss.detach()).all()] + [torch.isfinite(g).all() for g in step_grads.values()]
    return torch.stack(checks).all()


def _run_device_rng(state: dict[str, Any], device: torch.device) -> torch.Tensor | None:
    """The CUDA RNG state a checkpoint holds for the run's device: its one state (``cuda_rng_device``), or, in a
    checkpoint of every device's states (before session 33), the state at the device's index where it has one."""
    states = state.get("cuda_rng") or []
    if state.get("cuda_rng_device"):
        return states[0] if states else None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return states[index] if index < len(states) else None


class Trainer:
    """Runs meta-training for one config and writes its run folder.

    Args:
        cfg: The run's config (defaults are filled and validated on construction).
        console: Where to print; a quiet console is used when ``None``.
        progress: Show progress bars.
    """

    def __init__(self, cfg: Config, console: Console | None = None, progress: bool = True) -> None:
        from cmlgraph.train.build_processes import in_build_process_start

        if in_build_process_start():  # an unguarded script, re-run by a spawned build process: no second run
            raise ConfigError("this script is being re-run by a starting prefetch build process: guard the code "
                              "that trains with `if __name__ == \"__main__\":` (build processes are spawned and "
                              "import the script), or use prefetch_workers=1")
        self.cfg = prepare(cfg)
        _check_prefetch_workers(self.cfg)
        self.dist = setup_distributed(str(self.cfg.train.device))  # one process (no group) unless under torchrun
        self.dist.check_config(self.cfg)
        self.console = (console if self.dist.is_main else None) or Console(quiet=True)
        self.show_progress = progress and self.dist.is_main
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.exp = self.dist.staged(build_experiment, self.cfg)
        finally:  # also when building fails: its warnings (a class dropped) explain the error
            self._replay_warnings(caught)
        self.dist.broadcast_module(self.exp.model)
        self.run_dir: Path | None = None
        self.step = 0
        self.best: float | None = None
        self.best_step = -1
        self.best_params: dict[str, torch.Tensor] | None = None
        self.skipped = 0
        self.stale = 0  # validations since the best one (early stopping, ``train.patience``)
        self.elapsed = 0.0
        self.ckpt_step: int | None = None
        self._lock: RunLock | None = None
        self._prefetcher: Prefetcher | None = None  # the next meta-batches, prepared ahead (train.prefetch)
        self.guard = make_guard(self.cfg, self.exp.domain, self.console)  # divergence warnings (issue 12)

    def _replay_warnings(self, caught: list[warnings.WarningMessage]) -> None:
        """Re-issue the warnings of building the experiment, except those a printing console shows as notes.

        Why: a user's graph fitted to the episode settings (a small class dropped) says so as a note of the run,
        which the console prints and ``summary.json`` keeps; with ``fit(verbose=True)`` or the CLI the same message
        also came as a Python warning, so it was shown twice. A quiet run (the API's default) keeps the warning.
        """
        loud = not getattr(self.console, "quiet", False)
        exp = getattr(self, "exp", None)
        notes = set(getattr(exp.domain, "notes", []) or []) if exp is not None else set()
        for w in caught:
            if loud and str(w.message) in notes:
                continue
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)

    # --- state -----------------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to resume: parameters, optimizer, schedule, generators, step, best score, config."""
        e = self.exp
        return {
            "step": self.step,
            "model": e.model.state_dict(),
            "optimizer": e.optimizer.state_dict(),
            "scheduler": e.scheduler.state_dict() if e.scheduler is not None else {},
            "generator": e.generator.get_state(),
            "algo_generator": e.algo.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            # the run's own device's state only: the machine that resumes may have fewer GPUs (or the run another)
            "cuda_rng": [torch.cuda.get_rng_state(e.device)] if self._uses_cuda() else [],
            "cuda_rng_device": True,
            "best": self.best,
            "best_step": self.best_step,
            "best_params": self.best_params or {},
            "skipped": self.skipped,
            "stale": self.stale,
            "elapsed": self.elapsed,
            "config": self.cfg.to_dict(),
            "graph_sha256": self.graph_fingerprint,  # a cmlgraph.fit graph's: resuming checks the one given
        }

    def load_checkpoint(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`checkpoint_state` dict.

        Raises:
            CmlgraphError: The dict is not a checkpoint of this run's model (missing keys, other shapes).
        """
        e = self.exp
        try:
            e.model.load_state_dict(state["model"])
            capturable = [bool(g.get("capturable", False)) for g in e.optimizer.param_groups]
            e.optimizer.load_state_dict(state["optimizer"])
            _keep_capturable(e.optimizer, capturable)
            if e.scheduler is not None and state["scheduler"]:
                e.scheduler.load_state_dict(state["scheduler"])
            e.generator.set_state(state["generator"])
            e.algo.generator.set_state(state["algo_generator"])
            torch.set_rng_state(state["torch_rng"])
            cuda_rng = _run_device_rng(state, e.device) if self._uses_cuda() else None
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, e.device)
            step = int(state["step"])
            best = state["best"]
            best_step, skipped, elapsed = int(state["best_step"]), int(state["skipped"]), float(state["elapsed"])
            best_params = dict(state["best_params"]) or None
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CmlgraphError(f"the checkpoint does not match this run's model and settings "
                                f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                                f"it was not written by this run") from None
        self.step = step
        self.best = None if best is None or math.isnan(float(best)) else float(best)
        self.best_step, self.skipped, self.elapsed = best_step, skipped, elapsed
        self.best_params = best_params
        self.stale = int(state.get("stale", 0))

    @cached_property
    def graph_fingerprint(self) -> str | None:
        """The fingerprint of the run's graph when it is an in-memory one (``cmlgraph.fit`` on a FewShotGraph, not
        stored with the run: :func:`cmlgraph.graphs.fingerprint.graph_fingerprint`); else ``None``."""
        graph = getattr(self.exp.domain, "graph", None)
        if self.cfg.data.task != "graph" or graph is None:  # first: sinusoid and image runs import no PyG
            return None
        from cmlgraph.train.reeval import _in_memory

        if not _in_memory(str(self.cfg.data.graph)):
            return None
        from cmlgraph.graphs.fingerprint import graph_fingerprint

        return graph_fingerprint(graph)

    def _uses_cuda(self) -> bool:
        return self.exp.device.type == "cuda" and torch.cuda.is_available()

    def save_checkpoint(self) -> None:
        """Atomically write ``checkpoint.pt``."""
        assert self.run_dir is not None
        if self.dist.is_main:  # only rank 0 writes files
            save_torch(self.run_dir / "checkpoint.pt", self.checkpoint_state(), event="checkpoint_write")
        self.ckpt_step = self.step

    # --- the loop --------------------------------------------------------------------------------------------
    def open_run(self) -> Path:
        """Create the run folder and write the config and the fixed evaluation episodes.

        Every episode set is drawn first, so impossible few-shot settings fail before the folder exists.
        """
        e = self.exp
        probe = e.domain.sample("train", 1, torch.Generator().manual_seed(0))  # its own generator: no draw moves
        self._notes: list[str] = []  # printed under the run's header
        if e.algo.trains:
            self._check_memory(probe[0])
        self.val_raws = e.domain.fixed("val", self.cfg.train.val_tasks, self.cfg.train.seed)
        self.test_raws = e.domain.fixed("test", int(self.cfg.train.test_tasks), self.cfg.train.seed)
        self.run_dir = Path(self.dist.on_rank0(self._create_folder))  # rank 0 names it; the others are told
        return self.run_dir

    def _check_memory(self, raw: Any) -> None:
        """Refuse a run one of whose tasks cannot fit the device (:func:`~cmlgraph.core.memory.check_task_memory`:
        a clear error instead of the kernel killing the process mid-run), and say when the meta-batch will run in
        task groups to fit the budget (:func:`~cmlgraph.core.memory.training_spans`)."""
        e, cfg = self.exp, self.cfg
        if type(e.model.extractor).pass_values is Backbone.pass_values:  # no estimate: small passes
            return
        ep = e.domain.materialize(raw, e.device)
        local = getattr(ep.support_x, "local", False) or getattr(ep.support_x, "subgraph", False)
        gnn = cfg.model.gnn
        what = f"{gnn.upper()} on {'its k-hop subgraph' if local else 'the whole graph'} of {e.domain.name}"
        steps = max(1, int(cfg.train.steps))
        passes = max(e.algo.kept_passes(s) for s in range(0, steps, max(1, steps // 50)))  # MAML++ changes order
        need = memory.check_task_memory(e.model.extractor, ep, passes, e.device, what, self._memory_fixes(local))
        batch = int(cfg.train.meta_batch)
        if need is None or batch < 2:
            return
        spans = memory.training_spans(e.model.extractor, [ep] * batch, passes, e.device)  # as the meta-step groups
        if len(spans) > 1:
            per = max(b - a for a, b in spans)
            budget = memory.memory_budget(e.device)
            self._notes.append(
                f"a meta-batch's {batch} tasks would hold about {need * batch / 1e9:.1f} GB of activations together "
                f"(budget {budget / 1e9:.1f} GB on {e.device.type}): they run in groups of about {per} "
                f"task{'s' if per > 1 else ''} whose gradients are summed (the same meta-gradient up to float "
                f"rounding; GNN dropout masks are drawn in another order, and the groups depend on the device's "
                f"memory)")

    def _memory_fixes(self, local: bool) -> list[str]:
        """The settings that would shrink this run's tasks, for :func:`~cmlgraph.core.memory.check_task_memory`'s
        message (those already at their smallest left out)."""
        cfg = self.cfg
        fixes = []
        if not local:
            fixes.append("--subgraph khop (each task's k-hop subgraph instead of the whole graph)")
        if cfg.model.gnn == "gat":
            fixes.append("--gnn gcn or --gnn sage (GAT keeps every edge's messages)")
        fixes.append(f"a smaller --hidden (now {cfg.model.hidden})")
        layers = cfg.model.layers or getattr(self.exp.domain, "gnn", {}).get("layers", 1)  # unset: chosen K
        if int(layers) > 1:
            fixes.append(f"fewer --layers (now {layers})")
        if not cfg.algo.first_order:
            fixes.append("--first-order")
        if int(cfg.algo.inner_steps) > 1:
            fixes.append(f"fewer --inner-steps (now {cfg.algo.inner_steps})")
        return fixes

    def _create_folder(self) -> Path:
        self.run_dir = create_run_dir(self.cfg)
        self._lock = RunLock(self.run_dir)
        try:
            from cmlgraph.provenance import provenance, yaml_header

            write_yaml(self.run_dir / "config.yaml", self.cfg.to_dict(),
                       header=yaml_header(provenance(self.cfg.train.device, self.cfg.data.data_root)))
            save_torch(self.run_dir / "test_episodes.pt", self.exp.domain.to_state(self.test_raws))
        except Exception:  # e.g. a full disk: leave no half-made folder behind
            self._release()
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None
            raise
        return self.run_dir

    def resume(self, run_dir: str | Path) -> None:
        """Continue a run from its last checkpoint (metrics after that step are dropped and redone).

        Without a checkpoint (killed before the first one) the run restarts from step 0 with the folder's config
        and test episodes. Temp files left by a killed writer are deleted.

        Raises:
            CmlgraphError: The folder is finished (has ``summary.json``), in use by another process, or its
                checkpoint is unreadable or belongs to other settings.
        """
        self._notes = []
        if self.exp.algo.trains:  # the machine may be another than the run's first: its memory checked again
            self._check_memory(self.exp.domain.sample("train", 1, torch.Generator().manual_seed(0))[0])
        self.run_dir = Path(run_dir)
        state = self.dist.on_rank0(self._resume_main)  # rank 0 reads the folder and shares its checkpoint
        if not self.dist.is_main and state is not None:
            self.load_checkpoint(state)
            self.ckpt_step = self.step

    def _resume_main(self) -> dict[str, Any] | None:
        assert self.run_dir is not None
        self._lock = RunLock(self.run_dir)
        try:
            self._resume()
        except BaseException:
            self._release()
            raise
        return self.checkpoint_state() if self.dist.active and self.ckpt_step is not None else None

    def _resume(self) -> None:
        assert self.run_dir is not None
        e, steps = self.exp, int(self.cfg.train.steps)
        if (self.run_dir / "summary.json").is_file():
            raise CmlgraphError(_finished_message(self.run_dir))
        remove_stale_temps(self.run_dir)
        self.val_raws = e.domain.fixed("val", self.cfg.train.val_tasks, self.cfg.train.seed)
        episodes = self.run_dir / "test_episodes.pt"
        if episodes.is_file():
            self.test_raws = e.domain.from_state(load_torch(episodes))
            if self.graph_fingerprint is not None:  # a user's graph, given again: the run's test tasks fit it
                from cmlgraph.train.reeval import check_episodes_fit

                check_episodes_fit(e.domain, self.test_raws, self.run_dir)
        else:  # killed before they were written: they are fixed by the seed
            self.test_raws = e.domain.fixed("test", int(self.cfg.train.test_tasks), self.cfg.train.seed)
            save_torch(episodes, e.domain.to_state(self.test_raws))
        ckpt = self.run_dir / "checkpoint.pt"
        if ckpt.is_file():
            try:
                state = load_torch(ckpt)
            except CmlgraphError as exc:  # say the way out: without it the run restarts at step 0
                raise CmlgraphError(f"{exc}. To restart this run from step 0 instead, delete {ckpt} and resume "
                                    f"again") from None
            if not isinstance(state, dict):
                raise CmlgraphError(f"{ckpt} is not a cmlgraph checkpoint (it holds a {type(state).__name__})")
            _check_same_config(ckpt, state.get("config"), self.cfg.to_dict())
            saved, given = state.get("graph_sha256"), self.graph_fingerprint
            if saved and given and saved != given:
                raise DataError(f"the graph given to resume {self.run_dir} is not the one it was trained on: graph "
                                f"{self.cfg.data.graph!r} has other edges, features, labels or class split "
                                f"(fingerprint {given[:19]}..., the run's {saved[:19]}...); pass the same graph")
            self.load_checkpoint(state)
            self.ckpt_step = self.step
            if self.step > steps:
                raise CmlgraphError(f"{ckpt} is at step {self.step}, past the run's {steps} steps; the folder's "
                                    f"config.yaml was edited")
        # Without a checkpoint the run restarts at step 0 and validates its start again: keep no old lines.
        MetricsLog(self.run_dir / "metrics.jsonl").truncate_after(self.step if self.ckpt_step is not None else -1)

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def run(self) -> dict[str, Any]:
        """Meta-train, evaluate the best-validation parameters on the test tasks, write the run folder."""
        if self.run_dir is None:
            self.open_run()
        (self.run_dir / FAILED_FILE).unlink(missing_ok=True)  # tried again (resumed): not failed until it fails
        try:
            return self._run()
        except NumericalError as exc:
            self.record_failure(exc)
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C: say where the run stands and how to continue it
            if not stopped_gracefully(exc) and self.dist.is_main:
                self.console.print(f"[yellow]interrupted:[/yellow] {self.interrupted_message()}")
                announce()
            raise
        finally:
            self._stop_prefetch()  # also on an error or Ctrl-C: the worker thread never outlives the run
            self._release()

    def record_failure(self, exc: BaseException) -> None:
        """Write ``failed.json`` (the error, its message and the step) into the run folder for a run stopped by a
        numerical failure (a non-finite step under ``nan_policy: stop``, every meta-batch skipped): ``cmlgraph runs``
        then lists it as failed, not as resumable, since resuming repeats the same steps and the same failure. A
        run that later finishes (``summary.json``) is listed as finished whatever this file says. Its ``step`` is
        the step that failed (``exc.step``; the losses are read back in batches, so the run may have gone on past
        it), else the run's step."""
        if self.run_dir is None or not self.dist.is_main:
            return
        step = getattr(exc, "step", None)
        write_json(self.run_dir / FAILED_FILE, {"error": type(exc).__name__, "message": str(exc),
                                                "step": self.step if step is None else int(step)})

    def _run(self) -> dict[str, Any]:
        assert self.run_dir is not None
        cfg, e = self.cfg, self.exp
        log = MetricsLog(self.run_dir / "metrics.jsonl")
        steps = int(cfg.train.steps)
        self.console.print(f"[bold]run[/bold] {self.run_dir}  ({e.domain.name}, {cfg.algo.algo}"
                           f"{_arm_label(cfg)}, {steps if e.algo.trains else 'training-free, 0'} steps)"
                           + (f"  resumed at step {self.step}" if self.step else ""))
        for note in [*e.domain.notes, *getattr(self, "_notes", [])]:
            self.console.print(f"[yellow]note:[/yellow] {note}")
        if not e.algo.trains:
            return self.dist.on_rank0(self._fit_training_free)
        with self._progress() as bar, StopRequest(self.console.print, enabled=not self.dist.active) as stop:
            self._bar = bar
            task = bar.add_task("meta-training", total=steps, completed=self.step, info="")
            if self.step == 0 and self.best is None and steps > 0:
                self._validate_start(log)
            self._pending: list[tuple[int, torch.Tensor, dict[str, Any]]] = []  # losses read back when needed
            shown: float | None = None  # no loss read back yet (none is shown, not "nan")
            while self.step < steps and not self._patience_spent():
                if stop.requested:
                    self._stop_on_request(stop.signum)
                kill_point("step_begin")
                t0 = time.perf_counter()
                record = self._train_step()
                self.step += 1
                if self._flush_due(record, steps):
                    self._flush()  # before any log line, validation or checkpoint: raises on a non-finite step
                    shown = record["loss"]
                kill_point("step_end")
                if self.step % int(cfg.train.val_every) == 0 or self.step == steps:
                    record.update(self._validate_on_rank0())  # the other ranks wait for rank 0
                self.elapsed += time.perf_counter() - t0
                if self.step % cfg.train.log_every == 0 or "val" in record or "diag" in record:
                    record["time_s"] = round(self.elapsed, 3)
                    if self.dist.is_main:
                        log.append(record)
                    kill_point("log")
                if self.step % cfg.train.checkpoint_every == 0 or "val" in record:
                    self.save_checkpoint()
                bar.update(task, advance=1, info=bar_info(bool(getattr(e.algo, "cml", False)), shown, self.best))
            if stop.requested:  # during the last step or its validation (or early stopping's): the test is not run
                self._stop_on_request(stop.signum)
        self._stop_prefetch()
        return self.dist.on_rank0(self.finish)

    def _stop_on_request(self, signum: int | None = None) -> None:
        """Ctrl-C was pressed or SIGTERM received (``signum``, :class:`~cmlgraph.train.interrupt.StopRequest`): read
        back the pending losses, write a checkpoint at this step unless one was just written, and stop.

        Raises:
            KeyboardInterrupt: Always after Ctrl-C, after the checkpoint (its message names the folder and the
                step); after SIGTERM :class:`~cmlgraph.train.interrupt.RunTerminated` (exit status 143).
            NumericalError: A pending step was non-finite (``nan_policy: stop``): the run failed before the request.
        """
        self.checkpoint_now()
        message = self.interrupted_message()
        self.console.print(f"[yellow]stopped:[/yellow] {message}")
        announce()
        raise run_stopped(message, signum or signal.SIGINT)

    def checkpoint_now(self) -> None:
        """Read back the pending losses and write a checkpoint at this step unless one was just written (a stop on
        request; raises NumericalError where a pending step was non-finite under ``nan_policy: stop``)."""
        self._flush()
        if self.ckpt_step != self.step:
            self.save_checkpoint()

    def interrupted_message(self) -> str:
        """Where a run stopped by Ctrl-C stands: its step, its last checkpoint, and the command that continues it."""
        if self.run_dir is None:
            return "stopped before the run folder was made; nothing to resume"
        folder = shlex.quote(str(self.run_dir))
        how = f"resume with `cmlgraph train --resume {folder}`"
        if self.graph_fingerprint is not None:  # a cmlgraph.fit graph: the run folder does not hold it
            how = (f"resume with cmlgraph.resume({str(self.run_dir)!r}, graph=the same FewShotGraph) (or save it "
                   f"with graph.save('g.npz') and run `cmlgraph train --resume {folder} --graph g.npz`)")
        if self.ckpt_step is None:
            return (f"at step {self.step} of {self.cfg.train.steps} with no checkpoint written yet: {how} restarts it "
                    f"at step 0")
        if self.ckpt_step == self.step:
            return f"at step {self.step} of {self.cfg.train.steps}, checkpoint written: {how}"
        return (f"at step {self.step} of {self.cfg.train.steps}; the last checkpoint is step {self.ckpt_step}: {how} "
                f"(it repeats the steps after {self.ckpt_step})")

    def _validate_start(self, log: MetricsLog) -> None:
        """Validate the initial parameters before the first meta-step (issue 17): model selection then keeps the
        start when meta-training only hurts (a destructive meta learning rate, a graph whose training classes
        teach nothing that transfers). Logged as step 0; a resumed run (step > 0) has it in its log already."""
        t0 = time.perf_counter()
        record: dict[str, Any] = {"step": 0, **self._validate_on_rank0(False)}
        self.elapsed += time.perf_counter() - t0
        record["time_s"] = round(self.elapsed, 3)
        if self.dist.is_main:
            log.append(record)

    def _fit_training_free(self) -> dict[str, Any]:
        """A training-free baseline (issue 17): no meta-training, its settings chosen on the validation tasks, then
        the same test as every run."""
        e = self.exp
        t0 = time.perf_counter()
        self.baseline_record = e.algo.fit(e.model, e.domain, self.val_raws, e.device, console=self.console)
        self.elapsed = time.perf_counter() - t0
        self.best, self.best_step = self.baseline_record.get("val"), 0
        settings = ", ".join(f"{k} {v}" for k, v in self.baseline_record["settings"].items())
        self.console.print(f"{e.algo.name}: training-free, 0 meta-training steps; settings {settings} (chosen on "
                           f"{self.baseline_record['selected_on']}: validation accuracy {self.best:.4f}) in "
                           f"{self.elapsed:.1f} s")
        return self.finish()

    def _validate_on_rank0(self, guard: bool = True) -> dict[str, Any]:
        """:meth:`_validate` on rank 0 (under torchrun; in one process, here), and every rank learns the early-stopping
        count it updated: each rank decides by :meth:`_patience_spent` whether to step again, and a rank that did not
        learn it stepped on into an all-reduce that rank 0, stopped early, never joined (a hang until the timeout)."""
        record, stale = self.dist.on_rank0(lambda: (self._validate(guard), self.stale))
        self.stale = stale
        return record

    def _patience_spent(self) -> bool:
        """Early stopping: ``train.patience`` validations in a row without a new best score."""
        patience = self.cfg.train.patience
        return patience is not None and self.stale >= patience

    def _progress(self) -> Progress:
        return run_progress(self.console, self.show_progress)

    def _prepare_batch(self, generator: torch.Generator | None) -> tuple[int, list[Any]]:
        """Sample the next meta-batch from ``generator`` and materialize this rank's episodes (host work: k-hop
        plans are built here); returns the meta-batch size and the episodes."""
        return self._build_batch(self._draw_batch(generator))

    def _draw_batch(self, generator: torch.Generator | None) -> tuple[int, list[Any]]:
        """The next meta-batch's draws from ``generator``: its size and this rank's raw episodes."""
        assert generator is not None
        raws = self.exp.domain.sample("train", int(self.cfg.train.meta_batch), generator)  # the full batch, every rank
        lo, hi = self.dist.slice_bounds(len(raws))  # this rank's episodes (all of them in one process)
        return len(raws), raws[lo:hi]

    def _build_batch(self, drawn: tuple[int, list[Any]]) -> tuple[int, list[Any]]:
        """Materialize drawn episodes and build their layouts (draws nothing: several batches may be built at once
        by the prefetcher's build threads, ``train.prefetch_workers``)."""
        e = self.exp
        size, raws = drawn
        episodes = [e.domain.materialize(r, e.device) for r in raws]
        if hasattr(e.domain, "prepare_batch"):  # layouts built ahead (G-Meta's balls), off the step (issue 18)
            e.domain.prepare_batch(episodes, self._batched())
        return size, episodes

    def _host_build(self, workers: int) -> HostBuild | None:
        """The domain's builds in ``workers`` worker processes (k-hop plans: :meth:`GraphDomain.host_build`), over
        this trainer's drawn ``(size, raws)``; ``None``: build threads."""
        e = self.exp
        hb = e.domain.host_build(e.device, workers) if hasattr(e.domain, "host_build") else None
        if hb is None:
            return None
        from cmlgraph.train.build_processes import HostBuild

        return HostBuild(hb.builder, send=lambda drawn: hb.send(drawn[1]),
                         finish=lambda drawn, result: (drawn[0], hb.finish(drawn[1], result)), close=hb.close)

    def _batched(self) -> bool | None:
        """``train.batched`` as the meta-step passes it: ``None`` (stack when the episodes stack), True or False."""
        e = self.exp
        return {"auto": auto_batched(e.model.extractor, e.device), "on": True, "off": False}[self.cfg.train.batched]

    def _next_batch(self) -> tuple[int, list[Any]]:
        """The next meta-batch: prepared ahead by the prefetch worker (``train.prefetch``, started on first use)
        with the same draws, ``exp.generator`` then left where drawing it here would have left it; else now."""
        if self._prefetcher is None and use_prefetch(self.cfg.train.prefetch, self.exp.device):
            workers = prefetch_workers(self.cfg.train.prefetch_workers, self.exp.device)
            # processes only where asked for by number (not auto): spawned processes import the user's script,
            # which must then be guarded
            host_build = self._host_build(workers) if self.cfg.train.prefetch_workers > 1 else None
            if host_build is not None:
                self.console.print(f"[yellow]note:[/yellow] prefetch: the k-hop plans are built in {workers} "
                                   "spawned processes (they take a few seconds to start)")
            self._prefetcher = Prefetcher(self._draw_batch, self.exp.generator, depth=2, name="cmlgraph-train",
                                          build=self._build_batch, workers=workers, host_build=host_build)
        if self._prefetcher is None:
            return self._prepare_batch(self.exp.generator)
        return self._prefetcher.next()

    def _stop_prefetch(self) -> None:
        """Stop and join the prefetch worker (batches prepared ahead are dropped; ``exp.generator`` is at the
        next batch not consumed, what checkpoints store)."""
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    def _flush_due(self, record: dict[str, Any], steps: int) -> bool:
        """Whether the meta-step just taken (``self.step``) needs its losses on the host: a metrics line, a
        validation, a checkpoint or the last step follows, or the step has diagnostics."""
        s, t = self.step, self.cfg.train
        return (s % t.log_every == 0 or s % int(t.val_every) == 0 or s == steps or s % t.checkpoint_every == 0
                or "diag" in record)

    def _flush(self) -> None:
        """Read back the losses and finiteness flags of the meta-steps since the last flush, in one transfer.

        Why (issue 18): a meta-step needs no host decision, so its losses stay on the device until a metrics line, a
        validation or a checkpoint needs them (every ``log_every`` steps by default) instead of one host-device
        sync per step. Each step's losses are filled into its record and fed to the divergence guard in order.
        Under ``nan_policy: stop`` the first non-finite step stops the run, naming that step, before anything of
        it is logged or checkpointed (its parameters were updated with the non-finite gradient in memory only);
        under ``skip`` such a step was already left out on the device (:meth:`_apply_if_finite`) and is counted
        here, its record marked ``skipped``.

        Raises:
            NumericalError: A flushed step had a non-finite loss or gradient (``nan_policy: stop``).
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        skip = self.cfg.train.nan_policy == "skip"
        values = torch.stack([v for _, v, _ in pending]).tolist()  # one read-back for all pending steps
        for (step, _, record), (total, meta, co, finite) in zip(pending, values, strict=True):
            record.update(loss=total, meta_loss=meta, co_loss=co)
            if finite:
                self.guard.loss(step, total)
            elif skip:
                self.skipped += 1
                record["skipped"] = True
                record["nonfinite"] = "gradient" if math.isfinite(total) else "loss"  # which one made it skip
                record.pop("diag", None)  # a skipped step's diagnostics describe an update that was not made
            else:
                raise NumericalError(self._nan_message(total, step), step=step)

    def _train_step(self) -> dict[str, Any]:
        """One meta-step: draw the meta-batch, compute the meta-gradients, update (:meth:`_step_record`: the
        losses stay on the device until the next :meth:`_flush`)."""
        cfg, e = self.cfg, self.exp
        n_raws, episodes = self._next_batch()
        params = parameters_of(e.model)
        diag = cfg.train.diag_every > 0 and (self.step + 1) % cfg.train.diag_every == 0
        batched = self._batched()
        if self.dist.active:  # slice gradients summed over ranks: the full batch's, identical on every rank
            ms = self.dist.meta_gradients(e.algo, e.model, params, episodes, e.domain.loss_fn, self.step,
                                          meta_batch=n_raws, seed=cfg.train.seed, diagnostics=diag,
                                          batched=batched)
        else:
            graphed = self._graphed_step(episodes, batched)
            if graphed is not None and not diag:  # the captured step (train.cuda_graphs, issue 18)
                ms = graphed(episodes, self.step)
            else:
                ms = e.algo.meta_gradients(e.model, params, episodes, e.domain.loss_fn, self.step, diagnostics=diag,
                                           batched=batched)
        return self._step_record(ms)

    def _step_record(self, ms: Any) -> dict[str, Any]:
        """The tail of a meta-step whose meta-gradients ``ms`` are computed: the metrics record, the optimizer step
        (:meth:`_apply`; under ``nan_policy: skip`` :meth:`_apply_if_finite`), and the losses with the finiteness
        flag kept on the device for the next :meth:`_flush` (no host-device sync: issue 18, Build item 2)."""
        e = self.exp
        losses = torch.stack([ms.loss.total.detach(), ms.loss.meta.detach(), ms.loss.co.detach()])
        finite = _finite_flag(ms.grads, ms.loss.total)
        record: dict[str, Any] = {"step": self.step + 1, "lr": e.optimizer.param_groups[0]["lr"]}
        self._pending.append((self.step + 1, torch.cat([losses, finite.to(losses.dtype)[None]]), record))
        if self.cfg.train.nan_policy == "skip":
            return self._apply_if_finite(ms, finite, record)
        return self._apply(ms, record)

    def _apply_if_finite(self, ms: Any, finite: torch.Tensor, record: dict[str, Any]) -> dict[str, Any]:
        """:meth:`_apply`, undone on the device where ``finite`` (a 0-d bool tensor) is False: ``nan_policy: skip``
        without reading the flag back. The parameters and the optimizer's state (Adam's moments and step count) are
        kept before the step and selected back with ``torch.where``, so a skipped step leaves them exactly as they
        were (a state created by the step is reset to zeros, what a first step starts from); the schedule still
        advances, as it follows the step counter, skipped or not. Adam's step count is on the device for this
        (``capturable``, :func:`build_experiment`) off the CPU."""
        opt = self.exp.optimizer
        params = [p for group in opt.param_groups for p in group["params"]]
        kept = [(p.detach().clone(), {k: v.clone() for k, v in opt.state.get(p, {}).items() if torch.is_tensor(v)})
                for p in params]
        record = self._apply(ms, record)
        with torch.no_grad():
            for p, (value, state) in zip(params, kept, strict=True):
                p.copy_(torch.where(finite, p, value))
                for k, v in opt.state.get(p, {}).items():
                    if torch.is_tensor(v):
                        v.copy_(torch.where(finite, v, state[k] if k in state else torch.zeros_like(v)))
        return record

    def _graphed_step(self, episodes: list[Any], batched: bool | None) -> Any:
        """The run's CUDA-graph meta-step (:mod:`cmlgraph.train.cuda_graphs`), decided on the first meta-batch;
        ``None`` where the run steps eagerly (the CPU, ``train.cuda_graphs: off``, an ineligible run under auto)."""
        if not hasattr(self, "_graphed"):
            from cmlgraph.train.cuda_graphs import make_graphed_step

            self._graphed = make_graphed_step(self.cfg, self.exp, episodes, batched, self.dist.active, self.console)
        graphed = self._graphed
        if graphed is not None and graphed.failed is not None and not getattr(self, "_graphed_said", False):
            self._graphed_said = True
            self.console.print(f"[yellow]note:[/yellow] CUDA graphs off for this run ({graphed.failed}); the "
                               f"meta-step runs eagerly")
        return graphed

    def _apply(self, ms: Any, record: dict[str, Any]) -> dict[str, Any]:
        """The optimizer (and schedule) step with the meta-gradients of ``ms``; diagnostics into the record."""
        e = self.exp
        for k, p in e.model.named_parameters():
            p.grad = ms.grads[k].detach()
        e.optimizer.step()
        e.optimizer.zero_grad(set_to_none=True)
        if e.scheduler is not None:
            e.scheduler.step()
        if ms.diagnostics:
            record["diag"] = ms.diagnostics
        return record

    def _nan_message(self, loss: float, step: int | None = None) -> str:
        at = f"step {self.step + 1 if step is None else step} of {self.cfg.train.steps}"
        what = "loss" if not math.isfinite(loss) else "gradient"
        if self.ckpt_step is not None and self.run_dir is not None:
            where = f"last good checkpoint: {self.run_dir / 'checkpoint.pt'} (step {self.ckpt_step})"
        else:
            where = "no checkpoint was written yet"
        return (f"non-finite (NaN/inf) {what} at {at}; training stopped, {where}. Lower --meta-lr or --inner-lr, "
                f"or pass --nan-policy skip to skip such meta-batches")

    def _validate(self, guard: bool = True) -> dict[str, Any]:
        """Score the current parameters on the fixed validation tasks; track the best. A group of runs
        (:mod:`cmlgraph.train.parallel`) may have scored them already, with other runs' validations in one pass
        (``fused_val``, used once)."""
        e = self.exp
        res, self.fused_val = getattr(self, "fused_val", None), None
        if res is None:
            params = parameters_of(e.model)
            with stage(getattr(self, "_bar", None), "validating", len(self.val_raws), _eval_hook) as hook:
                res = evaluate(e.algo, e.model, params, e.domain, self.val_raws, e.device, progress=hook,
                               prefetch=use_prefetch(self.cfg.train.prefetch, e.device))
        out = {"val": res["mean"], "val_ci95": res["ci95"]}
        if guard:  # the start (step 0) is no evidence that training fails to learn
            self.guard.validation(self.step, res["mean"])
        usable = res["mean"] if not res.get("nonfinite_tasks") else float("nan")  # NaN predictions: never best
        if _better(e.domain.metric, usable, self.best):
            self.best, self.best_step = res["mean"], self.step
            self.best_params = {k: v.detach().clone() for k, v in e.model.state_dict().items()}
            out["best"] = True
            self.stale = 0
        else:
            self.stale += 1
        return out

    def finish(self) -> dict[str, Any]:
        """Test the best-validation parameters and write ``model.pt``, ``summary.json`` and the plots."""
        assert self.run_dir is not None
        cfg, e = self.cfg, self.exp
        warns = check_test_result({"num_tasks": 0}, self.skipped, int(cfg.train.steps))  # all skipped: fail now
        baseline = self._baseline_check()  # issue 17 item 4: sgc-proto on the same validation tasks
        if self.best_params is not None:
            e.model.load_state_dict(self.best_params)
        asked = int(cfg.train.test_tasks)
        few = [w for w in (distinct_tasks_warning("val", len(self.val_raws), int(cfg.train.val_tasks)),
                           distinct_tasks_warning("test", len(self.test_raws), asked)) if w]  # issue 19 item 1
        self.console.print(f"evaluating on {len(self.test_raws)} fixed test tasks"
                           + (f" (all the distinct ones; {asked} asked for)" if len(self.test_raws) < asked else "")
                           + f" (best validation step {self.best_step})")
        res, self.fused_test = getattr(self, "fused_test", None), None  # scored with a group's other runs
        if res is None:
            with self._progress() as bar, stage(bar, "testing", len(self.test_raws), _eval_hook, keep=True) as hook:
                res = evaluate(e.algo, e.model, parameters_of(e.model), e.domain, self.test_raws, e.device,
                               progress=hook, prefetch=use_prefetch(cfg.train.prefetch, e.device))
        warns += check_test_result(res, self.skipped, int(cfg.train.steps))
        ways = int(getattr(e.domain, "out_dim", 0) or 0)
        at_chance = chance_warning(res, e.domain.metric, ways)
        self.guard.end(bad_result=at_chance is not None)  # loss spikes count only if they persist or end badly
        near = None if at_chance else near_chance_warning(res, e.domain.metric, ways)
        gnn = getattr(e.domain, "gnn", None) or {}
        depth = ((int(gnn["layers"]), int((baseline.get("settings") or {})["k"]))
                 if baseline and gnn.get("kind") == "sgc" and "k" in (baseline.get("settings") or {}) else None)
        below = (baseline_warning(self.best, baseline["val"], features=_baseline_features(baseline),
                                  inner_loop=bool(e.algo.uses_inner_loop), depth=depth)
                 if baseline and self.best is not None else None)
        warns += few + [w for w in [None if len(self.test_raws) < asked else test_tasks_warning(res["num_tasks"]),
                                    at_chance, near, below] if w]
        warns += e.algo.run_warnings()  # e.g. MAML++ evaluated with more inner steps than it learned rates for
        for w in warns:  # a printing console shows them; a quiet run (the API's default) warns in Python
            if getattr(self.console, "quiet", False):
                warn_user(w, RuntimeWarning)
            else:
                self.console.print(f"[yellow]warning:[/yellow] {w}")
        save_torch(self.run_dir / "model.pt", inference_state(e.model))
        save_torch(self.run_dir / "scores.pt", {"scores": torch.tensor(res["scores"], dtype=torch.float64)})
        summary = build_summary(cfg, e, res, self)
        info = e.domain.describe()  # issue 12: what was checked and chosen for this run
        summary.update(distinct_test_tasks=len(self.test_raws), test_tasks_asked=asked,
                       distinct_val_tasks=len(self.val_raws), val_tasks_asked=int(cfg.train.val_tasks))
        summary.update(warnings=[*self.guard.messages, *warns], nonfinite_test_tasks=res.get("nonfinite_tasks", 0),
                       **{k: info[k] for k in ("features", "feature_choice", "layers", "depth_choice", "mode",
                                               "mode_reason") if k in info})
        summary.update(protocol_figures(cfg, e))
        summary.update(e.algo.run_summary(res))  # e.g. a baseline's 0 steps and unreached queries
        if baseline is not None:
            summary["baseline_val"] = baseline
        if getattr(self, "baseline_record", None) is not None:
            summary["baseline"] = self.baseline_record
            if "unreached_queries" in summary:
                self.console.print(f"{summary['unreached_queries']} of {summary['test_queries_total']} test queries "
                                   f"(in {summary['unreached_tasks']} tasks) were never reached by the propagation "
                                   f"(no path to a support node within {self.baseline_record['settings']['steps']} "
                                   f"edges): scored as wrong")
        try:
            from cmlgraph.train.plots import plot_run

            plot_run(self.run_dir)
        except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished run
            self.console.print(f"[yellow]could not draw plots: {exc}[/yellow]")
        kill_point("finish")
        write_json(self.run_dir / "summary.json", summary)  # last: its presence marks the run as finished
        unit = "accuracy" if summary["metric"] == "accuracy" else "MSE"
        self.console.print(f"[bold green]test {unit}: {summary['mean']:.4f} ± {summary['ci95']:.4f}[/bold green]"
                           f" over {summary['num_tasks']} tasks" + ("  (PARTIAL data)" if summary["partial"]
                                                                     else ""))
        if baseline is not None:
            from cmlgraph.train.baseline_check import console_line

            self.console.print(console_line(self.best, self.best_step, baseline, len(self.val_raws)))
        return summary

    def _baseline_check(self) -> dict[str, Any] | None:
        """``sgc-proto``'s accuracy on this run's validation tasks, ``K`` chosen on them (issue 17 item 4,
        :mod:`cmlgraph.train.baseline_check`): the record for ``summary.json["baseline_val"]``, with ``val: None``
        and the reason under ``skipped`` where it cannot be computed; ``None`` for a run it does not apply to (not
        a meta-learning run on a graph)."""
        from cmlgraph.train import baseline_check

        e = self.exp
        if not baseline_check.applies(self.cfg, e.algo):
            return None
        reason = baseline_check.skip_reason(self.cfg, e.domain, e.algo)
        if reason is None:
            from cmlgraph.domains.feature_choice import reusable_baseline

            kept = reusable_baseline(e.domain, self.cfg)  # features auto scored it on these tasks already
            if kept is not None:
                return kept
            try:
                return baseline_check.baseline_val(e.domain, self.val_raws, e.device, seed=int(self.cfg.train.seed))
            except Exception as exc:  # noqa: BLE001 - a health check must never lose a finished run
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return {"method": baseline_check.BASELINE, "val": None, "skipped": reason}


def _eval_hook() -> None:
    kill_point("eval")


def _finished_message(run_dir: Path) -> str:
    return (f"run folder {run_dir} is already finished (it has summary.json); there is nothing to resume. "
            f"Re-evaluate it with `cmlgraph eval {run_dir}` or start a new run")


def _check_same_config(ckpt: Path, saved: Any, current: dict[str, Any]) -> None:
    """Refuse a checkpoint written under other settings than the folder's ``config.yaml`` (``run`` aside)."""
    if not isinstance(saved, dict):
        raise CmlgraphError(f"{ckpt} has no config; it is not a cmlgraph checkpoint")
    diff = [f"{sec}.{key}" for sec, values in current.items() if sec != "run" and isinstance(values, dict)
            for key, value in values.items() if (saved.get(sec) or {}).get(key, value) != value
            and (sec, key) != ("data", "data_root")]  # where the data is read: not a setting (resume elsewhere)
    if diff:
        raise CmlgraphError(f"{ckpt} was written with other settings than {ckpt.parent / 'config.yaml'} "
                            f"(differ: {', '.join(diff)}); restore config.yaml or start a new run")


def build_summary(cfg: Config, e: Experiment, res: dict[str, Any], trainer: Trainer) -> dict[str, Any]:
    """The ``summary.json`` record (DESIGN §3)."""
    info = e.domain.describe()
    summary = {
        "metric": e.domain.metric, "mean": res["mean"], "ci95": res["ci95"], "num_tasks": res["num_tasks"],
        "algorithm": cfg.algo.algo, "cml": bool(e.algo.cml and cfg.algo.control not in ("cl", "frozen-co")),
        "control": cfg.algo.control, "gamma": cfg.algo.gamma, "co_depth": cfg.algo.co_depth,
        "co_hidden": cfg.algo.co_hidden,
        "task": cfg.data.task, "dataset": e.domain.name, "ways": cfg.data.ways if cfg.data.task != "sinusoid"
        else None, "shots": cfg.data.shots, "queries": cfg.data.queries, "seed": cfg.train.seed,
        "partial": bool(e.domain.partial), "notes": info.get("notes", []), "steps": cfg.train.steps,
        "best_step": trainer.best_step, "best_val": trainer.best, "skipped_meta_batches": trainer.skipped,
        "wall_time_s": round(trainer.elapsed, 3),
        "inference_parameters": sum(v.numel() for v in inference_state(e.model).values()),
    }
    from cmlgraph.provenance import provenance

    summary["provenance"] = provenance(cfg.train.device, cfg.data.data_root)  # versions, device, command, git...
    if "transductive" in info:  # images: Conv4's norm, and whether a query's prediction depends on the others
        summary["norm"], summary["transductive"] = info["norm"], info["transductive"]
    if "dagger_mean" in res:
        summary["cml_dagger_mean"], summary["cml_dagger_ci95"] = res["dagger_mean"], res["dagger_ci95"]
        if "dagger_one_class_tasks" in res:
            one = res["dagger_one_class_tasks"]
            summary["cml_dagger_one_class_tasks"] = one
            note = collapsed_co_learner_note(one, res["num_tasks"])
            if note:  # a diagnostic of the co-learner, not of the model: a note, no warning
                summary["notes"] = [*summary["notes"], note]
        if cfg.algo.control == "cl":  # CL⋆ is ``mean`` (meta-learner); CL† the adapted co-learner's output
            summary["cl_dagger_mean"], summary["cl_dagger_ci95"] = res["dagger_mean"], res["dagger_ci95"]
    if hasattr(e.domain, "class_ids"):
        summary["classes"] = e.domain.class_ids()
        labels = e.domain.class_labels() if hasattr(e.domain, "class_labels") else None
        if labels is not None:  # a custom graph: the user's labels beside the internal ids
            summary["class_labels"] = labels
        summary["test_queries"] = cfg.data.test_queries or cfg.data.queries
        summary["protocol"] = cfg.data.protocol
    summary["stopped_early"] = trainer._patience_spent() and trainer.step < int(cfg.train.steps)
    summary["steps_run"] = trainer.step
    peak = memory.gpu_peak_mb(e.device)
    if peak is not None:  # this process's peak on the run's GPU (issue 18): a GPU run's memory, beside its time
        summary["peak_gpu_mb"] = peak
    return summary


def collapsed_co_learner_note(one_class_tasks: int, num_tasks: int) -> str | None:
    """The summary note when the co-learner's own output (CML†) names one class for every query node in more than
    half of the test tasks (CML† is then chance by construction there); ``None`` otherwise."""
    if one_class_tasks * 2 <= num_tasks:
        return None
    return (f"the co-learner's own output (CML†, cml_dagger_mean) names one class for every query node in "
            f"{one_class_tasks} of {num_tasks} test tasks: the co-learner collapsed to a constant prediction, so "
            f"CML† there is chance by construction (the meta-learner's score, mean, is unaffected)")


def protocol_figures(cfg: Config, e: Experiment) -> dict[str, Any]:
    """A protocol's own reported figure beside ours: TLP's mean over 100 test tasks (``tlp100_mean``/``ci95``).

    TLP scores the model of the best validation on 100 freshly drawn test tasks; these are drawn once from their
    own seeded generator (not the fixed ≥ 500 tasks) and scored with the same (best-validation) parameters.
    """
    if cfg.data.protocol != "tlp":
        return {}
    from cmlgraph.protocols import TLP_TEST_TASKS

    raws = e.domain.sample("test", TLP_TEST_TASKS, torch.Generator().manual_seed(1234 + 7 * cfg.train.seed))
    res = evaluate(e.algo, e.model, parameters_of(e.model), e.domain, raws, e.device)
    return {"tlp100_mean": res["mean"], "tlp100_ci95": res["ci95"], "tlp100_num_tasks": res["num_tasks"]}


def _check_prefetch_workers(cfg: Config) -> None:
    """Warn where ``train.prefetch_workers`` cannot do what it was set for: without prefetching it does nothing
    (``train.prefetch`` is off, the default on the CPU), and more builders than cores only contend for them."""
    t = cfg.train
    if t.prefetch_workers <= 1:
        return
    if not use_prefetch(t.prefetch, t.device):
        warn_user(f"train.prefetch_workers = {t.prefetch_workers} has no effect: prefetching is off on "
                  f"{t.device} (train.prefetch = {t.prefetch}); add --prefetch on")
    cores = usable_cores()
    if t.prefetch_workers > cores:
        warn_user(f"train.prefetch_workers = {t.prefetch_workers} is more than this machine's {cores} cores: the "
                  f"builders only contend for them; use at most {max(1, cores // 2)} (half the cores), or 0 (auto)")


def train(cfg: Config, console: Console | None = None, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Train one config end to end; returns the run folder and the summary."""
    trainer = Trainer(cfg, console, progress)
    trainer.open_run()
    summary = trainer.run()
    teardown_distributed()  # every rank has the summary: leave the process group together
    assert trainer.run_dir is not None
    return trainer.run_dir, summary


def resume(run_dir: str | Path, console: Console | None = None, progress: bool = True, *, graph: Any = None,
           data_root: str | os.PathLike[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Resume a run folder from its last checkpoint and finish it.

    Args:
        run_dir: The folder of a stopped run (``cmlgraph train``, ``cmlgraph.fit``, compare...).
        console: Where progress and messages go (``None``: nowhere).
        progress: Show the progress bar.
        graph: For a run on an in-memory graph (``cmlgraph.fit`` on a FewShotGraph, which is not stored with the
            run): that graph, as a FewShotGraph or a ``.npz`` file of ``graph.save``. The run's saved test tasks
            must fit it (their nodes and labels), and its model's feature width.
        data_root: Where the raw data of a registered graph is read (default: the config's, else
            ``$CMLGRAPH_DATA``, else the root the run recorded when it started). Where data is read is not a
            setting: a run may resume on another machine.

    Raises:
        CmlgraphError: Not a run folder, already finished, in use, or with an unreadable checkpoint.
        ConfigError: A run on an in-memory graph without ``graph``, or ``graph`` for a run on a registered one.
        DataError: The graph's data is missing, or the run's test tasks do not fit ``graph``.
    """
    from cmlgraph.train.reeval import _graph_for, _in_memory, run_data_root

    run_dir = Path(run_dir)
    cfg = setup_distributed().on_rank0(_resume_config, run_dir)  # only rank 0 reads the folder
    cfg.data.data_root = run_data_root(run_dir, cfg, data_root)  # graphs and image archives
    if cfg.data.task == "graph" and graph is not None and not _in_memory(str(cfg.data.graph)):
        raise ConfigError(f"this run was trained on the registered graph {str(cfg.data.graph)!r}, which resuming "
                          f"loads itself; drop the graph (--graph); --data-root says where its files are")
    with _graph_for(cfg, graph, command=f"cmlgraph train --resume {shlex.quote(str(run_dir))}",
                    python=f"cmlgraph.resume({str(run_dir)!r}, graph=graph)"):
        trainer = Trainer(cfg, console, progress)
    trainer.resume(run_dir)
    summary = trainer.run()
    teardown_distributed()
    return run_dir, summary


def _resume_config(run_dir: Path) -> Config:
    """The config of a run folder that can be resumed (raises CmlgraphError otherwise)."""
    from cmlgraph.config import from_yaml

    if not (run_dir / "config.yaml").is_file():
        if run_dir.is_dir() and not any(p for p in run_dir.iterdir() if not p.name.endswith(".tmp")):
            raise CmlgraphError(f"{run_dir} is an empty run folder (its run was stopped while starting, before "
                                f"config.yaml was written); delete it and start a new run")
        raise CmlgraphError(f"{run_dir} is not a run folder (no config.yaml); pass a folder made by "
                            f"`cmlgraph train`")
    if (run_dir / "summary.json").is_file():
        raise CmlgraphError(_finished_message(run_dir))
    from cmlgraph.config import load_yaml
    from cmlgraph.graphs.features import pin_legacy_features

    return pin_legacy_features(from_yaml(run_dir / "config.yaml"), load_yaml(run_dir / "config.yaml"))


__all__ = ["Trainer", "apply_overrides", "build_experiment", "prepare", "resume", "train"]
