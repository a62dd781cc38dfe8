"""Bad CLI input exits non-zero with one line naming the problem, no traceback, no run folder."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(args, cwd):
    return subprocess.run([sys.executable, "-m", "cmlgraph", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["train", "--task", "sinusoid", "--algo", "reptile"], "unknown algorithm|--algo = 'reptile'"),
        (["train", "--task", "sinusoid", "--shots", "0"], "--shots 0"),
        (["train", "--task", "sinusoid", "--shots", "-2"], "--shots -2"),
        (["train", "--config", "nope.yaml"], "nope.yaml"),
        (["train", "--config", "bad.yaml"], "unknown key train.stepz"),
        (["train", "--task", "sinusoid", "--control", "noise"], "--no-cml"),
        (["train", "--task", "pictures"], "unknown task"),
        (["train", "--task", "sinusoid", "--ways", "3", "--gnn", "gat"],
         "--gnn is for graph; --ways is for digits/graph/omniglot, not --task sinusoid: drop them"),
        (["train", "--task", "sinusoid", "--test-tasks", "0"], "--test-tasks"),
        (["train", "--task", "sinusoid", "--val-tasks", "-1"], "--val-tasks"),
        (["train", "--features", "l2"], "--features"),
    ],
)
def test_bad_input_one_line_error_no_run_folder(tmp_path, args, pattern):
    (tmp_path / "bad.yaml").write_text("train:\n  stepz: 3\n")
    res = _run([*args, "--runs-dir", str(tmp_path / "runs")], tmp_path)
    assert res.returncode != 0
    err = res.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    import re

    assert re.search(pattern, err), err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_config_key_lists_valid_keys(tmp_path):
    (tmp_path / "bad.yaml").write_text("algo:\n  gama: 3\n")
    res = _run(["train", "--config", "bad.yaml"], tmp_path)
    assert res.returncode != 0 and "gamma" in res.stderr and "co_depth" in res.stderr


def test_train_and_eval_end_to_end(tmp_path):
    res = _run(["train", "--task", "sinusoid", "--shots", "5", "--steps", "6", "--meta-batch", "3",
                "--val-every", "3", "--test-tasks", "10", "--runs-dir", "runs", "--name", "e2e", "--quiet"],
               tmp_path)
    assert res.returncode == 0, res.stderr
    assert "test MSE" in res.stdout
    res = _run(["eval", "runs/e2e"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "mse" in res.stdout


def test_the_command_lines_warnings_are_plain_lines(capsys):
    """Under the real command line cmlgraph's warnings read ``warning: MESSAGE`` (``eval`` and ``predict`` showed
    ``.../typer/main.py:1445: UserWarning: ...`` and a line of typer's source); a warning from elsewhere keeps
    Python's format, which names its source."""
    import warnings
    from pathlib import Path

    import typer

    import cmlgraph.cli as cli

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        cli._plain_warnings()
        typer_main = str(Path(typer.__file__).parent / "main.py")
        warnings.warn_explicit("the classes were re-split 4/3/3", UserWarning, typer_main, 1445)
        warnings.warn_explicit("a run's note", RuntimeWarning, cli.__file__, 10)
        warnings.warn_explicit("torch's own", UserWarning, "/elsewhere/torch/nn/module.py", 3)
    err = capsys.readouterr().err
    assert "warning: the classes were re-split 4/3/3\n" in err and "warning: a run's note\n" in err
    assert "typer" not in err and "torch's own" not in err  # handed to Python's own display (here pytest's)
