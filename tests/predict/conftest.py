"""Tiny trained graph runs shared by the predict/embed tests (a few meta-iterations each)."""

from __future__ import annotations

import pytest

import cmlgraph

#: A 300-node synthetic graph with 15 classes: 3-way 2-shot episodes in every split.
TINY = dict(task="graph", graph="synthetic", synthetic_nodes=300, synthetic_classes=15, ways=3, shots=2, queries=4,
            steps=3, val_every=3, val_tasks=2, test_tasks=6, inner_steps=2)


def train_tiny(runs_dir, algo: str, **extra):
    """Train a tiny run of ``algo``; returns its folder."""
    cfg = cmlgraph.make_config(**{**TINY, **extra}, algo=algo, runs_dir=str(runs_dir),
                               name=f"{algo}-{'-'.join(f'{k}{v}' for k, v in extra.items())}")
    run, _ = cmlgraph.fit_config(cfg)
    return run


@pytest.fixture(scope="session")
def maml_run(tmp_path_factory):
    """A finished MAML + CML run on the tiny synthetic graph."""
    return train_tiny(tmp_path_factory.mktemp("runs"), "maml")
