"""``cmlgraph train`` flags that map onto config keys."""

from __future__ import annotations

import pytest

from cmlgraph.cli import main


def test_the_validation_task_count_is_a_flag(tmp_path):
    """``--val-tasks``: a whole-graph GAT's 100 default validation tasks took most of a large graph's run, and the
    CLI could not lower them (a fresh-user review)."""
    with pytest.raises(SystemExit) as info:
        main(["train", "--task", "sinusoid", "--steps", "2", "--val-every", "2", "--val-tasks", "3", "--test-tasks",
              "4", "--runs-dir", str(tmp_path), "--name", "v", "--quiet"])
    assert info.value.code in (0, None)
    assert "val_tasks: 3" in (tmp_path / "v" / "config.yaml").read_text()
