"""README and docs stay true: each `cmlgraph ...` code line is a valid command, each relative link resolves.

Source: issue 19, Build item 10 (the README as a front page; moved text lives in docs/*.md).
"""

import re
import shlex
from pathlib import Path

import pytest
import typer

from cmlgraph.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _cli_lines(path: Path) -> list[str]:
    """Every line of a fenced code block that runs `cmlgraph`, without its trailing `# comment`."""
    lines = []
    for block in FENCE.findall(path.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            for part in re.split(r"&&|\|", line):
                part = part.strip()
                if part.startswith("cmlgraph ") or part == "cmlgraph":
                    lines.append(part.split("  #")[0].split(" # ")[0].strip())
    return lines


def _check(line: str) -> None:
    """Resolve the (sub)command of `line` and check each `--flag` it passes is one that command accepts."""
    words = shlex.split(line.replace("<", "").replace(">", ""))[1:]
    top = cmd = typer.main.get_command(app)  # a click command (typer vendors click as typer._click)
    while hasattr(cmd, "commands") and words and not words[0].startswith("-"):
        sub = cmd.commands.get(words[0])
        assert sub is not None, f"{line!r}: no command {words[0]!r}"
        cmd, words = sub, words[1:]
    accepted = {"--help"}
    for p in cmd.params:
        accepted.update(p.opts)
        accepted.update(p.secondary_opts)
    if cmd is top:
        accepted.add("--version")
    for w in words:
        if w.startswith("--"):
            flag = w.split("=")[0]
            assert flag in accepted, f"{line!r}: {flag} is not a flag of this command ({sorted(accepted)})"


README_LINES = [(p.name, line) for p in DOCS for line in _cli_lines(p)]


def test_readme_has_cli_lines() -> None:
    assert len(_cli_lines(ROOT / "README.md")) >= 5


@pytest.mark.parametrize(("doc", "line"), README_LINES, ids=[f"{d}:{i}" for i, (d, _) in enumerate(README_LINES)])
def test_cli_line_is_valid(doc: str, line: str) -> None:
    _check(line)


def test_check_rejects_unknown_flag_and_command() -> None:
    with pytest.raises(AssertionError):
        _check("cmlgraph train --no-such-flag 3")
    with pytest.raises(AssertionError):
        _check("cmlgraph no-such-command")


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_relative_links_resolve(path: Path) -> None:
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = target.split("#")[0]
        assert (path.parent / file).exists(), f"{path.name}: link {target!r} points to no file"
