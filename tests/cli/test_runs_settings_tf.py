"""``cmlgraph runs`` on a training-free baseline's folder: 0 steps, and only the settings it reads (session 26's
fresh-user trial: an sgc-proto row showed 0/500 steps and init=random normalize=False head_init=learned, defaults
of meta-learning it never uses, as if they told it apart from a MAML run)."""

from __future__ import annotations

import yaml

from cmlgraph.runs import describe_run, differing_settings


def _folder(tmp_path, name, algo, summary=None, **model):
    d = tmp_path / name
    d.mkdir()
    cfg = {"data": {"task": "graph", "graph": "cora", "ways": 2, "shots": 3, "features": "auto"},
           "model": {"init": "random", "normalize": False, **model},
           "algo": {"algo": algo, "cml": False, "head_init": "learned", "prop_steps": None},
           "train": {"steps": 500, "meta_lr": 0.001, "seed": 0, "test_tasks": 500}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if summary is not None:
        import json

        (d / "summary.json").write_text(json.dumps(summary))
    return d


def test_a_training_free_row_has_no_steps_and_only_its_own_settings(tmp_path):
    proto = describe_run(_folder(tmp_path, "p", "sgc-proto", {"training_free": True, "steps": 0, "mean": 0.9,
                                                                "features": "standard"}))
    unfinished = describe_run(_folder(tmp_path, "q", "label-prop"))  # no summary yet: known by its name
    maml = describe_run(_folder(tmp_path, "m", "maml", {"steps": 500, "mean": 0.9, "features": "standard"},
                                init="pca", normalize=True))
    assert proto["steps"] == 0 and proto["step"] == 0 and unfinished["steps"] == 0 and maml["steps"] == 500
    for r in (proto, unfinished):
        assert not any(k.startswith("model.") or k in ("algo.head_init", "train.meta_lr") for k in r["settings"])
    assert "train.seed" in proto["settings"] and "algo.prop_steps" in proto["settings"]
    other = describe_run(_folder(tmp_path, "m2", "maml", {"steps": 500, "mean": 0.9, "features": "standard"},
                                 init="random", normalize=True))
    differing_settings([proto, maml, other])
    assert "init" not in proto["differs"] and "normalize" not in proto["differs"]
    assert maml["differs"] == {"init": "pca"} and other["differs"] == {"init": "random"}  # MAML runs still differ
