"""Run folders: unique names, never overwritten by accident, created only once all input is validated."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from cmlgraph.config import Config
from cmlgraph.errors import ConfigError

_SAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def default_name(cfg: Config) -> str:
    """A readable run name from the settings and the time, e.g. ``synthetic-maml-cml-5w3s-s0-20261126-2310``."""
    what = cfg.data.task if cfg.data.task != "graph" else cfg.data.graph
    algo = cfg.algo.algo + ("-cml" if cfg.algo.cml else "") + ("" if cfg.algo.control == "none"
                                                               else f"-{cfg.algo.control}")
    shape = f"k{cfg.data.shots}" if cfg.data.task == "sinusoid" else f"{cfg.data.ways}w{cfg.data.shots}s"
    return _SAFE.sub("_", f"{what}-{algo}-{shape}-s{cfg.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def create_run_dir(cfg: Config) -> Path:
    """Create the run folder; an existing name gets a numeric suffix unless ``overwrite`` is set.

    ``os.mkdir`` is atomic, so two runs started at the same moment never share a folder.
    """
    parent = Path(cfg.run.runs_dir)
    parent.mkdir(parents=True, exist_ok=True)
    name = cfg.run.name or default_name(cfg)
    if name != _SAFE.sub("_", name) or name in (".", ".."):
        raise ConfigError(f"run name {name!r} has characters that are unsafe in a folder name; use letters, "
                          f"digits and . _ + -")
    target = parent / name
    if cfg.run.overwrite and target.exists():
        shutil.rmtree(target)
    for i in range(10_000):
        candidate = target if i == 0 else parent / f"{name}-{i}"
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            continue
    raise ConfigError(f"could not find a free run folder name under {parent}; pass --name")
