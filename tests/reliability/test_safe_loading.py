"""Safe loading: checkpoints holding pickled objects are refused with a clear error; YAML tags cannot run code."""

from __future__ import annotations

import pytest
import torch
from conftest import forked, tiny_settings, write_config

from cmlgraph.config import from_yaml
from cmlgraph.errors import CmlgraphError, ConfigError
from cmlgraph.train.io import load_torch
from cmlgraph.train.reeval import reevaluate
from cmlgraph.train.trainer import resume

CALLED = []


class Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (CALLED.append, ("pwned",))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("safe")
    cfg = write_config(root, tiny_settings())
    assert forked(["train", "--config", str(cfg), "--runs-dir", str(root), "--name", "r", "--quiet"],
                  "finish:1") == -9  # a resumable folder with every file but summary.json
    return root / "r"


def test_load_torch_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "x": Payload()}, path)
    with pytest.raises(CmlgraphError, match=r"refused to load .*evil\.pt: it holds pickled Python objects"):
        load_torch(path)
    assert not CALLED


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x80\x04garbage"])
def test_load_torch_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CmlgraphError, match=r"bad\.pt"):
        load_torch(path)


def test_resume_refuses_a_poisoned_checkpoint(run_folder, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(run_folder, run)
    state = load_torch(run / "checkpoint.pt")
    state["extra"] = Payload()
    torch.save(state, run / "checkpoint.pt")
    with pytest.raises(CmlgraphError, match=r"refused to load .*checkpoint\.pt"):
        resume(run, progress=False)
    assert not CALLED and not (run / "summary.json").exists()


def test_eval_refuses_a_poisoned_model(run_folder, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(run_folder, run)
    torch.save(Payload(), run / "model.pt")
    with pytest.raises(CmlgraphError, match=r"refused to load .*model\.pt"):
        reevaluate(run)
    assert not CALLED


def test_yaml_python_tag_is_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match=r"evil\.yaml.*tag that is refused"):
        from_yaml(path)
    path.write_text("train:\n  steps: !!python/object:cmlgraph.config.Config {}\n")
    with pytest.raises(ConfigError, match="tag that is refused"):
        from_yaml(path)


def test_resume_with_poisoned_config_yaml(run_folder, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(run_folder, run)
    (run / "config.yaml").write_text("!!python/object/new:os.system [echo pwned]\n")
    with pytest.raises(ConfigError, match="tag that is refused"):
        resume(run, progress=False)
