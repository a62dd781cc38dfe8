"""``cmlgraph.fit``'s errors name its keyword arguments, not the command line's flags or config sections."""

from __future__ import annotations

from pathlib import Path

import pytest

import cmlgraph
from cmlgraph.api import api_names
from cmlgraph.errors import ConfigError


@pytest.mark.parametrize(("settings", "names", "not_named"), [
    ({"inner_lr": -1.0}, "inner_lr -1.0", "--inner-lr"),
    ({"test_tasks": 0}, "test_tasks = 0", "train.test_tasks"),
    ({"ways": "x"}, "setting ways = 'x' has the wrong type; expected int", "data.ways"),
    ({"patience": "a"}, "expected int | None", "<class"),
])
def test_fit_errors_name_keyword_arguments(tmp_path: Path, settings: dict, names: str, not_named: str) -> None:
    with pytest.raises(ConfigError) as err:
        cmlgraph.fit("synthetic", steps=2, runs_dir=str(tmp_path), **settings)
    assert names in str(err.value) and not_named not in str(err.value)
    assert not any(tmp_path.iterdir())  # refused before any run folder was written


def test_api_names_rewrites_only_fit_settings() -> None:
    assert api_names("--device cuda: none here; use --device cpu") == "device cuda: none here; use device cpu"
    assert api_names("--not-a-setting 3 and data.nope = 1") == "--not-a-setting 3 and data.nope = 1"
    assert api_names("--runs-dir is empty") == "runs_dir is empty"
    # a command's flags as the call's keyword arguments (a new-user trial read `algo sgc-proto features standard`)
    assert api_names("use `--algo sgc-proto --features standard` here") == \
        'use `algo="sgc-proto", features="standard"` here'
    assert api_names("try `--inner-lr 0.5` or `--steps 10`") == "try `inner_lr=0.5` or `steps=10`"
    assert api_names("`cmlgraph train --resume R`; `--nope 3`") == "`cmlgraph train --resume R`; `--nope 3`"
    assert api_names("use `cmlgraph predict --graph G.npz --features row`, or --features") == \
        "use `cmlgraph predict --graph G.npz --features row`, or features"  # a shell command keeps its flags
