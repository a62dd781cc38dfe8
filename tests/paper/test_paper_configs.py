"""Every configs/paper/*.yaml loads and trains a few steps (tiny overrides), whoever added it.

Configs on real data (graphs, Omniglot) read $CMLGRAPH_DATA (CI sets it) and are marked slow; partial local data
is allowed, as the data here is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cmlgraph.config import apply_overrides, from_yaml
from cmlgraph.paper.cells import PAPER_CONFIGS

FILES = sorted(PAPER_CONFIGS.glob("*.yaml"))


def _param(path: Path):
    task = (yaml.safe_load(path.read_text()).get("data") or {}).get("task", "graph")
    return pytest.param(path, id=path.name, marks=[pytest.mark.slow] if task != "sinusoid" else [])


def test_the_paper_folder_has_the_sinusoid_and_image_configs():
    names = {f.name for f in FILES}
    assert {"sinusoid.yaml", "images-maml.yaml", "images-boil.yaml", "images-mamlpp.yaml",
            "images-sharp-maml.yaml"} <= names


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One processed-data cache for the module, so Omniglot is decoded once, not once per config."""
    folder = tmp_path_factory.mktemp("paper_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CMLGRAPH_CACHE", str(folder))
        yield folder


@pytest.mark.parametrize("path", [_param(f) for f in FILES])
def test_paper_config_runs_a_few_steps(path, tmp_path, data_root, cache):
    from cmlgraph.train.trainer import train

    cfg = from_yaml(path)
    tiny = {"train": {"steps": 2, "meta_batch": 1, "val_every": 2, "val_tasks": 1, "test_tasks": 2},
            "run": {"runs_dir": str(tmp_path / "runs"), "name": "tiny"}}
    if cfg.data.task != "sinusoid":
        tiny["data"] = {"data_root": str(data_root), "allow_partial": True}
        if cfg.data.graph == "synthetic" and cfg.data.protocol == "tlp":  # Table 3's configs take the graph by flag
            tiny["data"].update(graph="citeseer", ways=2, shots=1)
    run_dir, summary = train(apply_overrides(cfg, tiny, "test"), progress=False)
    assert summary["steps"] == 2 and summary["num_tasks"] == 2
    assert json.loads((run_dir / "summary.json").read_text())["algorithm"] == cfg.algo.algo
