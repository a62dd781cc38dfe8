"""Protocol presets: the settings a published protocol used, filled in where the user left a setting unset.

``tlp`` is the protocol of Tan et al.'s "Transductive Linear Probing" code (LoG 2022, repository TLP-FSNC), which
the CML paper (Shin et al., UAI 2024, §4.3, Table 3) says it used for node classification (PAPER.md §1.1):

- class split drawn once per dataset with numpy's legacy RNG seeded 1234 (:func:`tlp_split`);
- raw features; the GCN of ``gmeta``/``ammgnn`` aggregates with the row-normalised ``D⁻¹(A + I)``;
- 5 query nodes per class in training and validation, 10 at test; meta-batch 1;
- validation every 10 episodes on 20 tasks; early stopping after 10 validations without improvement;
- for ``gmeta``/``ammgnn``, TLP's inner step when unset: 0.05 for G-Meta, 0.1 for AMM-GNN but 0.05 on
  Amazon-Computer (:func:`tlp_inner_lr`);
- TLP reports the mean over 100 test tasks; we still evaluate on ≥ 500 fixed tasks and report TLP's 100-task
  figure beside it (``tlp100_mean`` in ``summary.json``).

Precedence: dataclass defaults < protocol preset < domain defaults never override either < YAML < CLI flags,
i.e. the preset only fills settings that are still ``None`` after the YAML file and the flags.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cmlgraph.errors import ConfigError

PROTOCOLS = ("tlp",)

#: TLP's train/val/test class counts per dataset (its table; CiteSeer 2/2/2, PAPER.md §1.1).
TLP_COUNTS: dict[str, tuple[int, int, int]] = {
    "citeseer": (2, 2, 2),
    "amazon-computers": (4, 3, 3),
    "cora-full": (40, 15, 15),
    "cora": (3, 2, 2),
    "coauthor-cs": (5, 5, 5),
    "ogbn-arxiv": (20, 10, 10),
}

#: Settings the ``tlp`` preset fills when they are unset (``None``).
TLP_PRESET: dict[str, dict[str, Any]] = {
    "data": {"queries": 5, "test_queries": 10, "features": "raw"},
    "train": {"meta_batch": 1, "val_every": 10, "val_tasks": 20, "patience": 10},
}

#: Test tasks of TLP's reported figure (drawn fresh; we draw them once, seeded, and score the best model).
TLP_TEST_TASKS = 100


def tlp_split(counts: tuple[int, int, int], seed: int = 1234) -> dict[str, list[int]]:
    """TLP's class split: ``test = choice(range(C), n_test)``, ``val = choice(sorted(rest), n_val)``, train = rest.

    Both draws come, in that order, from one numpy legacy ``RandomState(seed)`` (as ``np.random.seed(1234)`` followed
    by two ``np.random.choice`` calls), without replacement; ``C = sum(counts)``.

    Args:
        counts: ``(train, val, test)`` class counts.
        seed: TLP's seed (1234).

    Returns:
        ``{"train", "val", "test"}`` → sorted class ids.
    """
    n_train, n_val, n_test = (int(c) for c in counts)
    rng = np.random.RandomState(seed)
    classes = list(range(n_train + n_val + n_test))
    test = [int(c) for c in rng.choice(classes, n_test, replace=False)]
    rest = sorted(set(classes) - set(test))
    val = [int(c) for c in rng.choice(rest, n_val, replace=False)]
    train = sorted(set(rest) - set(val))
    return {"train": train, "val": sorted(val), "test": sorted(test)}


def tlp_split_for(dataset: str) -> dict[str, list[int]]:
    """TLP's split of a registered dataset.

    Raises:
        ConfigError: TLP's table has no split for this dataset.
    """
    if dataset not in TLP_COUNTS:
        raise ConfigError(f"--protocol tlp has no class split for {dataset!r}; TLP's table covers "
                          f"{', '.join(TLP_COUNTS)}. Pass --split TRAIN/VAL/TEST or a JSON file of class ids")
    return tlp_split(TLP_COUNTS[dataset])


def tlp_inner_lr(algo: str, dataset: str) -> float | None:
    """TLP's inner step size: G-Meta 0.05; AMM-GNN 0.1, except 0.05 on Amazon-Computer; ``None`` for other algos."""
    if algo == "gmeta":
        return 0.05
    if algo == "ammgnn":
        return 0.05 if dataset == "amazon-computers" else 0.1
    return None


def apply_protocol(cfg: Any) -> Any:
    """Fill the unset (``None``) settings of ``cfg`` from its ``data.protocol`` preset, in place.

    Raises:
        ConfigError: Unknown protocol, or a protocol on a domain it does not cover.
    """
    name = cfg.data.protocol
    if name is None:
        return cfg
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; valid protocols: {', '.join(PROTOCOLS)}")
    if cfg.data.task != "graph":
        raise ConfigError(f"--protocol {name} is a node-classification protocol; use it with --task graph")
    for section, values in TLP_PRESET.items():
        target = getattr(cfg, section)
        for key, value in values.items():
            if getattr(target, key) is None:
                setattr(target, key, value)
    if cfg.algo.inner_lr is None:
        cfg.algo.inner_lr = tlp_inner_lr(cfg.algo.algo, cfg.data.graph)
    return cfg


__all__ = ["PROTOCOLS", "TLP_COUNTS", "TLP_PRESET", "TLP_TEST_TASKS", "apply_protocol", "tlp_inner_lr",
           "tlp_split", "tlp_split_for"]
