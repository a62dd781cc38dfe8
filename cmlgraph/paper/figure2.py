"""A Figure-2-style plot of the CML paper (§4.1): per K, one sinusoid task with the ground truth, the MAML fit and
the CML fit after the test-time inner loop (one step in the paper's setting), and the K support points.

Both fits are of the same task: its amplitude, phase and support points are drawn from the sinusoid task
distribution with a generator seeded by ``seed`` and K, independent of the runs. Each model is the run's saved
inference model (``model.pt``, best validation, co-learner removed), adapted exactly as evaluation adapts it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from cmlgraph.core.episode import Episode
from cmlgraph.core.model import parameters_of

#: Points of the x grid on [−5, 5] where the curves are drawn.
GRID = 200


def sinusoid_task(shots: int, seed: int = 0) -> tuple[float, float, Tensor, Tensor]:
    """One task of Finn et al.'s distribution: ``(amplitude, phase, support_x [K, 1], support_y [K, 1])``."""
    g = torch.Generator().manual_seed(1000 * seed + shots)
    amp = 0.1 + 4.9 * float(torch.rand((), generator=g))
    phase = math.pi * float(torch.rand((), generator=g))
    x = -5.0 + 10.0 * torch.rand(shots, 1, generator=g)
    return amp, phase, x, amp * torch.sin(x - phase)


def adapted_curve(run_dir: str | Path, support_x: Tensor, support_y: Tensor, grid: Tensor) -> tuple[Tensor, int]:
    """The run's inference model, adapted on the support points as evaluation adapts it, on ``grid`` ``[G, 1]``.

    Returns:
        ``Tensor[G]`` of predictions and the number of test-time inner steps.
    """
    from cmlgraph.train.reeval import load_inference_model

    (cfg, algo, domain), model, _ = load_inference_model(run_dir, device="cpu")  # the curve's points: CPU
    model.eval()
    ep = Episode(support_x, support_y, grid, torch.zeros_like(grid))
    out, _ = algo.predict(model, parameters_of(model), ep, domain.loss_fn)
    return out.detach().reshape(-1), algo.inner_config(evaluation=True).steps


def plot_figure2(runs: Mapping[int, tuple[Path, Path]], path: str | Path, seed: int = 0) -> Path:
    """Draw one panel per K from ``{K: (MAML run, CML run)}`` into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = sorted(runs)
    grid = torch.linspace(-5.0, 5.0, GRID).unsqueeze(1)
    fig, axes = plt.subplots(1, len(shots), figsize=(4.2 * len(shots), 3.4), squeeze=False)
    for ax, k in zip(axes[0], shots, strict=True):
        amp, phase, sx, sy = sinusoid_task(k, seed)
        base, cml = runs[k]
        ax.plot(grid[:, 0], amp * torch.sin(grid[:, 0] - phase), color="black", lw=1.5, label="ground truth")
        (maml_fit, steps), (cml_fit, _) = adapted_curve(base, sx, sy, grid), adapted_curve(cml, sx, sy, grid)
        ax.plot(grid[:, 0], maml_fit, color="tab:blue", ls="--", label="MAML")
        ax.plot(grid[:, 0], cml_fit, color="tab:red", label="CML")
        ax.scatter(sx[:, 0], sy[:, 0], color="black", marker="^", zorder=3, label=f"{k} support points")
        ax.set_title(f"K = {k} ({steps} test step{'s' if steps != 1 else ''})")
        ax.set_xlabel("x")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


__all__ = ["adapted_curve", "plot_figure2", "sinusoid_task"]
