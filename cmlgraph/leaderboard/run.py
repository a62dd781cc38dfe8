"""Train what the leaderboard is missing and reuse what is finished.

Every method of a (graph, ways, shots) setting runs with the same data settings and seed, so they share the seed's
fixed test tasks; the pairing itself checks that (:func:`cmlgraph.train.pairing.check_same_tasks`). Runs are found
or trained exactly as ``cmlgraph compare`` does (:func:`cmlgraph.compare.obtain_run`): a finished run folder whose
resolved config matches is reused, whatever its name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cmlgraph.compare import obtain_runs as obtain_each
from cmlgraph.config import Config, apply_overrides, from_yaml
from cmlgraph.leaderboard.methods import Method, Setting

#: (setting, method, seed) → finished run folder.
Found = dict[tuple[Setting, Method, int], Path]


def method_config(setting: Setting, method: Method, seed: int, base: str | Path | None = None,
                  overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """The config of one leaderboard run: ``base`` (a YAML file; default: cmlgraph's defaults, the practitioner's
    ``cmlgraph train --graph G --ways N --shots K``), the setting, the method, the seed, then ``overrides``.

    A training-free baseline does not take ``train.steps`` from ``overrides`` (``--steps`` shortens meta-training,
    not, say, ``gcl-probe``'s own pretraining), so its runs are reused across boards of different ``--steps``.
    """
    if method.baseline and overrides and "steps" in overrides.get("train", {}):
        overrides = {**overrides, "train": {k: v for k, v in overrides["train"].items() if k != "steps"}}
    cfg = from_yaml(base) if base is not None else Config()
    apply_overrides(cfg, {"data": {"task": "graph", "graph": setting.graph, "ways": setting.ways,
                                   "shots": setting.shots},
                          "algo": {"algo": method.algo, "cml": method.cml}, "train": {"seed": seed}}, "leaderboard")
    if overrides:
        apply_overrides(cfg, overrides, "leaderboard overrides")
    return cfg


def obtain_runs(settings: Sequence[Setting], methods: Sequence[Method], seeds: Sequence[int], runs_dir: str | Path,
                base: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None,
                train_fn: Callable[[Config], Any] | None = None, log: Callable[[str], None] = print,
                console: Any = None, parallel_runs: int = 1) -> Found:
    """Every (setting, method, seed) run under ``runs_dir``: reused when finished, else trained.

    All configs are validated before any run is trained. Each run is announced as ``[i/N] reusing|training``;
    with a rich ``console`` the training runs show their progress bars there. New runs are named
    ``<graph>-<N>w<K>s-<method>-s<seed>`` (e.g. ``cora-2w3s-maml+cml-s0``). With ``parallel_runs`` N > 1, up to N
    missing runs of one shape (a method's seeds, or its two arms) train together in one process
    (:func:`cmlgraph.compare.obtain_runs`).
    """
    from cmlgraph.train.trainer import prepare

    runs_dir = Path(runs_dir)
    plan = []
    for setting in settings:
        for method in methods:
            for seed in seeds:
                cfg = method_config(setting, method, seed, base, overrides)
                prepare(cfg)
                plan.append((setting, method, seed, cfg))
    runs_dir.mkdir(parents=True, exist_ok=True)
    items = [(cfg, f"{setting.slug}-{method.name}-s{seed}", lambda m, i=i: log(f"[{i}/{len(plan)}] {m}"))
             for i, (setting, method, seed, cfg) in enumerate(plan, 1)]
    paths = obtain_each(items, runs_dir, train_fn, console, parallel_runs)
    return {(setting, method, seed): path for (setting, method, seed, _), path in zip(plan, paths, strict=True)}
