"""Meta-training: the outer loop shared by every domain and algorithm, writing the run folder of DESIGN §3.

Why it looks like this: all input is validated and the data loaded *before* the run folder is created, so a bad
flag leaves nothing behind; checkpoints hold every random generator's state so ``--resume`` continues exactly
where a killed run stopped.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cmlgraph.algorithms.base import MetaAlgorithm
from cmlgraph.algorithms.registry import get_algorithm
from cmlgraph.config import Config, apply_overrides
from cmlgraph.core.model import MetaModel, inference_state, parameters_of
from cmlgraph.domains.base import Domain
from cmlgraph.domains.registry import build_domain, fill_defaults
from cmlgraph.errors import CmlgraphError, NumericalError
from cmlgraph.train.evaluate import evaluate
from cmlgraph.train.io import MetricsLog, load_torch, save_torch, write_json, write_yaml
from cmlgraph.train.run_dir import create_run_dir
from cmlgraph.validate import validate_config


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
    cfg = fill_defaults(copy.deepcopy(cfg))
    validate_config(cfg)
    return cfg


def build_model(cfg: Config, domain: Domain, algo: MetaAlgorithm) -> MetaModel:
    """A freshly initialised meta-model (seeded by ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    model = MetaModel(domain.build_extractor(), domain.out_dim, cfg.algo.co_depth if algo.cml else None)
    algo.prepare(model)
    return model


def build_experiment(cfg: Config, domain: Domain | None = None) -> Experiment:
    """Build domain, model, algorithm and optimizer from a prepared config."""
    domain = domain or build_domain(cfg)
    algo = get_algorithm(cfg.algo, total_steps=int(cfg.train.steps), seed=cfg.train.seed)
    device = torch.device(cfg.train.device)
    model = build_model(cfg, domain, algo).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.meta_lr)
    scheduler = algo.make_scheduler(optimizer)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    return Experiment(cfg, domain, model, algo, optimizer, scheduler, generator, device)


def _better(metric: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    return new < best if metric == "mse" else new > best


def _finite(step_grads: dict[str, torch.Tensor], loss: torch.Tensor) -> bool:
    return bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in step_grads.values())


class Trainer:
    """Runs meta-training for one config and writes its run folder.

    Args:
        cfg: The run's config (defaults are filled and validated on construction).
        console: Where to print; a quiet console is used when ``None``.
        progress: Show progress bars.
    """

    def __init__(self, cfg: Config, console: Console | None = None, progress: bool = True) -> None:
        self.cfg = prepare(cfg)
        self.console = console or Console(quiet=True)
        self.show_progress = progress
        self.exp = build_experiment(self.cfg)
        self.run_dir: Path | None = None
        self.step = 0
        self.best: float | None = None
        self.best_step = -1
        self.best_params: dict[str, torch.Tensor] | None = None
        self.skipped = 0
        self.elapsed = 0.0

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
            "best": self.best if self.best is not None else float("nan"),
            "best_step": self.best_step,
            "best_params": self.best_params or {},
            "skipped": self.skipped,
            "elapsed": self.elapsed,
            "config": self.cfg.to_dict(),
        }

    def load_checkpoint(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`checkpoint_state` dict."""
        e = self.exp
        e.model.load_state_dict(state["model"])
        e.optimizer.load_state_dict(state["optimizer"])
        if e.scheduler is not None and state["scheduler"]:
            e.scheduler.load_state_dict(state["scheduler"])
        e.generator.set_state(state["generator"])
        e.algo.generator.set_state(state["algo_generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        best = float(state["best"])
        self.best = None if math.isnan(best) else best
        self.best_step = int(state["best_step"])
        self.best_params = dict(state["best_params"]) or None
        self.skipped = int(state["skipped"])
        self.elapsed = float(state["elapsed"])

    def save_checkpoint(self) -> None:
        """Atomically write ``checkpoint.pt``."""
        assert self.run_dir is not None
        save_torch(self.run_dir / "checkpoint.pt", self.checkpoint_state())

    # --- the loop --------------------------------------------------------------------------------------------
    def open_run(self) -> Path:
        """Create the run folder and write the config and the fixed evaluation episodes."""
        e = self.exp
        self.val_raws = e.domain.fixed("val", self.cfg.train.val_tasks, self.cfg.train.seed)
        self.test_raws = e.domain.fixed("test", int(self.cfg.train.test_tasks), self.cfg.train.seed)
        self.run_dir = create_run_dir(self.cfg)
        write_yaml(self.run_dir / "config.yaml", self.cfg.to_dict())
        save_torch(self.run_dir / "test_episodes.pt", e.domain.to_state(self.test_raws))
        return self.run_dir

    def resume(self, run_dir: Path) -> None:
        """Continue a run from its last checkpoint (metrics after that step are dropped and redone)."""
        self.run_dir = Path(run_dir)
        e = self.exp
        self.val_raws = e.domain.fixed("val", self.cfg.train.val_tasks, self.cfg.train.seed)
        self.test_raws = e.domain.from_state(load_torch(self.run_dir / "test_episodes.pt"))
        ckpt = self.run_dir / "checkpoint.pt"
        if ckpt.exists():
            self.load_checkpoint(load_torch(ckpt))
        MetricsLog(self.run_dir / "metrics.jsonl").truncate_after(self.step)

    def run(self) -> dict[str, Any]:
        """Meta-train, evaluate the best-validation parameters on the test tasks, write the run folder."""
        if self.run_dir is None:
            self.open_run()
        assert self.run_dir is not None
        cfg, e = self.cfg, self.exp
        log = MetricsLog(self.run_dir / "metrics.jsonl")
        steps = int(cfg.train.steps)
        self.console.print(f"[bold]run[/bold] {self.run_dir}  ({e.domain.name}, {cfg.algo.algo}"
                           f"{' + CML' if e.algo.cml else ''}, {steps} steps)")
        for note in e.domain.notes:
            self.console.print(f"[yellow]note:[/yellow] {note}")
        with self._progress() as bar:
            task = bar.add_task("meta-training", total=steps, completed=self.step, info="")
            while self.step < steps:
                t0 = time.perf_counter()
                record = self._train_step()
                self.step += 1
                if self.step % int(cfg.train.val_every) == 0 or self.step == steps:
                    record.update(self._validate())
                self.elapsed += time.perf_counter() - t0
                if record is not None and (self.step % cfg.train.log_every == 0 or "val" in record
                                           or self.step == steps):
                    record["time_s"] = round(self.elapsed, 3)
                    log.append(record)
                if self.step % cfg.train.checkpoint_every == 0 or "val" in record:
                    self.save_checkpoint()
                bar.update(task, advance=1, info=f"loss {record.get('loss', float('nan')):.4f}"
                           + (f"  best val {self.best:.4f}" if self.best is not None else ""))
        return self.finish()

    def _progress(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=self.console, disable=not self.show_progress, transient=False)

    def _train_step(self) -> dict[str, Any]:
        cfg, e = self.cfg, self.exp
        raws = e.domain.sample("train", int(cfg.train.meta_batch), e.generator)
        episodes = [e.domain.materialize(r, e.device) for r in raws]
        params = parameters_of(e.model)
        diag = cfg.train.diag_every > 0 and (self.step + 1) % cfg.train.diag_every == 0
        batched = {"auto": None, "on": True, "off": False}[cfg.train.batched]
        ms = e.algo.meta_gradients(e.model, params, episodes, e.domain.loss_fn, self.step, diagnostics=diag,
                                   batched=batched)
        record: dict[str, Any] = {"step": self.step + 1, "loss": float(ms.loss.total.detach()), "meta_loss":
                                  float(ms.loss.meta.detach()), "co_loss": float(ms.loss.co.detach()),
                                  "lr": e.optimizer.param_groups[0]["lr"]}
        if not _finite(ms.grads, ms.loss.total):
            if cfg.train.nan_policy == "skip":
                self.skipped += 1
                record["skipped"] = True
                e.optimizer.zero_grad(set_to_none=True)
                return record
            last = self.run_dir / "checkpoint.pt" if self.run_dir else None
            where = f"last good checkpoint: {last} (step {self._ckpt_step()})" if last and last.exists() \
                else "no checkpoint was written yet"
            raise NumericalError(f"non-finite loss or gradient at step {self.step + 1}; {where}. Lower "
                                 f"--meta-lr/--inner-lr, or pass --nan-policy skip to skip such meta-batches")
        for k, p in e.model.named_parameters():
            p.grad = ms.grads[k].detach()
        e.optimizer.step()
        e.optimizer.zero_grad(set_to_none=True)
        if e.scheduler is not None:
            e.scheduler.step()
        if ms.diagnostics:
            record["diag"] = ms.diagnostics
        return record

    def _ckpt_step(self) -> int:
        try:
            return int(load_torch(self.run_dir / "checkpoint.pt")["step"])  # type: ignore[operator]
        except Exception:  # noqa: BLE001 - only used to phrase a message
            return -1

    def _validate(self) -> dict[str, Any]:
        e = self.exp
        params = parameters_of(e.model)
        res = evaluate(e.algo, e.model, params, e.domain, self.val_raws, e.device)
        out = {"val": res["mean"], "val_ci95": res["ci95"]}
        if _better(e.domain.metric, res["mean"], self.best):
            self.best, self.best_step = res["mean"], self.step
            self.best_params = {k: v.detach().clone() for k, v in e.model.state_dict().items()}
            out["best"] = True
        return out

    def finish(self) -> dict[str, Any]:
        """Test the best-validation parameters and write ``model.pt``, ``summary.json`` and the plots."""
        assert self.run_dir is not None
        cfg, e = self.cfg, self.exp
        if self.best_params is not None:
            e.model.load_state_dict(self.best_params)
        self.console.print(f"evaluating on {len(self.test_raws)} fixed test tasks (best validation step "
                           f"{self.best_step})")
        res = evaluate(e.algo, e.model, parameters_of(e.model), e.domain, self.test_raws, e.device)
        save_torch(self.run_dir / "model.pt", inference_state(e.model))
        summary = build_summary(cfg, e, res, self)
        write_json(self.run_dir / "summary.json", summary)
        save_torch(self.run_dir / "scores.pt", {"scores": torch.tensor(res["scores"], dtype=torch.float64)})
        try:
            from cmlgraph.train.plots import plot_run

            plot_run(self.run_dir)
        except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished run
            self.console.print(f"[yellow]could not draw plots: {exc}[/yellow]")
        unit = "accuracy" if summary["metric"] == "accuracy" else "MSE"
        self.console.print(f"[bold green]test {unit}: {summary['mean']:.4f} ± {summary['ci95']:.4f}[/bold green]"
                           f" over {summary['num_tasks']} tasks" + ("  (PARTIAL data)" if summary["partial"]
                                                                     else ""))
        return summary


def build_summary(cfg: Config, e: Experiment, res: dict[str, Any], trainer: Trainer) -> dict[str, Any]:
    """The ``summary.json`` record (DESIGN §3)."""
    info = e.domain.describe()
    summary = {
        "metric": e.domain.metric, "mean": res["mean"], "ci95": res["ci95"], "num_tasks": res["num_tasks"],
        "algorithm": cfg.algo.algo, "cml": bool(e.algo.cml and cfg.algo.control != "cl"),
        "control": cfg.algo.control, "gamma": cfg.algo.gamma, "co_depth": cfg.algo.co_depth,
        "task": cfg.data.task, "dataset": e.domain.name, "ways": cfg.data.ways if cfg.data.task != "sinusoid"
        else None, "shots": cfg.data.shots, "queries": cfg.data.queries, "seed": cfg.train.seed,
        "partial": bool(e.domain.partial), "notes": info.get("notes", []), "steps": cfg.train.steps,
        "best_step": trainer.best_step, "best_val": trainer.best, "skipped_meta_batches": trainer.skipped,
        "wall_time_s": round(trainer.elapsed, 3),
        "inference_parameters": sum(v.numel() for v in inference_state(e.model).values()),
    }
    if "dagger_mean" in res:
        summary["cml_dagger_mean"], summary["cml_dagger_ci95"] = res["dagger_mean"], res["dagger_ci95"]
    return summary


def train(cfg: Config, console: Console | None = None, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Train one config end to end; returns the run folder and the summary."""
    trainer = Trainer(cfg, console, progress)
    trainer.open_run()
    summary = trainer.run()
    assert trainer.run_dir is not None
    return trainer.run_dir, summary


def resume(run_dir: str | Path, console: Console | None = None, progress: bool = True
           ) -> tuple[Path, dict[str, Any]]:
    """Resume a run folder from its last checkpoint."""
    from cmlgraph.config import from_yaml

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CmlgraphError(f"{run_dir} is not a run folder (no config.yaml); pass a folder made by "
                            f"`cmlgraph train`")
    cfg = from_yaml(run_dir / "config.yaml")
    trainer = Trainer(cfg, console, progress)
    trainer.resume(run_dir)
    summary = trainer.run()
    return run_dir, summary


__all__ = ["Trainer", "apply_overrides", "build_experiment", "prepare", "resume", "train"]
