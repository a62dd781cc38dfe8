"""fit() says which classes went where when it re-splits a user's graph (issue 19 item 5)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import cmlgraph
from cmlgraph.graphs import from_arrays
from cmlgraph.graphs.fit_classes import fit_graph

FAST = dict(steps=2, val_every=1, val_tasks=4, test_tasks=8, meta_batch=2, hidden=8)
NAMES = ["ant", "bee", "cat", "dog", "elk", "fox"]


def _six(**kwargs):
    labels = [c for c in NAMES for _ in range(10)]
    n = len(labels)
    ei = np.stack([np.arange(n), (np.arange(n) + 1) % n])
    return from_arrays(ei, np.random.default_rng(0).normal(size=(n, 4)), labels, name="six", **kwargs)


def _by_label(split: list[str]) -> str:
    return ", ".join(repr(c) for c in sorted(split))


def test_a_resplit_names_the_classes_in_the_console_and_the_summary(tmp_path: Path, capsys) -> None:
    g = _six()
    assert [len(g.splits[k]) for k in ("train", "val", "test")] == [4, 1, 1]  # what print(graph) shows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, summary = cmlgraph.fit(g, ways=2, shots=2, queries=3, runs_dir=str(tmp_path), verbose=True, **FAST)
    labels = summary["class_labels"]
    assert [len(labels[k]) for k in ("train", "val", "test")] == [2, 2, 2]
    used = "; ".join(f"{k} {_by_label(labels[k])}" for k in ("train", "val", "test"))
    notes = [n for n in summary["notes"] if "re-split" in n]
    assert len(notes) == 1 and "re-split 2/2/2 for ways=2" in notes[0] and used in notes[0], notes
    assert "the graph's own split, 4/1/1" in notes[0]
    out = " ".join(capsys.readouterr().out.split())
    assert "note: six: the classes were re-split 2/2/2" in out and used in out


def test_a_quiet_fit_warns_and_an_unchanged_split_says_nothing(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"re-split 2/2/2 for ways=2 \(the graph's own split was drawn without"):
        fit_graph(_six(), 2, 2, 3)
    fitted = _six(ways=2)  # built for ways=2: fit draws the same split, so nothing to say
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        same = fit_graph(fitted, 2, 2, 3)
    assert same.splits == fitted.splits and not [w for w in caught if "re-split" in str(w.message)]
    with pytest.warns(UserWarning, match=r"re-split 3/0/3 for ways=3 \(the split given to fit\)"):
        fit_graph(_six(), 3, 2, 3, split="3/0/3")
