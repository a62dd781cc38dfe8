"""Property-based: any config file or custom graph either works or raises the project's own error with a message;
never an unhandled exception, never a half-made run folder."""

from __future__ import annotations

import itertools
import tempfile
import warnings
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cmlgraph.config import SECTION_CLASSES, Config, _section_types, apply_overrides, from_yaml
from cmlgraph.errors import CmlgraphError, NumericalError
from cmlgraph.train.trainer import prepare, train

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = {section: list(_section_types(section)) for section in SECTION_CLASSES}
WORDS = ["graph", "sinusoid", "omniglot", "digits", "synthetic", "maml", "anil", "boil", "maml++", "sharp-maml",
         "protonet", "gcn", "gin", "cpu", "cuda", "skip", "stop", "auto", "on", "off", "full", "khop", "head", "all",
         "noise", "cl", "none", "5/3/2", "1e-3", "-1", "", "../x", "a b"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.integers(), st.sampled_from(WORDS),
                    st.floats(allow_nan=True, allow_infinity=True), st.floats(0.0, 1.0), st.text(max_size=6))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                            max_size=3), max_leaves=4)
sections = st.sampled_from(list(KEYS)) | st.text(max_size=5) | st.integers(0, 3)
keys = st.sampled_from(sorted({k for ks in KEYS.values() for k in ks})) | st.text(max_size=6)
mappings = st.dictionaries(sections, st.none() | values | st.dictionaries(keys, values, max_size=4), max_size=4)
PAIRS = [(section, key) for section, ks in KEYS.items() for key in ks]
small = st.one_of(st.integers(-2, 6), st.sampled_from(WORDS), st.floats(0.0, 2.0), st.booleans(), st.none())


def _nest(items):
    out = {}
    for (section, key), value in items:
        out.setdefault(section, {})[key] = value
    return out


plausible = st.lists(st.tuples(st.sampled_from(PAIRS), small), max_size=3).map(_nest)  # known keys, odd values
documents = st.one_of(plausible, plausible, mappings, values, st.text(max_size=40).map(lambda t: ("raw", t)))

TINY = {"data": {"task": "sinusoid", "shots": 3, "queries": 3}, "model": {"hidden": 8},
        "train": {"steps": 2, "meta_batch": 2, "val_every": 1, "val_tasks": 2, "test_tasks": 3}}
_names = itertools.count()


def _cheap(cfg: Config) -> bool:
    d, m, a, t = cfg.data, cfg.model, cfg.algo, cfg.train
    return (d.task == "sinusoid" and t.steps <= 3 and t.meta_batch <= 4 and t.val_tasks <= 5 and t.test_tasks <= 10
            and m.hidden <= 64 and m.layers <= 4 and a.inner_steps <= 3 and (a.eval_inner_steps or 1) <= 3
            and d.shots + d.queries <= 64 and (a.co_depth or 0) <= 3)


def _run_or_clean_error(cfg: Config, runs: Path) -> None:
    """Train; a failure must be a CmlgraphError with a message, leaving no run folder (NaN: a resumable one)."""
    try:
        run, summary = train(cfg, progress=False)
    except NumericalError as exc:
        event("run stopped by NaN")
        assert str(exc)
        assert all((p / "config.yaml").is_file() for p in runs.iterdir())
        return
    except CmlgraphError as exc:
        event(f"run refused: {type(exc).__name__}")
        assert str(exc).strip()
        assert not runs.exists() or not any(runs.iterdir()), f"{exc} left {list(runs.iterdir())}"
        return
    for f in ("config.yaml", "metrics.jsonl", "summary.json", "model.pt", "checkpoint.pt", "test_episodes.pt"):
        assert (run / f).is_file(), f
    assert summary["num_tasks"] == cfg.train.test_tasks
    event("run finished")


@SETTINGS
@given(doc=documents)
def test_any_config_file_works_or_raises_own_error(doc):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        if isinstance(doc, tuple):
            path.write_text(doc[1])
        else:
            path.write_text(yaml.safe_dump(doc, allow_unicode=True))
        base = apply_overrides(Config(), TINY, "tiny")
        try:
            cfg = prepare(from_yaml(path, base=base))
        except CmlgraphError as exc:
            event(f"config refused: {type(exc).__name__}")
            assert str(exc).strip()
            return
        runs = Path(tmp) / "runs"
        cfg.run.runs_dir = str(runs)  # whatever the file said, never write outside the temp folder
        if _cheap(cfg):
            _run_or_clean_error(cfg, runs)
        else:
            event("config accepted, too big to run here")


MUTATIONS = ["nan feature", "inf feature", "1-D features", "text features", "label list too short",
             "labels as strings", "unlabelled nodes", "one class only", "edge id out of range", "negative edge id",
             "edges as E x 2", "fractional edge ids", "no edges", "self loops and duplicates", "num_nodes too big"]


@st.composite
def graphs(draw):
    """A valid small graph with zero to two defects drawn from MUTATIONS."""
    classes = draw(st.sampled_from([6, 7, 8, 2, 4]))
    n = draw(st.integers(5 * classes, 7 * classes))
    f = draw(st.integers(1, 3))
    feats = np.array(draw(st.lists(st.floats(-3, 3), min_size=n * f, max_size=n * f)), dtype=np.float64).reshape(n, f)
    labels: list = [j % classes for j in range(n)]
    for j in draw(st.lists(st.integers(0, n - 1), max_size=4)):  # a few relabelled nodes: uneven classes
        labels[j] = draw(st.integers(0, classes - 1))
    edges = np.array(draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1,
                                   max_size=3 * n)), dtype=np.int64).T
    extra: dict = {}
    defects = draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=2, unique=True)) if draw(st.booleans()) \
        else []
    for m in sorted(defects, key=MUTATIONS.index):  # in list order, so each defect applies to the previous form
        i = draw(st.integers(0, n - 1))
        if m in ("nan feature", "inf feature") and isinstance(feats, np.ndarray):
            feats[(i, 0) if feats.ndim == 2 else i] = np.nan if m == "nan feature" else np.inf
        elif m == "1-D features":
            feats = feats[:, 0]
        elif m == "text features":
            feats = [["x"] * f for _ in range(n)]
        elif m == "label list too short":
            labels = labels[:-1]
        elif m == "labels as strings":
            labels = [f"class-{y}" for y in labels]
        elif m == "unlabelled nodes":
            labels = [None if j % 2 else y for j, y in enumerate(labels)]
        elif m == "one class only":
            labels = [0] * len(labels)
        elif m == "edge id out of range":
            edges = np.concatenate([edges, [[i], [n + 3]]], axis=1)
        elif m == "negative edge id":
            edges = np.concatenate([edges, [[-1], [i]]], axis=1)
        elif m == "edges as E x 2":
            edges = edges.T
        elif m == "fractional edge ids":
            edges = edges.astype(np.float64) + 0.5
        elif m == "no edges":
            edges = np.zeros((2, 0), dtype=np.int64)
        elif m == "self loops and duplicates" and edges.shape[0] == 2:
            edges = np.concatenate([edges, edges, [[i], [i]]], axis=1)
        elif m == "num_nodes too big":
            extra["num_nodes"] = n + 1
    hint = draw(st.booleans())
    setting = dict(ways=draw(st.sampled_from([2, 2, 2, 3, 1])), shots=draw(st.integers(1, 2)),
                   queries=draw(st.integers(1, 2)))
    split = draw(st.sampled_from([None, "2/2/2", "2/2/2", "3/2/2", "2/0/1", "9/9/9"]))
    gnn = draw(st.sampled_from(["gcn", "sage", "gin", "gat", "sgc"]))
    return edges, feats, labels, extra, hint, setting, split, gnn


@SETTINGS
@given(spec=graphs())
def test_any_custom_graph_works_or_raises_own_error(spec):
    from cmlgraph.domains.graph import register_graph
    from cmlgraph.graphs.custom import from_arrays

    edges, feats, labels, extra, hint, setting, split, gnn = spec
    name = f"prop-{next(_names)}"
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            graph = from_arrays(edges, feats, labels, name=name, split=split, **extra,
                                **(setting if hint else {}))
        except CmlgraphError as exc:
            event(f"graph refused: {type(exc).__name__}")
            assert str(exc).strip()
            return
        register_graph(graph)
        cfg = apply_overrides(Config(), {
            "data": {"task": "graph", "graph": name, **setting}, "model": {"gnn": gnn, "hidden": 4, "gat_heads": 1},
            "train": {"steps": 1, "meta_batch": 1, "val_tasks": 1, "test_tasks": 2, "val_every": 1},
            "run": {"runs_dir": str(Path(tmp) / "runs")}}, "test")
        _run_or_clean_error(cfg, Path(tmp) / "runs")
