"""Provenance: versions, device, command and commit in summary.json and as config.yaml's comment header."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from cmlgraph.cli import main
from cmlgraph.config import from_yaml
from cmlgraph.provenance import VERSION_KEYS, git_state


def _train(tmp_path, *extra):
    try:
        main(["train", "--task", "sinusoid", "--steps", "2", "--val-every", "2", "--test-tasks", "3", "--quiet",
              "--runs-dir", str(tmp_path), "--name", "p", *extra])
    except SystemExit as exc:
        assert exc.code == 0
    return tmp_path / "p"


def test_summary_and_config_record_versions_device_command_and_commit(tmp_path):
    run = _train(tmp_path)
    prov = json.loads((run / "summary.json").read_text())["provenance"]
    for key in (*VERSION_KEYS, "device", "command", "git_commit", "git_dirty", "platform", "time"):
        assert key in prov, key
    assert prov["torch"] and prov["torch_geometric"] and prov["python"].count(".") == 2
    assert prov["device"] == "cpu"
    assert prov["command"].startswith("cmlgraph train --task sinusoid --steps 2")
    assert prov["git_commit"] == git_state()["git_commit"]
    text = (run / "config.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert f"# cmlgraph: {prov['cmlgraph']}" in header
    assert any(h.startswith("# command: cmlgraph train") for h in header)
    # the header is comments: the file still loads with safe_load and round-trips through --config
    saved = yaml.safe_load(text)
    assert saved["data"]["task"] == "sinusoid" and "cmlgraph" not in saved
    assert from_yaml(run / "config.yaml").to_dict() == saved
    again = _train(tmp_path / "again", "--config", str(run / "config.yaml"))
    assert yaml.safe_load((again / "config.yaml").read_text())["train"] == saved["train"]


def test_api_call_is_recorded(tmp_path):
    import cmlgraph

    cfg = cmlgraph.make_config(task="sinusoid", steps=2, val_every=2, test_tasks=3, runs_dir=str(tmp_path), name="a")
    _, summary = cmlgraph.fit_config(cfg)
    assert summary["provenance"]["command"].startswith("cmlgraph.fit_config(")


def test_version_flag():
    out = subprocess.run([sys.executable, "-m", "cmlgraph", "--version"], capture_output=True, text=True, timeout=60)
    import cmlgraph

    assert out.returncode == 0 and out.stdout.strip() == f"cmlgraph {cmlgraph.__version__}"


def test_a_later_run_in_the_same_process_does_not_inherit_the_command(tmp_path):
    from cmlgraph.train.trainer import train

    _train(tmp_path)  # through the CLI entry point
    cfg = from_yaml(tmp_path / "p" / "config.yaml")
    cfg.run.name = "direct"
    _, summary = train(cfg, progress=False)
    assert not summary["provenance"]["command"].startswith("cmlgraph train")
