"""Every bad setting is answered before any work starts, with a one-line message; run folders are never overwritten
by accident and runs started at the same moment get distinct folders."""

from __future__ import annotations

import multiprocessing as mp
import threading

import pytest
import torch
from conftest import xfail_if_cli_resume_bug

from cmlgraph.cli import main
from cmlgraph.config import Config, apply_overrides, from_yaml
from cmlgraph.errors import CmlgraphError, ConfigError
from cmlgraph.train.run_dir import RunLock, create_run_dir
from cmlgraph.train.trainer import prepare, train

BASE = ["train", "--task", "sinusoid", "--steps", "2", "--meta-batch", "2", "--test-tasks", "2", "--quiet"]


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--meta-lr", "inf"], r"--meta-lr \(train\.meta_lr\) = inf: must be a finite number"),
        (["--meta-lr", "nan"], r"meta_lr\) = nan"),
        (["--gamma", "-1"], r"--gamma -1"),
        (["--seed", "-1"], r"--seed -1"),
        (["--seed", "99999999999"], r"--seed \(train\.seed\) = 99999999999: too large"),
        (["--steps", "0"], r"--steps 0"),
        (["--inner-steps", "0"], r"--inner-steps 0"),
        (["--nan-policy", "maybe"], r"--nan-policy \(train\.nan_policy\) = 'maybe'.*stop, skip"),
        (["--device", "tpu"], r"--device 'tpu'"),
        (["--device", "cuda:7"], r"cuda"),
        (["--control", "bogus"], r"--control = 'bogus'"),
        (["--algo", "protonet"], r"protonet .*regression"),
        (["--dropout", "1.5", "--task", "graph"], r"--dropout \(model\.dropout\) = 1.5"),
        (["--dropout", "0.5"], r"--dropout is for graph, not --task sinusoid: drop it"),
        (["--name", "../escape"], r"not a plain folder name"),
        (["--name", "x" * 300], r"too long"),
        (["--ways", "1", "--task", "graph"], r"--ways 1"),
        (["--task", "graph", "--split", "7/x/3"], r"--split '7/x/3'"),
        (["--task", "graph", "--graph", "nosuchgraph"], r"unknown dataset 'nosuchgraph'.*synthetic"),
        (["--resume", "nowhere", "--steps", "3"], r"--resume takes its settings from the run folder"),
        (["--resume", "nowhere"], r"not a run folder"),
    ],
)
def test_bad_flag_one_line_no_run_folder(tmp_path, capsys, args, pattern):
    import re

    runs = tmp_path / "runs"
    argv = [*BASE, "--runs-dir", str(runs), *args] if "--resume" not in args else ["train", *args]
    if "--task" in args:
        argv.remove("--task")
        argv.remove("sinusoid")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    if pattern == "not a run folder":
        xfail_if_cli_resume_bug(err)
    assert re.search(pattern, err), err
    assert not runs.exists() or not any(runs.iterdir())


def test_runs_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    cfg = Config()
    cfg.data.task = "sinusoid"
    cfg.run.runs_dir = str(tmp_path / "f" / "sub")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        prepare(cfg)


def test_unknown_keys_list_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key train\.stepz; valid keys of train: steps, meta_batch"):
        apply_overrides(Config(), {"train": {"stepz": 3}}, "x")
    with pytest.raises(ConfigError, match=r"unknown section 'trian'; valid sections: data, model, algo, train, run"):
        apply_overrides(Config(), {"trian": {}}, "x")
    with pytest.raises(ConfigError, match=r"section 'model' must be a mapping.*list"):
        apply_overrides(Config(), {"model": [1, 2]}, "x")
    with pytest.raises(ConfigError, match=r"train\.steps = 2.5 has the wrong type"):
        apply_overrides(Config(), {"train": {"steps": 2.5}}, "x")
    with pytest.raises(ConfigError, match=r"data\.allow_partial = 'yes' has the wrong type"):
        apply_overrides(Config(), {"data": {"allow_partial": "yes"}}, "x")


def test_yaml_float_without_dot_is_accepted(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  meta_lr: 1e-3\n")  # YAML 1.1 reads this as a string
    assert from_yaml(tmp_path / "c.yaml").train.meta_lr == 1e-3


def test_python_built_config_is_type_checked():
    cfg = Config()
    cfg.data.task = "sinusoid"
    cfg.train.steps = "5"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=r"train\.steps = '5' has the wrong type"):
        prepare(cfg)


def test_impossible_few_shot_setting_names_classes_before_run_folder(tmp_path):
    from cmlgraph.domains.graph import register_graph
    from cmlgraph.graphs import from_arrays

    y = torch.tensor([0] * 8 + [1] * 8 + [2] * 3 + [3] * 8)  # class 2 has 3 nodes
    edges = torch.stack([torch.arange(27), (torch.arange(27) + 1) % 27])
    register_graph(from_arrays(edges, torch.randn(27, 4), y, name="short-graph", split={"train": [0, 1],
                                                                                          "test": [2, 3]}))
    cfg = Config()
    cfg.data.graph, cfg.data.ways, cfg.data.shots, cfg.data.queries = "short-graph", 2, 2, 3
    cfg.run.runs_dir = str(tmp_path / "runs")
    # Class 2 is dropped at fit time (named in a warning) and the error says why the explicit split cannot work.
    expected = (r"'test' split has 1 class \(3\) but ways=2.*lower shots or queries \(dropped 1 class with fewer "
                r"than shots\+queries=5 labelled nodes: 2 \(3 nodes\)\)")
    with pytest.raises(ConfigError, match=expected), pytest.warns(UserWarning, match="dropped 1 class"):
        train(cfg, progress=False)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _cfg(tmp_path, name="same", overwrite=False):
    cfg = Config()
    cfg.data.task = "sinusoid"
    cfg.run.runs_dir, cfg.run.name, cfg.run.overwrite = str(tmp_path), name, overwrite
    return prepare(cfg)


def test_existing_folder_is_never_overwritten_without_flag(tmp_path):
    first = create_run_dir(_cfg(tmp_path))
    (first / "config.yaml").write_text("mine")
    second = create_run_dir(_cfg(tmp_path))
    assert second.name == "same-1" and (first / "config.yaml").read_text() == "mine"
    third = create_run_dir(_cfg(tmp_path, overwrite=True))
    assert third == first and not (first / "config.yaml").exists()


def test_overwrite_refuses_non_run_folders_and_folders_in_use(tmp_path):
    other = tmp_path / "same"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not a cmlgraph run folder"):
        create_run_dir(_cfg(tmp_path, overwrite=True))
    assert (other / "thesis.tex").exists()
    (other / "config.yaml").write_text("x")
    with RunLock(other), pytest.raises(CmlgraphError, match="in use by another running cmlgraph process"):
        create_run_dir(_cfg(tmp_path, overwrite=True))
    assert (other / "thesis.tex").exists()


def test_threads_starting_at_the_same_moment_get_distinct_folders(tmp_path):
    cfgs = [_cfg(tmp_path, name) for name in ["same"] * 8 + [None] * 8]  # None: timestamped default names
    barrier, out, errors = threading.Barrier(len(cfgs)), [], []

    def start(cfg):
        barrier.wait()
        try:
            out.append(create_run_dir(cfg))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(c,)) for c in cfgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(out)) == len(cfgs) and all(p.is_dir() for p in out)


def _make(cfg, barrier, queue):
    barrier.wait()
    queue.put(str(create_run_dir(cfg)))


def test_processes_starting_at_the_same_moment_get_distinct_folders(tmp_path):
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_make, args=(_cfg(tmp_path, "race"), barrier, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    got = {queue.get(timeout=5) for _ in procs}
    assert len(got) == 4 and all(p.exitcode == 0 for p in procs)


def test_resume_refuses_a_folder_in_use(tmp_path):
    from cmlgraph.train.trainer import resume

    run = create_run_dir(_cfg(tmp_path))
    (run / "config.yaml").write_text("data:\n  task: sinusoid\n")
    with RunLock(run), pytest.raises(CmlgraphError, match="in use"):
        resume(run, progress=False)
