"""Instant startup: `import cmlgraph`, `cmlgraph --help`/`--version`/`runs` and every command's `--help` import
neither torch nor torch-geometric; sinusoid and image runs never import torch-geometric; `train --help` shows
the effective defaults."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest


def _python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_cmlgraph_loads_neither_torch_nor_pyg():
    res = _python("""
        import json, sys
        import cmlgraph
        cmlgraph.__version__, cmlgraph.__all__, cmlgraph.ConfigError, cmlgraph.Config, cmlgraph.list_runs
        print(json.dumps({"torch": "torch" in sys.modules, "pyg": "torch_geometric" in sys.modules}))
    """)
    assert res == {"torch": False, "pyg": False}


def test_lazy_names_and_subpackages_resolve():
    import cmlgraph

    assert cmlgraph.graphs.load_graph is cmlgraph.load_graph and cmlgraph.fit.__module__ == "cmlgraph.api"
    assert set(cmlgraph.__all__) <= set(dir(cmlgraph))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        cmlgraph.nope  # noqa: B018


def test_every_commands_help_leaves_torch_out(tmp_path):
    """Walks the real command tree, so a command added later with an eager heavy import fails here. ``runs`` also
    lists a folder holding a run with a checkpoint (whose step it reads), a finished run and a training-free one:
    reading their settings went through :mod:`cmlgraph.leaderboard`, whose ``__init__`` imported torch (2 s)."""
    import torch
    import yaml

    runs = tmp_path / "runs"
    for name, summary in (("stopped", None), ("done", {"metric": "mse", "mean": 0.5, "ci95": 0.1}),
                          ("baseline", {"metric": "accuracy", "mean": 0.7, "ci95": 0.02, "training_free": True})):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yaml").write_text(yaml.safe_dump(
            {"data": {"task": "graph", "graph": "cora"}, "algo": {"algo": "sgc-proto" if summary and
             summary.get("training_free") else "maml", "cml": True}, "train": {"steps": 8}}))
        (runs / name / "metrics.jsonl").write_text('{"step": 4, "loss": 1.0}\n')
        if summary is not None:
            (runs / name / "summary.json").write_text(json.dumps(summary))
    torch.save({"step": 4, "model": {"w": torch.zeros(3)}, "config": {"train": {"steps": 8}}},
               runs / "stopped" / "checkpoint.pt")
    res = _python("""
        import io, json, sys, contextlib
        import typer
        from cmlgraph.cli import app, main

        def paths(cmd, prefix):
            yield prefix
            for name, sub in getattr(cmd, "commands", {}).items():
                yield from paths(sub, prefix + [name])

        pulled, seen = {}, []
        for path in paths(typer.main.get_command(app), []):
            extra = [["--version"], ["runs", "--json", "."], ["runs", RUNS]] if not path else []
            for args in [[*path, "--help"], *extra]:
                with contextlib.redirect_stdout(io.StringIO()):
                    try:
                        main(args)
                    except SystemExit:
                        pass
                seen.append(" ".join(args))
                for mod in ("torch", "torch_geometric"):
                    if mod in sys.modules and mod not in pulled:
                        pulled[mod] = " ".join(args)
        from cmlgraph.runs import list_runs
        steps = {r["name"]: r["checkpoint_step"] for r in list_runs(RUNS)}
        print(json.dumps({"pulled": pulled, "seen": seen, "steps": steps}))
    """.replace("RUNS", repr(str(runs))))
    assert {"--help", "train --help", "predict --help", "embed --help", "runs --help", "datasets list --help",
            "--version", "runs --json ."} <= set(res["seen"])
    assert res["steps"] == {"stopped": 4, "done": None, "baseline": None}
    assert res["pulled"] == {}, f"these commands import torch/torch_geometric at --help time: {res['pulled']}"


def test_sinusoid_and_image_runs_never_import_pyg(tmp_path):
    res = _python(f"""
        import json, sys
        import cmlgraph
        for task in ("sinusoid", "digits"):
            cfg = cmlgraph.make_config(task=task, steps=1, val_every=1, val_tasks=2, test_tasks=2, meta_batch=2,
                                       runs_dir={str(tmp_path)!r}, name=task)
            cmlgraph.fit_config(cfg)
        print(json.dumps({{"pyg": "torch_geometric" in sys.modules}}))
    """)
    assert res == {"pyg": False}


def test_train_help_shows_effective_defaults_and_flags_stay_unset():
    import inspect

    from cmlgraph.cli import train

    out = subprocess.run([sys.executable, "-m", "cmlgraph", "train", "--help"], capture_output=True, text=True,
                         timeout=60, env={"COLUMNS": "200", "PATH": ""}).stdout
    flat = " ".join(out.split())
    for text in ("N classes per task. [default: (5)]", "[default: (maml)]",
                 "[default: (0.001; 0.0001 for a MAML-family graph run from the PCA start (--init pca))]",
                 "domain default: sinusoid 5, graph 3, omniglot/digits 1", "[default: (true)]"):
        assert text in flat, text
    opts = [p for p in inspect.signature(train).parameters.values() if hasattr(p.default, "help")]
    assert all(p.default.default is None for p in opts if p.name != "quiet")  # None = not given: --config wins
    # each option says its default, or (unset: "none") says nothing rather than "[default: (none)]"
    assert all(isinstance(p.default.show_default, str) or p.default.show_default is False
               for p in opts if p.name != "quiet")
    assert "(none)" not in flat
    # a switch takes no value: no "<bool>" beside it (a fresh user read "--quiet <bool>" as "--quiet true")
    switches = [ln for ln in out.splitlines() if re.match(r"\W*--(quiet|cml|first-order)\b", ln)]
    assert len(switches) == 3 and not any("<bool>" in ln for ln in switches), switches


def test_no_help_shows_bool_value_type() -> None:
    """``--help`` and every switch take no value: no ``<bool>`` in any command's help (typer prints one for
    click's built-in help option unless cmlgraph blanks it)."""
    for command in ([], ["train"], ["reproduce"], ["datasets"], ["datasets", "list"], ["bench"]):
        out = subprocess.run([sys.executable, "-m", "cmlgraph", *command, "--help"], capture_output=True,
                             text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""}).stdout
        assert "--help" in out, command
        assert "<bool>" not in out, (command, [ln for ln in out.splitlines() if "<bool>" in ln])


def test_reproduce_list_checks_runs_too() -> None:
    out = subprocess.run([sys.executable, "-m", "cmlgraph", "reproduce", "--runs", "0", "--list"],
                         capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
    assert out.returncode != 0 and "--runs 0: give at least 1 run per cell" in out.stdout + out.stderr


def test_checking_a_sinusoid_run_for_cuda_graphs_never_imports_pyg():
    """``ineligible`` tells G-Meta's ball inputs apart without importing the graph stack (which pulls PyG)."""
    res = _python("""
        import json, sys
        from types import SimpleNamespace
        import torch
        from cmlgraph.api import make_config
        from cmlgraph.core.episode import Episode
        from cmlgraph.train.cuda_graphs import ineligible
        from cmlgraph.train.trainer import prepare
        from cmlgraph.algorithms.registry import get_algorithm
        cfg = prepare(make_config(task="sinusoid", first_order=True))
        cfg.train.device = "cuda"
        exp = SimpleNamespace(algo=get_algorithm(cfg.algo), device=torch.device("cuda"))
        eps = [Episode(torch.zeros(5, 1), torch.zeros(5, 1), torch.zeros(5, 1), torch.zeros(5, 1))] * 2
        print(json.dumps({"why": ineligible(cfg, exp, episodes=eps), "pyg": "torch_geometric" in sys.modules}))
    """)
    assert res == {"why": None, "pyg": False}
