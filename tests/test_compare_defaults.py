"""`cmlgraph compare` takes `cmlgraph train`'s defaults unless its preset overrides them, and then says so (issue 19
item 6: compare's Cora trained on raw features, train's on row-normalised ones, silently)."""

from __future__ import annotations

import pytest
import yaml

from cmlgraph import compare
from cmlgraph.cli import main
from cmlgraph.compare import domain_config, preset_overrides, run_compare, train_config, write_outputs
from cmlgraph.graphs.features import DATASET_FEATURES
from cmlgraph.train.trainer import prepare

TINY = {"train": {"steps": 2, "meta_batch": 2, "val_tasks": 3, "test_tasks": 6, "val_every": 2}}


def test_train_config_is_what_cmlgraph_train_writes(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "sinusoid", "--seed", "1", "--steps", "2", "--meta-batch", "2", "--val-every", "2",
              "--test-tasks", "6", "--runs-dir", str(tmp_path), "--name", "t", "--quiet"])
    assert exc.value.code == 0
    written = yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())
    ours = prepare(train_config(domain_config("sinusoid", "maml", True, 1, TINY), TINY)).to_dict()
    written["train"]["val_tasks"] = ours["train"]["val_tasks"] = None  # TINY sets it, the command line did not
    for section in ("data", "model", "algo", "train"):
        assert ours[section] == written[section], section


def test_a_preset_that_overrides_train_defaults_is_named(monkeypatch):
    feats = "standard" if DATASET_FEATURES["cora"] != "standard" else "raw"
    monkeypatch.setitem(compare.PRESETS, "cora", ("graph-table.yaml", {"data": {"graph": "cora", "features": feats}}))
    diffs = preset_overrides(domain_config("cora", "maml", True, 0, TINY), TINY)
    assert diffs["data.features"] == (feats, "auto")  # train's MAML chooses on validation (session 27)
    assert "train.steps" not in diffs and "algo.cml" not in diffs  # the command line's and the cell's own
    monkeypatch.setitem(compare.PRESETS, "plain", ("no-such-file.yaml", {"data": {"graph": "synthetic"}}))
    assert preset_overrides(domain_config("plain", "maml", True, 0, TINY), TINY) == {}  # train's defaults


def test_compare_says_where_it_differs_from_train_in_the_console_and_compare_md(monkeypatch, tmp_path):
    monkeypatch.setitem(compare.PRESETS, "sinusoid", ("sinusoid.yaml", {"model": {"hidden": 7}}))
    default = prepare(train_config(domain_config("sinusoid", "maml", True, 0, TINY), TINY)).model.hidden
    logs: list[str] = []
    cells = run_compare(["sinusoid"], ["maml", "anil"], [0], tmp_path / "runs", TINY, log=logs.append)
    notes = [m for m in logs if m.startswith("note: sinusoid:")]
    assert len(notes) == 1 and f"hidden 7 (train: {default})" in notes[0] and "configs/sinusoid.yaml" in notes[0]
    assert logs.index(notes[0]) < next(i for i, m in enumerate(logs) if "training" in m)  # said before training
    write_outputs(cells, tmp_path / "out")
    assert f"hidden 7 (train: {default})" in (tmp_path / "out" / "compare.md").read_text()


def test_compare_png_clips_accuracy_and_plots_the_paired_difference():
    import matplotlib.pyplot as plt

    from cmlgraph.compare import Cell, compare_figure

    cell = Cell(metric="accuracy", base=(0.95, 0.12), cml=(0.97, 0.08), diff=(0.02, 0.01), seeds=3, tasks=1500,
                base_runs=[], cml_runs=[], diff_seeds=(0.02, 0.05), domain="cora", algorithm="maml")
    fig = compare_figure([cell])
    top, bottom = fig.axes
    assert top.get_ylim() == (0.0, 1.0)  # 0.95 + 0.12 would reach an impossible 107 %
    from matplotlib.container import BarContainer

    bar = next(c for c in bottom.containers if isinstance(c, BarContainer))
    assert bar.patches[0].get_height() == pytest.approx(0.02)  # CML − base
    (segment,) = bar.errorbar.lines[2][0].get_segments()
    assert [y for _, y in segment] == pytest.approx([-0.03, 0.07])  # ± the CI over seeds
    lo, hi = bottom.get_ylim()
    assert -1.0 <= lo < -0.03 and 0.07 < hi <= 1.0
    plt.close(fig)


def test_preset_notes_name_their_algorithms_where_they_differ(monkeypatch, tmp_path):
    """A fresh user saw two "cora: compare's preset ... differs" notes, one with `meta_lr 0.001 (train: 0.0001)`
    (train's MAML default since session 27) and one without (ProtoNet's), and had to guess which was which."""
    monkeypatch.setitem(compare.PRESETS, "synthetic", ("graph-table.yaml", {
        "data": {"graph": "synthetic", "ways": 2, "synthetic_nodes": 300, "synthetic_classes": 12},
        "train": {"meta_lr": 0.001}}))
    logs: list[str] = []
    run_compare(["synthetic"], ["maml", "protonet"], [0], tmp_path / "runs", TINY, log=logs.append)
    notes = [m for m in logs if m.startswith("note: synthetic")]
    assert any(n.startswith("note: synthetic (maml): ") and "meta_lr 0.001 (train: 0.0001)" in n for n in notes)
    assert not any("(protonet)" in n and "meta_lr" in n for n in notes)  # ProtoNet's default is 0.001 too
    same: list[str] = []
    run_compare(["synthetic"], ["maml", "anil"], [0], tmp_path / "runs2", TINY, log=same.append)
    lines = [m for m in same if m.startswith("note: synthetic")]
    assert len(lines) == 1 and lines[0].startswith("note: synthetic: ")  # one note, no names, where they agree
