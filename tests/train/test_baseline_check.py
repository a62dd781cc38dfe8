"""Run health against the training-free baseline (issue 17 item 4): every meta-learning run on a graph scores
``sgc-proto`` on its own validation tasks, stores it in ``summary.json["baseline_val"]``, prints it beside its best
validation accuracy and warns when it is below; the check changes nothing else of the run."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
import torch
from rich.console import Console

from cmlgraph.api import make_config
from cmlgraph.train import baseline_check
from cmlgraph.train.trainer import Trainer

#: 3-way 3-shot tasks on a 300-node synthetic graph (homophilous edges: propagated features are informative).
TINY = dict(task="graph", graph="synthetic", synthetic_nodes=300, synthetic_classes=15, ways=3, shots=3, queries=4,
            meta_batch=2, val_tasks=20, test_tasks=30, inner_steps=1)
#: A run that cannot do well: a one-dimensional GCN output and an inner step too small to adapt anything.
WEAK = dict(gnn="gcn", hidden=1, inner_lr=1e-6, steps=1, val_every=1)


def _run(tmp_path: Path, console: Console | None = None, **kw) -> tuple[Trainer, dict]:
    trainer = Trainer(make_config(**{**TINY, **kw}, runs_dir=str(tmp_path)), console, progress=False)
    trainer.open_run()
    return trainer, trainer.run()


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=2000, force_terminal=False, soft_wrap=True), out


@pytest.fixture(scope="module")
def proto(tmp_path_factory) -> dict:
    """The summary of an ``--algo sgc-proto`` run with TINY's data settings and seed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _run(tmp_path_factory.mktemp("proto"), algo="sgc-proto")[1]


def test_the_check_is_what_an_sgc_proto_run_selects_on_the_same_tasks(tmp_path: Path, proto: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(make_config(**TINY, steps=1, val_every=1, runs_dir=str(tmp_path)), progress=False)
        trainer.open_run()
        record = baseline_check.baseline_val(trainer.exp.domain, trainer.val_raws, trainer.exp.device)
    chosen = proto["baseline"]
    assert record["method"] == "sgc-proto" and record["val"] == chosen["val"]
    assert record["settings"]["k"] == chosen["settings"]["k"] and record["grid"] == chosen["grid"]
    assert len(record["grid"]) > 1  # K was selected, not fixed
    assert "baseline_val" not in proto  # a training-free run is not compared with itself


def test_a_run_below_the_baseline_says_so_in_console_and_summary(tmp_path: Path) -> None:
    console, out = _console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, summary = _run(tmp_path, console, **WEAK)
    record = summary["baseline_val"]
    assert record["method"] == "sgc-proto" and record["settings"]["k"] in (0, 1, 2, 3, 4)
    best, base = summary["best_val"], record["val"]
    assert best < base  # constructed: one feature, no adaptation
    said = [w for w in summary["warnings"] if "below the training-free baseline sgc-proto" in w]
    assert len(said) == 1 and f"{best:.4f}" in said[0] and f"{base:.4f}" in said[0]
    text = out.getvalue()
    assert sum(ln.startswith("warning:") and said[0][:80] in ln for ln in text.splitlines()) == 1, text
    line = next(ln for ln in text.splitlines() if ln.startswith("best validation accuracy"))
    assert f"{best:.4f} (step {summary['best_step']})" in line and f"{base:.4f}" in line
    assert f"same {len(trainer.val_raws)} validation tasks" in line
    assert not [w for w in caught if "below the training-free baseline" in str(w.message)]  # printed, not warned


def test_a_quiet_run_below_the_baseline_warns_in_python(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match=r"best validation accuracy 0\.\d{4} is below the training-free "
                                             r"baseline sgc-proto \(0\.\d{4}\)"):
        _run(tmp_path, **WEAK)


def test_a_run_above_the_baseline_gets_no_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    low = {"method": "sgc-proto", "val": 0.0, "settings": {"k": 2, "features": "raw"}}
    monkeypatch.setattr(baseline_check, "baseline_val", lambda *a, **k: dict(low))
    console, out = _console()
    _, summary = _run(tmp_path, console, steps=1, val_every=1)
    assert summary["baseline_val"] == low and summary["best_val"] > 0.0
    assert not any("below the training-free baseline" in w for w in summary["warnings"])
    assert "training-free sgc-proto (k 2) on the same 20 validation tasks: 0.0000" in out.getvalue()


def test_a_skipped_check_records_why_and_warns_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baseline_check, "MAX_DENSE_BYTES", 0)
    console, out = _console()
    _, summary = _run(tmp_path, console, **WEAK)
    record = summary["baseline_val"]
    assert record["val"] is None and "GiB" in record["skipped"] and "--algo sgc-proto" in record["skipped"]
    assert not any("below the training-free baseline" in w for w in summary["warnings"])
    assert "sgc-proto not computed: the dense propagated features" in out.getvalue()


def test_the_check_changes_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same scores, same selection, same saved weights with the check on and off (it draws no random numbers)."""
    kw = dict(steps=4, val_every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on_trainer, on = _run(tmp_path / "on", **kw)
        monkeypatch.setattr(baseline_check, "applies", lambda cfg, algo: False)
        off_trainer, off = _run(tmp_path / "off", **kw)
    assert "baseline_val" in on and "baseline_val" not in off
    for key in ("mean", "ci95", "best_val", "best_step"):
        assert on[key] == off[key], key
    assert (on_trainer.run_dir / "scores.pt").read_bytes() == (off_trainer.run_dir / "scores.pt").read_bytes()
    a, b = torch.load(on_trainer.run_dir / "model.pt"), torch.load(off_trainer.run_dir / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith("baseline") for k in a)  # the baseline's state is not the run's
    cache = baseline_check._whole_graph_cache(on_trainer.exp.domain, on_trainer.exp.device)
    assert not [k for k in cache if str(k).startswith("baselines/")]  # S^K X is freed


@pytest.mark.parametrize("algo", ["gmeta", "ammgnn"])
def test_tlp_encoders_are_compared_on_the_same_tasks(tmp_path: Path, algo: str, proto: dict) -> None:
    """G-Meta's balls and AMM-GNN's matched inputs are not plain graph inputs; the check reads the same tasks on the
    whole graph and gets what an sgc-proto run gets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, summary = _run(tmp_path, algo=algo, steps=1, val_every=1)
    assert summary["baseline_val"]["val"] == proto["baseline"]["val"]


def test_sinusoid_runs_are_not_compared(tmp_path: Path) -> None:
    cfg = make_config(task="sinusoid", steps=2, val_every=2, val_tasks=4, test_tasks=4, runs_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = Trainer(cfg, progress=False).run()
    assert "baseline_val" not in summary
