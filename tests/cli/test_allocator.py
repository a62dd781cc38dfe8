"""The cmlgraph command's allocator setting (cmlgraph/allocator.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cmlgraph.allocator import tune_malloc


def test_system_keeps_glibcs_defaults_and_a_bad_value_is_named():
    assert tune_malloc({"CMLGRAPH_MALLOC": "system"}) is False
    with pytest.raises(ValueError, match="CMLGRAPH_MALLOC='fast'.*tuned.*system"):
        tune_malloc({"CMLGRAPH_MALLOC": "fast"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_applies_on_glibc_in_a_fresh_process():
    # a fresh interpreter, so this test process keeps its allocator as it was
    code = "from cmlgraph.allocator import tune_malloc; print(tune_malloc({}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    import platform

    assert out == str(platform.libc_ver()[0] == "glibc")


def test_the_command_names_a_bad_setting(monkeypatch, capsys):
    from cmlgraph.cli import main

    monkeypatch.setenv("CMLGRAPH_MALLOC", "fast")
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 2
    assert "CMLGRAPH_MALLOC='fast'" in capsys.readouterr().err
