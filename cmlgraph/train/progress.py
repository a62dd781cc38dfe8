"""Progress bars of the long stages other than meta-training: validation, testing, re-evaluation.

Why: evaluating 500 fixed tasks takes from seconds to minutes (a GCN on a large graph); without a bar a run looks
stuck after its last meta-iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def loss_label(cml: bool) -> str:
    """The name of the loss the meta-training bar shows: the outer (query) loss after adaptation, or with CML the
    objective it minimises, meta + γ·co (``total`` of :func:`cmlgraph.core.objective.outer_objective`)."""
    return "meta+γ·co loss" if cml else "outer loss"


def bar_info(cml: bool, loss: float | None, best: float | None) -> str:
    """The meta-training bar's ``info``: the last loss read back (``loss_label``) and the best validation score.

    Args:
        cml: Whether the run trains a co-learner (names the loss ``meta+γ·co``).
        loss: The last loss read back from the device; ``None`` before the first (losses are read back every
            ``log_every`` steps, issue 18), when no loss is shown rather than "nan". A non-finite loss read back
            (a skipped step) is shown as it is.
        best: The best validation score so far, or ``None``.
    """
    parts = [] if loss is None else [f"{loss_label(cml)} {loss:.4f}"]
    if best is not None:
        parts.append(f"best val {best:.4f}")
    return "  ".join(parts)


def progress_bar(console: Console, enabled: bool = True) -> Progress:
    """A rich progress display with a bar, done/total, elapsed and remaining time."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=not enabled, transient=False)


def run_progress(console: Console, enabled: bool = True) -> Progress:
    """:func:`progress_bar` with an ``info`` field after done/total (a run's loss and best validation score); every
    task added to it needs ``info=...``."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=not enabled, transient=False)


@contextmanager
def stage(bar: Progress | None, label: str, total: int, hook: Callable[[], None] | None = None,
          keep: bool = False) -> Iterator[Callable[[], None]]:
    """A per-item callback advancing a ``label`` task of ``bar`` (after ``hook``); the task is removed at the end
    unless ``keep``. With ``bar`` None the callback is ``hook`` alone."""
    if bar is None:
        yield hook or (lambda: None)
        return
    task = bar.add_task(label, total=total, info="")

    def step() -> None:
        if hook is not None:
            hook()
        bar.advance(task)

    try:
        yield step
    finally:
        if not keep:
            bar.remove_task(task)


__all__ = ["bar_info", "loss_label", "progress_bar", "run_progress", "stage"]
