"""`cmlgraph leaderboard`: numbers equal a hand computation from the runs' scores.pt, methods are paired only on
identical test tasks, finished runs are reused, bad CLI input is one line naming the problem."""

from __future__ import annotations

import csv
import math
import shutil

import pytest
import torch
from scipy.stats import t as student_t

from cmlgraph.cli import main
from cmlgraph.errors import ConfigError
from cmlgraph.leaderboard import Method, Setting, build_board, obtain_runs, parse_methods, write_outputs
from cmlgraph.leaderboard import methods as methods_module
from cmlgraph.train.pairing import check_same_tasks

TINY = {"train": {"steps": 2, "meta_batch": 2, "val_every": 2, "val_tasks": 3, "test_tasks": 6}}
TINY_YAML = "train:\n  steps: 2\n  meta_batch: 2\n  val_every: 2\n  val_tasks: 3\n  test_tasks: 6\n"
SETTING = Setting("synthetic", 2, 1)
METHODS = [Method("protonet"), Method("maml"), Method("maml", True)]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Six tiny runs (protonet, maml, maml+cml × seeds 0, 1) on the synthetic graph, trained once."""
    runs_dir = tmp_path_factory.mktemp("leaderboard") / "runs"
    log: list[str] = []
    found = obtain_runs([SETTING], METHODS, SEEDS, runs_dir, overrides=TINY, log=log.append)
    assert sum("] training " in m for m in log) == 6
    return runs_dir, found


def _scores(run):
    return torch.load(run / "scores.pt", weights_only=True)["scores"].tolist()


def _mean_ci(xs):
    n = len(xs)
    m = sum(xs) / n
    return m, student_t.ppf(0.975, n - 1) * math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


def test_table_equals_hand_computation_from_scores(runs, tmp_path, monkeypatch):
    runs_dir, found = runs
    monkeypatch.setattr(methods_module, "BASELINES", ("protonet",))  # the only baseline on this board
    board = build_board(found, [SETTING], METHODS, SEEDS)
    write_outputs(board, tmp_path)
    rows = {r["method"]: r for r in csv.DictReader(open(tmp_path / "leaderboard.csv"))}
    seed_means = {m: [sum(_scores(found[(SETTING, m, s)])) / 6 for s in SEEDS] for m in METHODS}
    for m in METHODS:
        mean, ci = _mean_ci(seed_means[m])
        assert float(rows[m.name]["mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(rows[m.name]["ci95"]) == pytest.approx(ci, abs=1e-12)
        assert rows[m.name]["best_baseline"] == "protonet"
    assert rows["protonet"]["diff_vs_best"] == ""  # the best baseline is not compared with itself
    base = Method("protonet")
    for m in METHODS[1:]:
        per_seed = [a - b for a, b in zip(seed_means[m], seed_means[base], strict=True)]
        per_task = [a - b for s in SEEDS for a, b in zip(_scores(found[(SETTING, m, s)]),
                                                         _scores(found[(SETTING, base, s)]), strict=True)]
        assert float(rows[m.name]["diff_vs_best"]) == pytest.approx(_mean_ci(per_seed)[0], abs=1e-12)
        assert float(rows[m.name]["diff_vs_best_ci95"]) == pytest.approx(_mean_ci(per_seed)[1], abs=1e-12)
        assert float(rows[m.name]["diff_vs_best_ci95_tasks"]) == pytest.approx(_mean_ci(per_task)[1], abs=1e-12)
        assert int(rows[m.name]["paired_tasks"]) == 12
    ranks = [int(r["rank"]) for r in sorted(rows.values(), key=lambda r: -float(r["mean"]))]
    assert ranks == [1, 2, 3]
    (cml,) = list(csv.DictReader(open(tmp_path / "leaderboard-cml.csv")))
    diff = [a - b for a, b in zip(seed_means[Method("maml", True)], seed_means[Method("maml")], strict=True)]
    assert cml["algorithm"] == "maml"
    assert float(cml["diff_mean"]) == pytest.approx(_mean_ci(diff)[0], abs=1e-12)
    assert float(cml["diff_ci95"]) == pytest.approx(_mean_ci(diff)[1], abs=1e-12)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "## synthetic 2-way 1-shot" in md and "Best baseline: protonet." in md and "## CML − base" in md
    assert (tmp_path / "leaderboard.png").stat().st_size > 0
    # meta-trained runs that kept their untrained start are named under the tables (a new-user trial's two MAML
    # arms at best step 0 showed a CML difference of +0.00 as a result)
    import json

    from cmlgraph.compare import kept_its_start

    kept = [run.name for run in found.values() if kept_its_start(json.loads((run / "summary.json").read_text()))]
    note = next((line for line in md.splitlines() if "kept their step-0 parameters" in line), "")
    assert all(name in note for name in kept) and (note.startswith(f"Note: {len(kept)} ") if kept else not note)


def test_finished_runs_are_reused_not_retrained(runs):
    runs_dir, found = runs
    log: list[str] = []

    def never(cfg):
        raise AssertionError(f"retrained {cfg.algo.algo}")

    again = obtain_runs([SETTING], METHODS, SEEDS, runs_dir, overrides=TINY, train_fn=never, log=log.append)
    assert again == found
    assert len(log) == 6 and all("] reusing " in m for m in log)


def test_pairs_only_identical_test_tasks(runs, tmp_path):
    _, found = runs
    maml0, maml1 = found[(SETTING, Method("maml"), 0)], found[(SETTING, Method("maml"), 1)]
    check_same_tasks(maml0, found[(SETTING, Method("protonet"), 0)])  # same seed and data settings: pairs
    with pytest.raises(ConfigError, match="test tasks differ") as err:
        check_same_tasks(maml0, maml1)  # another seed: other tasks, yet the same number of them
    assert str(maml0) in str(err.value) and str(maml1) in str(err.value)
    # A board whose CML run of seed 0 was evaluated on other tasks refuses to pair it, naming both runs.
    swapped = dict(found)
    swapped[(SETTING, Method("maml", True), 0)] = found[(SETTING, Method("maml", True), 1)]
    with pytest.raises(ConfigError, match="cannot pair .*maml-s0 with .*maml\\+cml-s1: their test tasks differ"):
        build_board(swapped, [SETTING], METHODS, SEEDS)
    # An altered test_episodes.pt is caught even when the score count is unchanged.
    forged = tmp_path / "forged"
    shutil.copytree(maml0, forged)
    eps = torch.load(forged / "test_episodes.pt", weights_only=True)
    eps["query"] = eps["query"].flip(0) if torch.is_tensor(eps["query"]) else eps["query"][::-1]
    torch.save(eps, forged / "test_episodes.pt")
    with pytest.raises(ConfigError, match="forged.*test tasks differ|test tasks differ.*forged"):
        check_same_tasks(maml0, forged)
    (forged / "test_episodes.pt").unlink()
    with pytest.raises(ConfigError, match="no test_episodes.pt"):
        check_same_tasks(maml0, forged)


def test_method_names():
    assert [m.name for m in parse_methods(["maml+cml", "protonet"])] == ["maml+cml", "protonet"]
    skipped: list[str] = []
    default = parse_methods(None, log=skipped.append)  # unregistered defaults are left out, and said so
    assert all(m.name in methods_module.DEFAULT_METHODS for m in default) and Method("maml", True) in default
    with pytest.raises(ConfigError, match="unknown method 'reptile'"):
        parse_methods(["reptile"])
    with pytest.raises(ConfigError, match="given twice"):
        parse_methods(["maml", "maml"])


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--methods", "reptile"], "unknown method 'reptile'"),
        (["--methods", "maml,maml"], "given twice"),
        (["--methods", ""], "empty list"),
        (["--graphs", "nosuch"], "no leaderboard preset .* give --ways and --shots"),
        (["--seeds", "0,x"], "not a comma-separated list of integers"),
        (["--seeds", "0,0"], "seed is repeated"),
        (["--shots", "0"], "--shots 0"),
        (["--ways", "1"], "--ways 1"),
        (["--steps", "0"], "--steps 0"),
        (["--config", "nope.yaml"], "nope.yaml"),
    ],
)
def test_cli_bad_input_one_line_error(tmp_path, capsys, args, pattern):
    with pytest.raises(SystemExit) as exc:
        main(["leaderboard", "--graphs", "synthetic", "--methods", "maml", *args, "--runs-dir", str(tmp_path / "r")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    import re

    assert re.search(pattern, err), err
    assert not (tmp_path / "r").exists()


def test_cli_reuses_runs_and_writes_outputs(runs, tmp_path, capsys):
    runs_dir, _ = runs
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    with pytest.raises(SystemExit) as exc:
        main(["leaderboard", "--graphs", "synthetic", "--ways", "2", "--shots", "1", "--methods",
              "protonet,maml,maml+cml", "--seeds", "0,1", "--config", str(tmp_path / "tiny.yaml"),
              "--runs-dir", str(runs_dir), "--out", str(tmp_path / "out")])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.count("] reusing ") == 6 and "] training " not in out
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"leaderboard.md", "leaderboard.csv",
                                                               "leaderboard-cml.csv", "leaderboard.png"}
    # the same folder again with a board that has no CML pair: the older CML table does not stay behind
    with pytest.raises(SystemExit) as exc:
        main(["leaderboard", "--graphs", "synthetic", "--ways", "2", "--shots", "1", "--methods",
              "protonet,maml", "--seeds", "0,1", "--config", str(tmp_path / "tiny.yaml"),
              "--runs-dir", str(runs_dir), "--out", str(tmp_path / "out")])
    assert exc.value.code == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"leaderboard.md", "leaderboard.csv", "leaderboard.png"}


def test_steps_override_shortens_meta_learning_not_baselines(monkeypatch):
    from cmlgraph.leaderboard import method_config

    monkeypatch.setattr(methods_module, "BASELINES", ("protonet",))
    over = {"train": {"steps": 3, "test_tasks": 7}}
    base, meta = (method_config(SETTING, Method(a), 0, overrides=over) for a in ("protonet", "maml"))
    assert (meta.train.steps, meta.train.test_tasks) == (3, 7)
    assert base.train.steps != 3 and base.train.test_tasks == 7
    assert over == {"train": {"steps": 3, "test_tasks": 7}}  # the caller's overrides are not changed


def test_a_graph_file_given_by_its_absolute_path_names_its_runs_by_the_file(tmp_path, capsys):
    """``--graphs /data/mysbm.npz``: the runs are named ``mysbm-2w1s-...`` (the path made a run name that is no
    folder name, and the leaderboard failed after it had started: a new-user trial)."""
    from cmlgraph.graphs import load_graph

    g = load_graph("synthetic", num_nodes=300, num_classes=15)
    path = g.save(tmp_path / "data" / "mysbm.npz")
    assert Setting(str(path), 2, 1).slug == "mysbm-2w1s"
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    with pytest.raises(SystemExit) as exc:
        main(["leaderboard", "--graphs", str(path.resolve()), "--ways", "2", "--shots", "1", "--methods",
              "sgc-proto,protonet", "--seeds", "0", "--config", str(tmp_path / "tiny.yaml"),
              "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert exc.value.code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["mysbm-2w1s-protonet-s0",
                                                                      "mysbm-2w1s-sgc-proto-s0"]


def test_runs_that_kept_their_untrained_start_are_named_under_the_board():
    from cmlgraph.compare import Paired
    from cmlgraph.leaderboard.outputs import markdown
    from cmlgraph.leaderboard.table import Board, CmlRow

    paired = Paired("accuracy", (0.9, 0.1), (0.9, 0.1), (0.0, 0.0), 2, 200, ["m0", "m1"], ["c0", "c1"],
                    kept_start=["m0", "c0", "c1"])
    md = markdown(Board(entries=[], cml=[CmlRow(SETTING, "maml", paired)]))
    assert "Note: 3 meta-trained runs kept their step-0 parameters" in md and "m0, c0, c1" in md
    paired.kept_start = []
    assert "step-0" not in markdown(Board(entries=[], cml=[CmlRow(SETTING, "maml", paired)]))
