"""Property-based (issue 12): any small custom graph, with string, tuple or int labels, isolated nodes, self loops,
directed and duplicate edges and small classes, either trains a few steps or raises the project's error naming the
user's labels and possible fixes (never an internal class id, a CLI flag or an impossible ``ways``)."""

from __future__ import annotations

import math
import re
import tempfile
import warnings

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import cmlgraph
from cmlgraph.errors import CmlgraphError

LABEL_POOLS = {
    "str": ["cat", "dog", "eel", "fox", "gnu", "hen"],
    "tuple": [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 0), ("d", 9)],
    "int": [7, 11, 13, 17, 19, 23],
}


@st.composite
def user_graphs(draw):
    kind = draw(st.sampled_from(sorted(LABEL_POOLS)))
    pool = LABEL_POOLS[kind][: draw(st.sampled_from([2, 4, 5, 6, 6]))]
    n = draw(st.integers(4, 30))
    labels = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    if draw(st.booleans()):  # some unlabelled nodes
        labels = [None if i % 5 == 4 else lab for i, lab in enumerate(labels)]
    connected = draw(st.integers(0, n))  # nodes >= connected are isolated
    pairs = draw(st.lists(st.tuples(st.integers(0, max(connected - 1, 0)), st.integers(0, max(connected - 1, 0))),
                          max_size=3 * n)) if connected else []
    pairs += [(u, u) for u in draw(st.lists(st.integers(0, n - 1), max_size=3))]  # self loops
    pairs += pairs[: draw(st.integers(0, 3))]  # duplicates
    edge_index = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    features = np.random.default_rng(n).normal(size=(n, 3)).astype(np.float32)
    return kind, pool, edge_index, features, labels, draw(st.sampled_from([2, 2, 3]))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_graphs())
def test_custom_graph_trains_or_explains(case) -> None:
    kind, pool, edge_index, features, labels, ways = case
    with tempfile.TemporaryDirectory() as runs, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            graph = cmlgraph.from_arrays(edge_index, features, labels, name="prop")
            _, summary = cmlgraph.fit(graph, ways=ways, shots=1, queries=1, steps=2, val_every=1, val_tasks=2,
                                      test_tasks=4, meta_batch=2, hidden=4, runs_dir=runs)
        except CmlgraphError as exc:
            msg = str(exc)
            assert not re.search(r"ways <= [01]\b", msg), msg
            assert "--" not in msg, msg  # Python API: no CLI flags
            named = re.search(r"split has (\d+) classes \((.*)\) but ways", msg)
            if named and kind != "int":
                assert any(repr(lab) in named.group(2) for lab in pool), msg
            event(f"raised {type(exc).__name__}")
            return
    event("trained")
    assert summary["num_tasks"] == 4 and math.isfinite(summary["mean"])
