"""Fused eager meta-steps or each run's own CUDA graph: which a group of runs steps with (issue 18 items 4 and 5).

Why: on a GPU, ``--parallel-runs`` fuses the runs' meta-steps into one eager computation over their R·B tasks
(:func:`~cmlgraph.train.parallel.fused_gradients`: fewer, larger kernels), while a run alone replays its meta-step
as a CUDA graph (:mod:`cmlgraph.train.cuda_graphs`: one launch). A fused step is not captured, so fusing gives up
each run's graph. Which is faster depends on the device, the graph and the group size, and was never measured (no GPU
was lent while this was written), so the group measures it on its own device instead of guessing:

1. the first meta-step of every run is stepped alone anyway (the group's RNG probe), which captures each run's
   graph under ``train.cuda_graphs: auto``; if every run then replays a working graph, the trial starts, else
   (the CPU, ``off``, an ineligible or failed capture) the runs fuse as before, with no trial;
2. :data:`TRIAL_STEPS` meta-steps with each run alone, replaying its graph, then one untimed fused step (its first
   launches) and :data:`TRIAL_STEPS` fused ones, each lockstep timed between two device synchronisations;
3. the faster median seconds per run-step wins for the rest of the group's training, said on the console.
   Only locksteps in which runs did fuse count as fused ones; where no :data:`TRIAL_STEPS` of them come within
   ``3 × TRIAL_STEPS`` locksteps (the runs' steps do not fuse: other steps, draws outside their streams, one run
   left), the runs step alone.

Runs that draw dropout masks over their graphs' padded buffers (k-hop plans, GAT's unions, G-Meta's balls, AMM-GNN's
trees) never fuse: a fused step draws each task's masks over its own rows, so the run's folder would no longer equal
its run alone (session 35's review); where all runs do, there is no trial.
``train.cuda_graphs: on`` asks for the captured step, so its runs always step alone (each replaying its graph);
the validations and tests of a group are scored together either way. The only syncs added are the trial's
``2 × 2·TRIAL_STEPS`` device synchronisations (before and after each timed lockstep).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

#: Timed meta-steps of each way in the trial.
TRIAL_STEPS = 5


def captures_working(trainers: Sequence[Any]) -> bool:
    """Whether every trainer replays a working CUDA graph of its meta-step (its ``_graphed`` step captured and
    not fallen back to eager)."""
    steps = [getattr(t, "_graphed", None) for t in trainers]
    return bool(steps) and all(s is not None and s.failed is None and s.graph is not None for s in steps)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FusePolicy:
    """Whether a group's runs fuse their meta-steps, decided by a timed trial where their steps are captured
    (see the module docstring).

    Args:
        mode: The group's ``train.cuda_graphs`` (``auto``, ``on`` or ``off``).
        device: The runs' device (the trial synchronises it around each timed lockstep).
        say: Prints the decision (one console line).
        clock: Seconds, monotonic (``time.perf_counter``; tests give their own).

    Attributes:
        phase: ``probe`` (before the first lockstep), ``alone-trial``, ``fuse-warmup``, ``fuse-trial``, then
            ``alone`` or ``fuse`` for the rest of training.
        timings: Seconds per run-step of the trial's timed locksteps, per way (``alone``, ``fuse``).
    """

    def __init__(self, mode: str, device: torch.device, say: Callable[[str], None] = lambda line: None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.mode, self.device, self.say, self.clock = mode, torch.device(device), say, clock
        self.phase = "fuse" if mode == "off" else "probe"
        self.timings: dict[str, list[float]] = {"alone": [], "fuse": []}
        self._t0: float | None = None

    @property
    def fuses(self) -> bool:
        """Whether this lockstep's runs may fuse their meta-steps."""
        return self.phase in ("fuse", "fuse-warmup", "fuse-trial")

    @property
    def timing(self) -> bool:
        """Whether this lockstep is timed."""
        return self.phase in ("alone-trial", "fuse-trial")

    def begin(self) -> None:
        """Before a lockstep's meta-steps (a synchronisation where timed)."""
        if self.timing:
            _synchronize(self.device)
            self._t0 = self.clock()

    def end(self, stepped: int, trainers: Sequence[Any], fused: int = 0, padded_draws: bool = False) -> None:
        """After a lockstep's meta-steps: ``stepped`` runs stepped, ``fused`` of them in fused steps;
        ``trainers`` are the group's runs still training (their captures decide whether a trial starts);
        ``padded_draws``: every one of them draws dropout masks over its graph's padded buffers, which a fused step
        cannot reproduce (:func:`~cmlgraph.train.parallel._draws_over_padding`): no trial, each run alone."""
        if self.timing and self._t0 is not None and stepped:
            _synchronize(self.device)
            seconds = (self.clock() - self._t0) / stepped
            if self.phase == "alone-trial":
                self.timings["alone"].append(seconds)
            elif fused:  # a lockstep in which nothing fused times nothing of fusing
                self.timings["fuse"].append(seconds)
        self._t0 = None
        if self.phase == "probe":  # on: the captured steps asked for, never fused
            self.phase = "alone" if self.mode == "on" else "alone-trial" if captures_working(trainers) else "fuse"
            if self.phase == "alone-trial" and padded_draws:
                self.phase = "alone"
                self.say(f"note: --parallel-runs on {self.device}: the runs draw dropout masks over their CUDA graphs' "
                         f"padded buffers, which a fused step cannot draw alike: each run steps alone, replaying "
                         f"its graph (each folder equals its run alone)")
        elif self.phase == "alone-trial" and len(self.timings["alone"]) >= TRIAL_STEPS:
            self.phase = "fuse-warmup"
        elif self.phase == "fuse-warmup":
            self.phase, self._fuse_locksteps = "fuse-trial", 0
        elif self.phase == "fuse-trial":
            self._fuse_locksteps += 1
            if len(self.timings["fuse"]) >= TRIAL_STEPS:
                self._decide()
            elif self._fuse_locksteps >= 3 * TRIAL_STEPS:
                self.phase = "alone"
                self.say(f"note: --parallel-runs on {self.device}: the runs' steps did not fuse in "
                         f"{self._fuse_locksteps} locksteps: each run steps alone, replaying its CUDA graph")

    def _decide(self) -> None:
        alone, fused = (statistics.median(self.timings[k]) for k in ("alone", "fuse"))
        self.phase = "alone" if alone < fused else "fuse"
        how = ("the runs step alone, each replaying its CUDA graph" if self.phase == "alone"
               else "the runs' meta-steps are fused")
        self.say(f"note: --parallel-runs on {self.device}: {alone * 1e3:.2f} ms a run-step with each run's CUDA graph "
                 f"vs {fused * 1e3:.2f} ms fused (medians of {TRIAL_STEPS} timed steps each): {how}")


__all__ = ["FusePolicy", "TRIAL_STEPS", "captures_working"]
