"""Learning-curve plots of a run folder (PNG), drawn from ``metrics.jsonl``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cmlgraph.train.io import MetricsLog  # noqa: E402


def plot_run(run_dir: str | Path) -> list[Path]:
    """Draw ``curves.png`` (losses and validation metric) and, when logged, ``gradients.png``."""
    run_dir = Path(run_dir)
    recs = MetricsLog(run_dir / "metrics.jsonl").read()
    out: list[Path] = []
    if not recs:
        return out
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    trained = [r for r in recs if "meta_loss" in r]  # step 0 holds the start's validation only
    steps = [r["step"] for r in trained]
    axes[0].plot(steps, [r["meta_loss"] for r in trained], label="meta-learner query loss")
    if any(r.get("co_loss") for r in trained):
        axes[0].plot(steps, [r["co_loss"] for r in trained], label="co-learner query loss")
    axes[0].set_xlabel("meta-iteration")
    axes[0].set_ylabel("loss")
    axes[0].set_yscale("log")
    axes[0].legend()
    vals = [(r["step"], r["val"], r.get("val_ci95", 0.0)) for r in recs if "val" in r]
    if vals:
        s, v, c = zip(*vals, strict=True)
        axes[1].errorbar(s, v, yerr=c, marker="o", capsize=3)
        axes[1].set_xlabel("meta-iteration")
        axes[1].set_ylabel("validation metric (95% CI)")
    fig.suptitle(run_dir.name, fontsize=9)
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out.append(path)
    diag = [r for r in recs if r.get("diag")]
    if diag:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        ds = [r["step"] for r in diag]
        axes[0].plot(ds, [r["diag"]["cos_extractor"] for r in diag], label="overall", lw=2)
        for layer in diag[0]["diag"]["layers"]:
            axes[0].plot(ds, [r["diag"]["layers"][layer]["cos"] for r in diag], label=layer, alpha=0.6)
        axes[0].axhline(0, color="grey", lw=0.5)
        axes[0].set_title("cos(∇ψ meta, ∇ψ co-learner)")
        axes[0].legend(fontsize=7)
        axes[1].plot(ds, [r["diag"]["norm_meta_extractor"] for r in diag], label="‖∇ψ meta‖")
        axes[1].plot(ds, [r["diag"]["norm_co_extractor"] for r in diag], label="‖∇ψ co‖")
        axes[1].set_yscale("log")
        axes[1].legend()
        for ax in axes:
            ax.set_xlabel("meta-iteration")
        fig.tight_layout()
        path = run_dir / "gradients.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out
